"""Training checkpoints: policy in HF layout, optimizer, scheduler, sampler, RNG and step, written
atomically (everything goes to a temporary directory that is renamed into place), last k kept.

Each checkpoint ends with ``manifest.json`` (written last, before the rename): the size and sha256 of
every other file and whether every parameter was finite. A checkpoint is trusted only once its files
match it (``verify_checkpoint``); ``resume_from_checkpoint=latest`` takes the newest checkpoint that
verifies, naming the ones it passes over. Rotation never deletes the newest finite checkpoint.

The output directory belongs to one run at a time: ``lock_output_dir`` takes an exclusive lock on
``output_dir/.paddlemix_r1.lock`` (released by the kernel when the holder dies, so a killed run's lock is
taken over) and records the holder's pid and host, which the refusal message of a second run names.
With the lock held, ``clean_stale_temp`` removes the temporary directories a killed run left.

A LoRA policy (models/lora.py) writes ``model/`` with the adapters merged (what eval scripts and
transformers load) and ``adapter/`` in HF peft's layout; a resume loads the base checkpoint and then
``adapter/`` (the base weights never change in a LoRA run).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from typing import Any

import paddle

from paddlemix_r1.models import lora

_CKPT = re.compile(r"^checkpoint-(\d+)$")
ADAPTER_DIR = "adapter"
MANIFEST = "manifest.json"
LOCK_FILE = ".paddlemix_r1.lock"
TRAINER_STATE = "trainer_state.json"
# Temporary directories this package creates in output_dir: checkpoints being written (save_checkpoint),
# sharded runs' optimizer shards (optimizer_shard_dir), and models.checkpoint.save_pretrained's siblings
# (the tiny model is saved into output_dir/tiny-model).
_STALE_TEMP = re.compile(r"^(\.tmp-checkpoint-\d+-.+|\.tmp-optimizer-shards-\d+|\.tmp-save-.+|.+\.old-\.tmp-save-.+)$")
_TRAINER_STATE_KEYS = ("step", "sampler", "nonfinite_total", "nonfinite_run")
_HASH_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted (fails its manifest, or a file in it is unreadable); names the file."""


class OutputDirLockedError(RuntimeError):
    """Another live run holds the output directory."""


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CKPT.match(name))
             and os.path.exists(os.path.join(output_dir, name, TRAINER_STATE))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def resolve(resume: str | None, output_dir: str) -> str | None:
    """The checkpoint to resume from: None; "latest", the newest checkpoint in ``output_dir`` that verifies
    (a warning on stderr names each newer one passed over and why; None if there is no checkpoint at all,
    CheckpointError if none verifies); or the given directory, which must verify (CheckpointError otherwise)."""
    if resume is None:
        return None
    if resume == "latest":
        skipped = 0
        for path in reversed(list_checkpoints(output_dir)):
            problem = verify_checkpoint(path)
            if problem is None:
                if skipped:
                    sys.stderr.write(f"resume_from_checkpoint=latest: resuming from {path}\n")
                return path
            skipped += 1
            sys.stderr.write(f"resume_from_checkpoint=latest: skipping {path}: {problem}\n")
        if skipped:
            raise CheckpointError(f"resume_from_checkpoint=latest: none of the {skipped} checkpoint(s) in {output_dir} "
                                  "is intact (see above); move them away to start anew")
        return None
    if not os.path.exists(os.path.join(resume, TRAINER_STATE)):
        raise FileNotFoundError(f"resume_from_checkpoint={resume!r}: no {TRAINER_STATE} there")
    problem = verify_checkpoint(resume)
    if problem is not None:
        raise CheckpointError(f"resume_from_checkpoint={resume!r}: {problem}")
    return resume


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files_under(root: str) -> list[str]:
    """Every file under ``root``, relative, '/'-separated, sorted."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            out.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(out)


def write_manifest(path: str, step: int, finite: bool) -> None:
    """``path/manifest.json``: size and sha256 of every other file of the checkpoint (call it last)."""
    files = {rel: {"size": os.path.getsize(os.path.join(path, rel)), "sha256": _sha256(os.path.join(path, rel))}
             for rel in _files_under(path) if rel != MANIFEST}
    with open(os.path.join(path, MANIFEST), "w", encoding="utf-8") as f:
        json.dump({"step": step, "finite": finite, "files": files}, f, indent=1)


def read_manifest(path: str) -> dict[str, Any] | None:
    """The checkpoint's manifest, or None for a checkpoint written before manifests existed."""
    file = os.path.join(path, MANIFEST)
    if not os.path.exists(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: unreadable ({e})") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{file}: not a checkpoint manifest (no 'files' mapping)")
    return manifest


