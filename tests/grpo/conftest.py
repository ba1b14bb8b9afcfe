"""Fixtures for the GRPO tests: TRL as a reference, run in its own process (see trl_reference.py)."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TRL_RUNNER = Path(__file__).with_name("trl_reference.py")
TRL_DPO_RUNNER = Path(__file__).with_name("trl_dpo_reference.py")


@pytest.fixture(scope="module")
def run_trl(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[dict]], list[dict]]:
    """Returns ``run(cases) -> results``: one subprocess running TRL's GRPOTrainer code per call."""
    return _trl_runner(TRL_RUNNER, tmp_path_factory)


@pytest.fixture(scope="module")
def run_trl_dpo(tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[dict]], list[dict]]:
    """Returns ``run(cases) -> results``: one subprocess running TRL's DPOTrainer loss per call."""
    return _trl_runner(TRL_DPO_RUNNER, tmp_path_factory)


def _trl_runner(script: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[list[dict]], list[dict]]:
    # find_spec, not import: TRL runs in its own fresh process (trl_reference.py says why), whatever this
    # process has loaded (the transformers parity tests import torch here; tests/hf_reference.py).
    if importlib.util.find_spec("trl") is None:
        pytest.skip("TRL (test extra) is not installed; it is the reference implementation")

    def run(cases: list[dict]) -> list[dict]:
        workdir = tmp_path_factory.mktemp("trl")
        cases_path, results_path = workdir / "cases.pkl", workdir / "results.pkl"
        cases_path.write_bytes(pickle.dumps(cases))
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(
            [sys.executable, str(script), str(cases_path), str(results_path)],
            env=env,
            check=False,  # the stderr tail goes into the error below
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"TRL reference run failed:\n{proc.stderr[-4000:]}")
        return pickle.loads(results_path.read_bytes())

    return run
