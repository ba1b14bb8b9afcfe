"""The CPU demo, shortened: the whole pipeline (tiny model, synthetic data, real evaluator, SFT
warm-up, GRPO, evaluation, summary, plot) runs end to end and the trained policy earns reward the
random model does not. The full run's before/after accuracy is reported by `paddlemix-r1 demo`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from paddlemix_r1.demo import DemoSettings, run_demo


@pytest.mark.slow
def test_demo_smoke(tmp_path):
    out = str(tmp_path / "demo")
    summary = run_demo(out, DemoSettings.smoke())
    on_disk = json.load(open(os.path.join(out, "summary.json")))
    assert on_disk["before"] == summary["before"] and on_disk["after"] == summary["after"]
    for stage in ("initial", "before", "after"):
        assert summary[stage]["n"] == 24 and summary[stage]["accuracy"] == summary[stage]["correct"] / 24
    assert summary["initial"]["accuracy"] == 0.0  # random weights: no answer in the required format
    assert len(summary["reward_curve"]) == DemoSettings.smoke().grpo_steps
    # reward = counting + 0.5 x format; the random model scores 0 (it never writes the format)
    assert np.mean(summary["reward_curve"]) > 0.3
    assert summary["sft_loss"][-1] < summary["sft_loss"][0] / 10
    assert os.path.getsize(os.path.join(out, "reward_curve.png")) > 1000
    assert os.listdir(os.path.join(out, "grpo", "vdl"))