def verify_checkpoint(path: str) -> str | None:
    """None if every file listed in the checkpoint's manifest is there with its size and sha256, and its
    trainer state reads; otherwise what is wrong, naming the file. A checkpoint without a manifest (written
    before manifests existed) is checked only by reading its trainer state."""
    try:
        manifest = read_manifest(path)
        if manifest is not None:
            for rel, want in manifest["files"].items():
                file = os.path.join(path, rel)
                if not os.path.isfile(file):
                    return f"{rel} is missing (listed in {MANIFEST})"
                size = os.path.getsize(file)
                if size != want.get("size"):
                    return f"{rel} has size {size}, {MANIFEST} says {want.get('size')} (truncated or replaced)"
                if _sha256(file) != want.get("sha256"):
                    return f"{rel}: its sha256 differs from {MANIFEST} (the file is damaged)"
        read_trainer_state(path)
    except CheckpointError as e:
        return str(e)
    return None


def read_trainer_state(path: str) -> dict[str, Any]:
    """``trainer_state.json`` of checkpoint ``path``; CheckpointError naming the file if it is not valid JSON
    or lacks a key the trainer needs."""
    file = os.path.join(path, TRAINER_STATE)
    try:
        with open(file, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError as e:
        raise CheckpointError(f"{file}: missing") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e}); the checkpoint is damaged") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(state).__name__}")
    missing = [k for k in _TRAINER_STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{file}: missing key(s) {', '.join(repr(k) for k in missing)}; the checkpoint is "
                              "damaged or was not written by this trainer")
    return state


def checkpoint_is_finite(path: str) -> bool:
    """What the manifest says about the parameters (checkpoints without a manifest count as finite)."""
    manifest = read_manifest(path)
    return True if manifest is None else bool(manifest.get("finite", True))


def _dir_mode() -> int:
    """The mode os.makedirs gives a new directory under the current umask (tempfile.mkdtemp uses 0700)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask


def _open_dirs(root: str) -> None:
    """Give ``root`` and the directories below it the umask's mode (mkdtemp made some of them 0700)."""
    mode = _dir_mode()
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, mode)


_held_locks: dict[str, list[int]] = {}  # realpath of output_dir -> [fd, holders in this process]


