"""The launch scripts: the command lines they build, and a 2-process CPU run of each recipe's tiny
variant through scripts/train.py (rank 0 alone writes; completions of both ranks are logged)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from launching import REPO, worker_env

RECIPES = {"rec": "configs/rec_qwen2_5_vl_3b.yaml", "counting": "configs/counting_qwen2_vl_2b.yaml",
           "geometry": "configs/geometry_qwen2_vl_2b.yaml"}


def _script(name: str, env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run scripts/run_grpo_<name>.sh with this interpreter (PYTHON), whatever is first on PATH."""
    return subprocess.run(["bash", str(REPO / "scripts" / f"run_grpo_{name}.sh"), *args],
                          env={**worker_env(), "PYTHON": sys.executable, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_distributed_script_command_lines(name):
    gpu = _script(name, {"DRY_RUN": "1"}, "max_steps=3")
    assert gpu.returncode == 0, gpu.stderr
    argv = shlex.split(gpu.stdout)
    assert argv[1:6] == ["-m", "paddle.distributed.launch", "--gpus", "0,1,2,3,4,5,6,7", "--log_dir"]
    assert argv[7:] == ["scripts/train.py", "--config", RECIPES[name], "max_steps=3"]

    custom = _script(name, {"DRY_RUN": "1", "GPUS": "2,3", "MODEL_PATH": "/m", "OUTPUT_DIR": "/o", "LOG_DIR": "/l"})
    argv = shlex.split(custom.stdout)
    assert argv[3:7] == ["--gpus", "2,3", "--log_dir", "/l"]
    assert argv[-2:] == ["model_name_or_path=/m", "output_dir=/o"]

    cpu = shlex.split(_script(name, {"DRY_RUN": "1", "CPU": "1"}).stdout)
    assert cpu[3:5] == ["--nproc_per_node", "2"]
    assert cpu[7:11] == ["scripts/train.py", "--config", "configs/tiny_cpu.yaml", "device=cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_distributed_script_cpu_run(name, tmp_path):
    out = tmp_path / "out"
    done = _script(name, {"CPU": "1", "LOG_DIR": str(tmp_path / "logs"), "OUTPUT_DIR": str(out)}, "max_steps=1",
                   "save_steps=1", "num_train_samples=8", "max_completion_length=8", "log_completions_steps=1",
                   "progress_bar=false", timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "done: step 1 on 2 rank(s)" in done.stdout + done.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert (out / "vdl").is_dir()
    records = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert {r["rank"] for r in records} == {0, 1} and len(records) == 2 * 2 * 4  # 2 ranks x 2 prompts x G=4


@pytest.mark.parametrize("script", ["run_grpo_rec.sh", "run_curriculum.sh", "download_data.sh"])
def test_distributed_scripts_default_to_python3_of_the_active_environment(script, tmp_path):
    """Without PYTHON the scripts run the first python3 on PATH (an activated environment's), not whatever
    ``python`` means there (a bare ``python`` may be another interpreter, or none at all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text('#!/bin/sh\necho "fake python3 $*"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in worker_env().items() if k != "PYTHON"}
    env.update({"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "DRY_RUN": "1"})
    args = ["rec"] if script == "download_data.sh" else []
    done = subprocess.run(["bash", str(REPO / "scripts" / script), *args], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    if script == "download_data.sh":
        assert out.startswith("fake python3 -m paddlemix_r1.data.download rec"), out
    else:
        assert shlex.split(out)[0] == str(fake), out
