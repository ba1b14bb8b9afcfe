"""The RACRO demo's smoke run: the whole pipeline (reasoner SFT, captioner warm-up, GRPO with the reasoner
reward, evaluation) on a few steps."""

from __future__ import annotations

import json

import pytest

from paddlemix_r1.racro_demo import RacroDemoSettings, run_racro_demo


@pytest.mark.slow
def test_racro_demo_smoke(tmp_path):
    summary = run_racro_demo(str(tmp_path), RacroDemoSettings.smoke())
    assert len(summary["reward_curve"]) == 3
    assert summary["reasoner_stats"]["calls"] >= 3 and summary["reasoner_stats"]["generation_seconds"] > 0
    assert json.loads((tmp_path / "summary.json").read_text())["after"] == summary["after"]
    assert (tmp_path / "reward_curve.png").exists()