def lock_output_dir(output_dir: str) -> str:
    """Take the run's exclusive lock on ``output_dir`` (created if missing); returns the key that
    ``unlock_output_dir`` takes. The kernel releases the lock when the process ends, however it ends, so the
    lock of a killed run is simply taken over. Within one process the lock is shared (counted): one run at a
    time per directory is the caller's business there.

    OutputDirLockedError, naming the holder's pid and host, if another live process holds it."""
    os.makedirs(output_dir, exist_ok=True)
    key = os.path.realpath(output_dir)
    if key in _held_locks:
        _held_locks[key][1] += 1
        return key
    path = os.path.join(output_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _read_holder(fd)
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise OSError(e.errno, f"cannot lock {path} ({e.strerror}); the file system of output_dir must "
                                   "support flock") from e
        raise OutputDirLockedError(
            f"output_dir {output_dir} is in use by another run ({holder}; lock file {path}): give this run "
            "another output_dir, or wait for that one to end") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
    _held_locks[key] = [fd, 1]
    return key


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError:
        return "holder unknown: the lock file does not say"
    return f"pid {holder.get('pid')} on host {holder.get('host')}"


def unlock_output_dir(key: str) -> None:
    """Release one hold of ``lock_output_dir``'s lock (the last one in this process unlocks the directory)."""
    entry = _held_locks[key]
    entry[1] -= 1
    if entry[1] == 0:
        del _held_locks[key]
        fcntl.flock(entry[0], fcntl.LOCK_UN)
        os.close(entry[0])


def clean_stale_temp(output_dir: str) -> list[str]:
    """Remove the temporary directories a killed run of this package left in ``output_dir`` (only names this
    package creates; call it with the output_dir lock held, so no live run is writing them). Returns them."""
    if not os.path.isdir(output_dir):
        return []
    removed = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if _STALE_TEMP.match(name) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
            removed.append(path)
    return removed


def _optimizer_state(optimizer: paddle.optimizer.Optimizer, names: dict[str, str]) -> dict[str, Any]:
    """Optimizer state keyed by structured parameter names (Paddle keys it by generated names,
    which depend on construction order in the process)."""
    state = optimizer.state_dict()
    out = {}
    for key, value in state.items():
        for pname, structured in names.items():
            if key.startswith(pname + "_"):
                key = structured + key[len(pname):]
                break
        out[key] = value
    return out


def _rename_back(state: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    back = {v: k for k, v in names.items()}
    out = {}
    for key, value in state.items():
        for structured, pname in sorted(back.items(), key=lambda kv: -len(kv[0])):
            if key.startswith(structured + "_"):
                key = pname + key[len(structured):]
                break
        out[key] = value
    return out


def optimizer_shard_dir(output_dir: str, step: int) -> str:
    """Where the ranks of a sharded run put their optimizer shards before rank 0 writes checkpoint-{step}."""
    return os.path.join(output_dir, f".tmp-optimizer-shards-{step}")


def save_optimizer_shard(shard_dir: str, rank: int, model, optimizer) -> None:
    """This rank's part of a sharded optimizer state, keyed like ``optimizer.pdopt``."""
    os.makedirs(shard_dir, exist_ok=True)
    names = {p.name: n for n, p in model.named_parameters()}
    paddle.save(_optimizer_state(optimizer, names), os.path.join(shard_dir, f"rank{rank}.pdopt"))


def save_checkpoint(output_dir: str, step: int, model, optimizer, scheduler, trainer_state: dict[str, Any],
                    processor, keep: int, optimizer_shards: str | None = None,
                    base_model_name_or_path: str | None = None) -> str:
    """Write checkpoint-{step} atomically and drop all but the newest ``keep``.

    ``processor`` (a ``Processor`` or None): its files go beside the weights, so ``model/`` is a
    complete checkpoint directory (eval scripts and transformers load it).

    ``optimizer_shards``: a directory of per-rank optimizer files (sharded runs), moved into the
    checkpoint as ``optimizer_shards/`` instead of writing ``optimizer.pdopt``.

    A model with LoRA adapters also gets ``adapter/`` (PEFT layout; ``base_model_name_or_path`` is recorded
    in its adapter_config.json); ``model/`` then holds the merged weights.
    """
    final = os.path.join(output_dir, f"checkpoint-{step}")
    os.makedirs(output_dir, exist_ok=True)
    finite = parameters_finite(model)
    tmp = tempfile.mkdtemp(prefix=f".tmp-checkpoint-{step}-", dir=output_dir)
    old = None
    try:
        model.save_pretrained(os.path.join(tmp, "model"))
        if processor is not None:
            processor.save_pretrained(os.path.join(tmp, "model"))
        if lora.lora_layers(model):
            lora.save_adapter(model, os.path.join(tmp, ADAPTER_DIR), base_model_name_or_path)
        names = {p.name: n for n, p in model.named_parameters()}
        if optimizer_shards is None:
            paddle.save(_optimizer_state(optimizer, names), os.path.join(tmp, "optimizer.pdopt"))
        else:
            shutil.move(optimizer_shards, os.path.join(tmp, "optimizer_shards"))
        paddle.save(scheduler.state_dict(), os.path.join(tmp, "scheduler.pdopt"))
        # Sampling seeds derive from (seed, step); Paddle's own generator is saved for anything else.
        paddle.save({"paddle": paddle.get_rng_state()}, os.path.join(tmp, "rng.pdopt"))
        with open(os.path.join(tmp, TRAINER_STATE), "w", encoding="utf-8") as f:
            json.dump({**trainer_state, "step": step}, f, indent=2)
        _open_dirs(tmp)
        write_manifest(tmp, step, finite)  # last: a checkpoint is trusted only if its manifest is there
        if os.path.exists(final):
            # Replaced by a rename, not deleted first, so that a kill in between never leaves no checkpoint-{step};
            # the ".tmp-checkpoint-" name makes a leftover one stale temp to the next run.
            old = tempfile.mkdtemp(prefix=f".tmp-checkpoint-{step}-replaced-", dir=output_dir)
            os.rename(final, os.path.join(old, "checkpoint"))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(final):
            os.rename(os.path.join(old, "checkpoint"), final)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    _rotate(output_dir, keep)
    return final


def _rotate(output_dir: str, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (0: keep all), but never the newest finite one: a run whose
    parameters went non-finite must leave something to resume from."""
    if keep <= 0:
        return
    ckpts = list_checkpoints(output_dir)
    doomed = ckpts[:-keep]
    if doomed and not any(checkpoint_is_finite(p) for p in ckpts[-keep:]):
        finite = [p for p in doomed if checkpoint_is_finite(p)]
        if finite:
            doomed.remove(finite[-1])
    for path in doomed:
        shutil.rmtree(path)


def parameters_finite(model) -> bool:
    """Whether every parameter of ``model`` is finite (one reduction per parameter, on its device)."""
    for p in model.parameters():
        if not bool(paddle.isfinite(p).all()):
            return False
    return True


def load_weights(path: str, model) -> None:
    """The policy's weights of checkpoint ``path`` (its ``model/`` directory) into ``model``.

    Call it before the model is wrapped for sharding: under stage 3 a value set on a parameter after
    wrapping does not reach the partition the optimizer and the forward gathers use (Paddle's
    group_sharded_stage3.py keeps it in ``param.fw_storage``; ``_param_storage`` clears the parameter).
    """
    from paddlemix_r1.models.checkpoint import load_state

    adapter = os.path.join(path, ADAPTER_DIR)
    if lora.lora_layers(model):
        if not os.path.isdir(adapter):
            raise FileNotFoundError(f"{path}: no {ADAPTER_DIR}/; it was not saved by a LoRA run (use_peft=false)")
        lora.load_adapter(model, adapter)  # the base weights are the run's unchanged starting checkpoint
    elif os.path.isdir(adapter):
        raise ValueError(f"{path} was saved by a LoRA run: resume it with use_peft=true (its model/ holds merged "
                         "weights; start a new full fine-tuning run from that directory instead)")
    else:
        load_state(model, os.path.join(path, "model"))


def load_training_state(path: str, model, optimizer, scheduler, optimizer_shard: int | None = None) -> dict[str, Any]:
    """Restore optimizer, scheduler and Paddle's RNG; return the trainer state dict (weights: ``load_weights``).

    ``optimizer_shard``: the rank whose optimizer shard to load (sharded runs, after wrapping); None
    loads the whole optimizer state of an unsharded run. ``model`` only supplies parameter names.
    """
    names = {p.name: n for n, p in model.named_parameters()}
    state = read_trainer_state(path)
    sharded = os.path.isdir(os.path.join(path, "optimizer_shards"))
    if optimizer_shard is None:
        opt_file = os.path.join(path, "optimizer.pdopt")
        hint = ("it was saved by a sharded run: resume with the same sharding_stage and world size" if sharded else
                "the checkpoint is incomplete or damaged: resume from another checkpoint")
    else:
        opt_file = os.path.join(path, "optimizer_shards", f"rank{optimizer_shard}.pdopt")
        hint = ("it was saved with fewer ranks: resume with the same layout" if sharded else
                "it was saved by an unsharded run: resume with the same layout")
    if not os.path.exists(opt_file):
        raise FileNotFoundError(f"{path}: no {os.path.relpath(opt_file, path)}; {hint}")
    optimizer.set_state_dict(_rename_back(_load(opt_file), names))
    scheduler.set_state_dict(_load(os.path.join(path, "scheduler.pdopt")))
    paddle.set_rng_state(_load(os.path.join(path, "rng.pdopt"))["paddle"])
    return state


def _load(file: str) -> Any:
    """``paddle.load`` with the file named in the error (a missing or truncated file)."""
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file}: missing; the checkpoint is incomplete or damaged")
    try:
        return paddle.load(file)
    except (OSError, ValueError, RuntimeError, EOFError, KeyError) as e:
        raise CheckpointError(f"{file}: unreadable ({type(e).__name__}: {e}); the checkpoint is damaged") from e
