"""Training checkpoints: policy in HF layout, optimizer, scheduler, sampler, RNG and step, written
atomically (everything goes to a temporary directory that is renamed into place), last k kept.

A LoRA policy (models/lora.py) writes ``model/`` with the adapters merged (what eval scripts and
transformers load) and ``adapter/`` in HF peft's layout; a resume loads the base checkpoint and then
``adapter/`` (the base weights never change in a LoRA run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any

import paddle

from paddlemix_r1.models import lora

_CKPT = re.compile(r"^checkpoint-(\d+)$")
ADAPTER_DIR = "adapter"
def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CKPT.match(name))
             and os.path.exists(os.path.join(output_dir, name, "trainer_state.json"))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def resolve(resume: str | None, output_dir: str) -> str | None:
    if resume is None:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1] if ckpts else None
    if not os.path.exists(os.path.join(resume, "trainer_state.json")):
        raise FileNotFoundError(f"resume_from_checkpoint={resume!r}: no trainer_state.json there")
    return resume


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
    tmp = tempfile.mkdtemp(prefix=f".tmp-checkpoint-{step}-", dir=output_dir)
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
        with open(os.path.join(tmp, "trainer_state.json"), "w", encoding="utf-8") as f:
            json.dump({**trainer_state, "step": step}, f, indent=2)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


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
    if optimizer_shard is None:
        opt_file = os.path.join(path, "optimizer.pdopt")
        hint = "it was saved by a sharded run: resume with the same sharding_stage and world size"
    else:
        opt_file = os.path.join(path, "optimizer_shards", f"rank{optimizer_shard}.pdopt")
        hint = "it was saved by an unsharded run or with fewer ranks: resume with the same layout"
    if not os.path.exists(opt_file):
        raise FileNotFoundError(f"{path}: no {os.path.relpath(opt_file, path)}; {hint}")
    optimizer.set_state_dict(_rename_back(paddle.load(opt_file), names))
    scheduler.set_state_dict(paddle.load(os.path.join(path, "scheduler.pdopt")))
    paddle.set_rng_state(paddle.load(os.path.join(path, "rng.pdopt"))["paddle"])
    with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
        return json.load(f)
