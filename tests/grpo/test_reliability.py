"""What a run does when things go wrong: signals, a second run in the same output_dir, stale temporary
directories, damaged checkpoints, non-finite numbers, resuming a finished run, file modes, and a
config checked as a whole before any model loads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from paddlemix_r1.grpo import checkpoint as ckpt
from paddlemix_r1.grpo import trainer as trainer_mod
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.trainer import GRPOTrainer, NonFiniteError
from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained
from paddlemix_r1.rewards import list_rewards, register_reward

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("training_worker.py")


def text_length(completions, **_):
    return [len(text) / 100 for text in completions]


if "test_text_length" not in list_rewards():
    register_reward("test_text_length", text_length)


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return tiny_ckpt  # tests/conftest.py: one tiny Qwen2.5-VL (seed 1) per session


def _fields(tiny, out, **kw) -> dict:
    base = dict(model_name_or_path=tiny, output_dir=str(out), prompts_per_step=1, num_generations=2,
                max_completion_length=4, num_train_samples=4, learning_rate=1e-3, beta=0.0,
                reward_funcs=["test_text_length"], visualdl=False, progress_bar=False, log_completions_steps=0,
                max_steps=2, seed=3)
    base.update(kw)
    return base


def _cfg(tiny, out, **kw) -> GRPOConfig:
    return GRPOConfig(**_fields(tiny, out, **kw))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    return env


def _temp_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob(".tmp-*"))


# ----- 1. signals ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_run_cleanly_with_a_message(tiny, tmp_path, signum):
    """Our handler only sets a flag (Paddle's C handler, which calls malloc, never runs): the step in
    progress finishes, the process exits 128 + signum with a message, and no temporary directory is left."""
    out = tmp_path / "out"
    spec = {"cfg": _fields(tiny, out, max_steps=6, save_steps=1), "signal_at_step": [int(signum), 2]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "spec.json")], env=_env(), capture_output=True,
                          text=True, timeout=120, check=False)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert f"stopped by {name} after step 3 of 6" in proc.stderr, proc.stderr[-3000:]
    assert "resume_from_checkpoint=latest" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _temp_dirs(out) == []
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]


def test_our_signal_handler_is_in_place_during_a_run(tiny, tmp_path):
    from paddlemix_r1.distributed import signals

    tr = GRPOTrainer(_cfg(tiny, tmp_path, max_steps=1))
    seen = {}
    real = tr.train_step

    def record(micro):
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        return real(micro)

    tr.train_step = record
    tr.train()
    assert seen["handler"] is signals.handle_signal
    assert not signals.stop_requested()


# ----- 4, 5, 12. the config as a whole ------------------------------------------------------------------


@pytest.mark.parametrize(("override", "pattern"), [
    ("num_generations=eight", r"num_generations.*an integer.*'eight'"),
    ("max_steps=2.5", r"max_steps.*an integer.*2\.5"),
    ("freeze_vision=maybe", r"freeze_vision.*true or false.*'maybe'"),
    ("dtype=float64", r"dtype='float64'.*float32.*bfloat16"),
    ("reward_funcs=[counting, nope]", r"reward_funcs.*'nope'.*registered rewards"),
    ("reward_funcs=counting", r"reward_funcs.*a list"),
    ("loss_type=ppo", r"loss_type.*'ppo'.*grpo"),
    ("scale_rewards=std", r"scale_rewards.*'std'.*group"),
    ("lr_scheduler_type=step", r"lr_scheduler_type.*'step'.*cosine"),
    ("temperature=0", r"temperature.*> 0"),
    ("max_completion_length=0", r"max_completion_length.*>= 1"),
    ("learning_rate=-1", r"learning_rate.*> 0"),
    ("learning_rate=nan", r"learning_rate.*finite"),
    ("learning_rate=inf", r"learning_rate.*finite"),
    ("num_generations=1", r"num_generations.*>= 2[\s\S]*advantage[\s\S]*nothing"),
    ("check_images=maybe", r"check_images.*'maybe'.*decode"),
    ("tiny_family=llama", r"tiny_family.*'llama'"),
    ("top_p=1.5", r"top_p"),
])
def test_config_is_validated_as_a_whole(override, pattern):
    with pytest.raises(ValueError, match=pattern):
        GRPOConfig.load(None, [override])


def test_config_types_convert_strings_and_name_the_field():
    cfg = GRPOConfig.load(None, ["freeze_vision='false'", "visualdl='true'", "max_steps=3.0", "skip_bad=true",
                                 "check_images=decode"])
    assert (cfg.freeze_vision, cfg.visualdl, cfg.max_steps, cfg.skip_bad, cfg.check_images) == (
        False, True, 3, True, "decode")
    assert type(cfg.max_steps) is int
    assert GRPOConfig(freeze_vision="false").freeze_vision is False
    with pytest.raises(ValueError, match="num_generations"):
        GRPOConfig(num_generations="eight")
    with pytest.raises(ValueError, match="output_dir.*a string"):
        GRPOConfig(output_dir=3)


def test_missing_files_are_found_before_any_model_loads(tmp_path, monkeypatch):
    """Paths are checked when the run starts (a config may describe a run on another machine), first thing."""

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the config's files were checked")

    monkeypatch.setattr(trainer_mod, "from_pretrained", no_model)
    monkeypatch.setattr(trainer_mod, "build_tiny_checkpoint", no_model)
    cfg = GRPOConfig(dataset="files", data_files=[str(tmp_path / "missing.jsonl")], output_dir=str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match=r"data_files.*missing\.jsonl"):
        GRPOTrainer(cfg)
    with pytest.raises(FileNotFoundError, match="model_name_or_path.*no-model"):
        GRPOTrainer(GRPOConfig(model_name_or_path=str(tmp_path / "no-model"), output_dir=str(tmp_path / "o")))


def test_config_data_options_reach_the_readers(tmp_path, monkeypatch):
    from paddlemix_r1.data import readers

    data = tmp_path / "d.jsonl"
    data.write_text("")
    seen = {}

    def fake_read(files, roots, task, skip_bad=False, **kw):
        seen.update(kw, skip_bad=skip_bad, files=files)
        return readers.TrainingRows([])

    monkeypatch.setattr(readers, "read_training_files", fake_read)
    cfg = GRPOConfig(dataset="files", data_files=[str(data)], skip_bad=True, check_images="decode")
    trainer_mod.load_dataset(cfg)
    assert (seen["skip_bad"], seen["check_images"], seen["files"]) == (True, "decode", [str(data)])


# ----- 5. non-finite numbers ----------------------------------------------------------------------------


def test_nonfinite_parameters_after_a_step_stop_the_run_without_a_checkpoint(tiny, tmp_path):
    tr = GRPOTrainer(_cfg(tiny, tmp_path, max_steps=4, save_steps=1))
    real = tr.optimizer.step

    def poisoning_step():
        real()
        if tr.step == 2:
            p = tr.params[0]
            p.set_value(p * float("nan"))

    tr.optimizer.step = poisoning_step
    with pytest.raises(NonFiniteError, match=r"step 3.*not finite[\s\S]*checkpoint-2"):
        tr.train()
    assert tr.nonfinite_total == 1
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_rotation_never_removes_the_last_finite_checkpoint(tiny, tmp_path):
    tr = GRPOTrainer(_cfg(tiny, tmp_path, save_total_limit=1))
    tr.step = 1
    tr.save()
    for p in tr.model.parameters():
        p.set_value(p * float("nan"))
    for step in (2, 3):
        tr.step = step
        tr.save()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-3"]
    manifest = json.loads((tmp_path / "checkpoint-3" / ckpt.MANIFEST).read_text())
    assert manifest["finite"] is False


# ----- 7, 8. the output directory: lock and stale temporary directories --------------------------------

_HOLD = """
import fcntl, json, os, socket, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_in_a_held_output_dir_is_refused_and_leaves_it_alone(tiny, tmp_path):
    tmp_path.joinpath(".tmp-checkpoint-4-abc").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLD), str(tmp_path / ckpt.LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ckpt.OutputDirLockedError, match=rf"pid {holder.pid} on host {socket.gethostname()}"):
            GRPOTrainer(_cfg(tiny, tmp_path))
        assert _temp_dirs(tmp_path) == [".tmp-checkpoint-4-abc"]  # held by another run: not ours to clean
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_stale_temp_dirs_cleaned(tiny, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    (tmp_path / ckpt.LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    for name in (".tmp-checkpoint-4-abc", ".tmp-optimizer-shards-4", ".tmp-save-xyz", ".tmp-user-notes"):
        tmp_path.joinpath(name).mkdir()
    tr = GRPOTrainer(_cfg(tiny, tmp_path, max_steps=1))
    assert _temp_dirs(tmp_path) == [".tmp-user-notes"]
    held = json.loads((tmp_path / ckpt.LOCK_FILE).read_text())
    assert held["pid"] == os.getpid()
    tr.train()


# ----- 9. resuming a finished run; completions.jsonl ----------------------------------------------------


def test_resuming_a_finished_run_keeps_its_final_checkpoint(tiny, tmp_path):
    GRPOTrainer(_cfg(tiny, tmp_path, max_steps=2)).train()  # save_steps=0: one checkpoint, at the end
    final = tmp_path / "checkpoint-2"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in final.rglob("*") if p.is_file()}
    again = GRPOTrainer(_cfg(tiny, tmp_path, max_steps=2, resume_from_checkpoint="latest"))
    assert again.step == 2
    again.train()
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in final.rglob("*") if p.is_file()} == before


