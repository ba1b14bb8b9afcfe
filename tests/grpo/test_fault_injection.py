"""Kills at random points of a tiny run: SIGTERM and SIGKILL, ten times, each followed by a run with
resume_from_checkpoint=latest. Every process ends within a bound (no deadlock in a signal handler), a
SIGTERM leaves no temporary directory, the completions log holds every step once, and the final weights
equal those of an uninterrupted run bit for bit."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from paddlemix_r1.models import build_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("training_worker.py")
CYCLES = 10
MAX_STEPS = 16
EXIT_BOUND_S = 30.0  # a signalled run ends within this; a deadlock would not
# Where the signals land: timed from the worker's own progress lines, not from the clock, so a fast or a
# loaded machine sees the same kind of kills. A SIGTERM after 0-2 more steps have started plus up to
# STEP_JITTER_S (inside a rollout, a backward, a save: where our handler is in charge); a SIGKILL the same
# way, or with probability 0.3 during start-up (interpreter, imports, model load) before the trainer exists.
STEP_JITTER_S = 0.3


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    return env


def _start(tmp_path: Path, tiny: str, out: Path, name: str) -> subprocess.Popen:
    cfg = {"model_name_or_path": tiny, "output_dir": str(out), "prompts_per_step": 1, "num_generations": 2,
           "max_completion_length": 4, "num_train_samples": 4, "learning_rate": 1e-3, "beta": 0.0,
           "reward_funcs": ["test_text_length"], "visualdl": False, "progress_bar": False,
           "log_completions_steps": 1, "max_steps": MAX_STEPS, "save_steps": 1, "save_total_limit": 2, "seed": 3,
           "resume_from_checkpoint": "latest"}
    spec = tmp_path / f"{name}.json"
    spec.write_text(json.dumps({"cfg": cfg, "dump": str(tmp_path / f"{name}.npz")}))
    return subprocess.Popen([sys.executable, str(WORKER), str(spec)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, what: str) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"{what}: still running {EXIT_BOUND_S:.0f} s later (hung); stderr tail:\n{err[-3000:]}")
    return proc.returncode, err


def _read_line(proc: subprocess.Popen) -> str:
    """The worker's next stdout line ("" at its end); fails the test if none comes within a minute."""
    ready, _, _ = select.select([proc.stdout], [], [], 60.0)
    assert ready, "the worker printed nothing for 60 s"
    return proc.stdout.readline()


def _wait_for_steps(proc: subprocess.Popen, steps: int) -> bool:
    """Reads until ``steps`` more steps have started; False if the run ended first (it had nothing left)."""
    line = _read_line(proc)
    assert line.startswith("starting the trainer"), f"the run did not start: {line!r}"
    started = 0
    while started < steps:
        line = _read_line(proc)
        if not line or line.startswith("finished"):
            return False
        started += line.startswith("step ")
    return True


def _temp_dirs(out: Path) -> set[str]:
    return {p.name for p in out.glob(".tmp-*")}


@pytest.mark.slow
def test_random_kills_then_resume_end_with_the_uninterrupted_weights(tmp_path):
    tiny = build_tiny_checkpoint(str(tmp_path / "tiny"), family="qwen2_5_vl", seed=1)
    t0 = time.monotonic()
    reference = _start(tmp_path, tiny, tmp_path / "reference", "reference")
    assert _wait_for_steps(reference, 0)
    start_up_s = time.monotonic() - t0  # interpreter, imports, model load
    code, err = _wait(reference, "the uninterrupted run")
    assert code == 0, err[-3000:]
    out = tmp_path / "killed"
    rng = random.Random(20)
    outcomes = []
    for cycle in range(CYCLES):
        signum = signal.SIGTERM if cycle % 2 == 0 else signal.SIGKILL
        before = _temp_dirs(out) if out.exists() else set()
        proc = _start(tmp_path, tiny, out, f"cycle{cycle}")
        if signum == signal.SIGKILL and rng.random() < 0.3:
            where = f"{rng.uniform(0.05, start_up_s):.2f} s into start-up"
            time.sleep(float(where.split()[0]))
        else:
            steps, jitter = rng.randint(0, 2), rng.uniform(0.0, STEP_JITTER_S)
            where = f"{jitter:.2f} s after {steps} more step(s) started"
            if not _wait_for_steps(proc, steps):
                where += " (the run had ended)"
            time.sleep(jitter)
        proc.send_signal(signum)
        code, err = _wait(proc, f"cycle {cycle}: {signum.name} {where}")
        outcomes.append((signum.name, where, code))
        if signum == signal.SIGTERM:
            # 143: stopped by our handler; 0: it had finished; -15: the signal came after the run, while the
            # process saved its parameters for this test and exited.
            assert code in (0, 143, -15), f"cycle {cycle}: exit {code}\n{err[-3000:]}"
            if code == 143:
                assert "stopped by SIGTERM" in err and "Traceback" not in err, err[-3000:]
            assert _temp_dirs(out) == set(), f"cycle {cycle}: left {_temp_dirs(out)} (before: {before})"
        else:
            assert code in (0, -9), f"cycle {cycle}: exit {code}\n{err[-3000:]}"
    final = _start(tmp_path, tiny, out, "final")
    code, err = _wait(final, "the last resume")
    assert code == 0, err[-3000:]
    assert _temp_dirs(out) == set()
    steps = [json.loads(line)["step"] for line in (out / "completions.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and all(steps.count(s) == 2 for s in range(1, MAX_STEPS + 1)), outcomes
    with np.load(tmp_path / "reference.npz") as ref, np.load(tmp_path / "final.npz") as got:
        assert ref.files == got.files
        for name in ref.files:
            np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{name}; kills: {outcomes}")
    # The handler's path was exercised: SIGTERMs land while steps remain (progress lines, not the clock).
    assert sum(code == 143 for _, _, code in outcomes) >= 3, outcomes
