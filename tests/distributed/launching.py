"""Helpers for the distributed tests: runs of worker.py in one process or as a two-process
``paddle.distributed.launch`` job on CPU (gloo), and what the runs leave behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")


def worker_env() -> dict[str, str]:
    """One thread per process (two processes share the two cores) and the CPU-runtime settings."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_DEBUG_CPU_TYPE": "5",
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    if env.get("CUDA_VISIBLE_DEVICES") == "":
        del env["CUDA_VISIBLE_DEVICES"]  # the launcher fails to split an empty device list
    return env


@dataclass
class Finished:
    returncode: int
    output: str  # the launcher's (or the single process's) stdout + stderr
    seconds: float
    log_dir: Path | None

    def worker_log(self, rank: int) -> str:
        assert self.log_dir is not None
        return (self.log_dir / f"workerlog.{rank}").read_text(errors="replace")


def run_cmd(cmd: list[str], timeout: float, log_dir: Path | None = None) -> Finished:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=timeout, cwd=str(REPO),
                          check=False)
    return Finished(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0, log_dir)


def launch(args: list[str], log_dir: Path, timeout: float = 240.0, nproc: int = 2, gpus: str | None = None) -> Finished:
    """``python -m paddle.distributed.launch --nproc_per_node N --log_dir D <args>`` (``--gpus`` if given)."""
    devices = ["--gpus", gpus] if gpus else ["--nproc_per_node", str(nproc)]
    cmd = [sys.executable, "-m", "paddle.distributed.launch", *devices, "--log_dir", str(log_dir), *args]
    return run_cmd(cmd, timeout, log_dir)


def run_worker(spec: dict, work: Path, name: str, world: int, timeout: float = 240.0,
               gpus: str | None = None) -> Finished:
    """Write ``spec`` and run worker.py on it, as ``world`` launched processes (1: a plain process)."""
    path = work / f"{name}.json"
    path.write_text(json.dumps(spec))
    if world == 1:
        return run_cmd([sys.executable, str(WORKER), str(path)], timeout)
    return launch([str(WORKER), str(path)], work / f"log_{name}", timeout, nproc=world, gpus=gpus)


def check(done: Finished) -> None:
    if done.returncode != 0:
        tail = "\n".join(done.output.splitlines()[-60:])
        logs = ""
        if done.log_dir is not None:
            for f in sorted(done.log_dir.glob("workerlog.*")):
                logs += f"\n--- {f.name} ---\n" + "\n".join(f.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(f"exit code {done.returncode} after {done.seconds:.1f} s:\n{tail}{logs}")


def base_cfg(tiny: str, out: Path, **kw) -> dict:
    cfg = {"model_name_or_path": tiny, "output_dir": str(out), "num_generations": 4, "max_completion_length": 8,
           "num_train_samples": 8, "learning_rate": 1e-3, "beta": 0.04, "reward_funcs": ["test_text_length"],
           "visualdl": False, "progress_bar": False, "log_completions_steps": 0, "max_steps": 1, "seed": 3,
           "device": "cpu", "save_steps": 0, "sync_timeout": 120.0}
    cfg.update(kw)
    return cfg


def load_dump(prefix: Path, rank: int) -> tuple[dict, dict]:
    """(parameters, {"history", "rollouts", "world_size", "step"}) that worker.py wrote for ``rank``."""
    import numpy as np

    with np.load(f"{prefix}.rank{rank}.npz") as z:
        params = {k: z[k] for k in z.files}
    with open(f"{prefix}.rank{rank}.json", encoding="utf-8") as f:
        return params, json.load(f)