def test_completions_log_is_cut_back_to_the_resumed_step(tiny, tmp_path):
    GRPOTrainer(_cfg(tiny, tmp_path, max_steps=3, save_steps=2, log_completions_steps=1)).train()
    shutil.rmtree(tmp_path / "checkpoint-3")  # as if killed after step 3 was logged but before it was saved
    log = tmp_path / "completions.jsonl"
    with log.open("a") as f:
        f.write('{"step": 3, "compl')  # and mid-write
    resumed = GRPOTrainer(_cfg(tiny, tmp_path, max_steps=3, save_steps=2, log_completions_steps=1,
                               resume_from_checkpoint="latest"))
    assert resumed.step == 2
    assert {json.loads(line)["step"] for line in log.read_text().splitlines()} == {1, 2}
    resumed.train()
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(3) == steps.count(1) == 2  # prompts_per_step x G per step


# ----- 10. damaged checkpoints --------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_weights_name_the_file(tiny, tmp_path):
    copy = Path(shutil.copytree(tiny, tmp_path / "m"))
    _truncate(copy / "model.safetensors")
    with pytest.raises(ValueError, match=rf"{copy / 'model.safetensors'}.*truncated or corrupt"):
        from_pretrained(str(copy))


def test_latest_falls_back_to_the_newest_intact_checkpoint(tiny, tmp_path, capsys):
    GRPOTrainer(_cfg(tiny, tmp_path, max_steps=2, save_steps=1, save_total_limit=3)).train()
    manifest = json.loads((tmp_path / "checkpoint-2" / ckpt.MANIFEST).read_text())
    entry = manifest["files"]["model/model.safetensors"]
    assert entry["size"] > 0 and len(entry["sha256"]) == 64
    _truncate(tmp_path / "checkpoint-2" / "model" / "model.safetensors")
    resumed = GRPOTrainer(_cfg(tiny, tmp_path, max_steps=2, save_steps=1, resume_from_checkpoint="latest"))
    assert resumed.step == 1
    err = capsys.readouterr().err
    assert "checkpoint-2" in err and "model/model.safetensors" in err and "checkpoint-1" in err
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint-2.*model/model.safetensors.*size"):
        GRPOTrainer(_cfg(tiny, tmp_path, resume_from_checkpoint=str(tmp_path / "checkpoint-2")))


def test_damaged_checkpoint_files_get_clear_messages(tiny, tmp_path):
    GRPOTrainer(_cfg(tiny, tmp_path, max_steps=1)).train()
    path = tmp_path / "checkpoint-1"
    (path / ckpt.MANIFEST).unlink()  # as a checkpoint written before manifests existed

    (path / "optimizer.pdopt").rename(path / "optimizer.bak")
    with pytest.raises(FileNotFoundError, match="optimizer.pdopt") as e:
        GRPOTrainer(_cfg(tiny, tmp_path, resume_from_checkpoint=str(path)))
    assert "sharded" not in str(e.value)
    (path / "optimizer.bak").rename(path / "optimizer.pdopt")

    state = path / "trainer_state.json"
    good = state.read_text()
    state.write_text(good[:40])
    with pytest.raises(ckpt.CheckpointError, match=r"trainer_state.json.*not valid JSON"):
        GRPOTrainer(_cfg(tiny, tmp_path, resume_from_checkpoint=str(path)))
    doc = json.loads(good)
    del doc["sampler"]
    state.write_text(json.dumps(doc))
    with pytest.raises(ckpt.CheckpointError, match=r"trainer_state.json.*'sampler'"):
        GRPOTrainer(_cfg(tiny, tmp_path, resume_from_checkpoint=str(path)))


# ----- 11. file modes -----------------------------------------------------------------------------------


def test_checkpoint_and_tiny_model_directories_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        tiny = build_tiny_checkpoint(str(tmp_path / "tiny"), seed=0)
        tr = GRPOTrainer(_cfg(tiny, tmp_path / "out", max_steps=1))
        tr.train()
    finally:
        os.umask(old)
    for d in (Path(tiny), tmp_path / "out" / "checkpoint-1", tmp_path / "out" / "checkpoint-1" / "model"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, d


def test_nonfinite_checks_do_not_change_a_healthy_run(tiny, tmp_path):
    tr = GRPOTrainer(_cfg(tiny, tmp_path, max_steps=2))
    tr.train()
    assert tr.nonfinite_total == 0
    assert all(np.isfinite(p.numpy()).all() for p in tr.model.parameters())
