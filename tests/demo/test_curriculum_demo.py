"""The curriculum demo, shortened: tiny model, synthetic judge / choice / open counting rows, format warm-up,
three GRPO stages handed off through checkpoints, per-stage evaluation, table and plot, and the CLI flag.
The full run's figures are printed by `paddlemix-r1 demo --recipe curriculum`."""

from __future__ import annotations

import json
import os

import pytest

from paddlemix_r1.cli import build_parser
from paddlemix_r1.curriculum_demo import CurriculumDemoSettings, run_curriculum_demo
from paddlemix_r1.data.readers import read_training_files
from paddlemix_r1.data.synthetic import CURRICULUM_FORMS


@pytest.mark.slow
def test_curriculum_demo_smoke(tmp_path):
    out = str(tmp_path / "demo")
    settings = CurriculumDemoSettings.smoke()
    summary = run_curriculum_demo(out, settings)
    assert json.load(open(os.path.join(out, "summary.json")))["table"] == summary["table"]
    stages = summary["stages"]
    assert [s["name"] for s in stages] == list(CURRICULUM_FORMS)
    for s in stages:
        assert s["steps"] == settings.stage_steps[s["name"]] == len(s["reward_curve"])
        assert s["eval_start"]["n"] == s["eval_end"]["n"] == settings.val_rows
    # each stage starts where the previous one ended
    assert stages[1]["eval_start"] is not None and stages[0]["handoff"].endswith(
        os.path.join("stage0-judge", f"checkpoint-{settings.stage_steps['judge']}", "model"))
    assert summary["open_before_curriculum"]["n"] == settings.val_rows
    assert summary["sft_loss"][-1] < summary["sft_loss"][0]
    assert os.path.getsize(os.path.join(out, "curriculum", "curriculum_reward.png")) > 1000
    # the data files are Curr-ReFT's format and read back as math rows with <answer> golds parsed
    rows = read_training_files([os.path.join(out, "data", "choice_val.jsonl")], os.path.join(out, "data"), "math")
    assert {r["task"] for r in rows} == {"math"} and all(r["solution"] in "ABCD" for r in rows)


def test_demo_recipe_flag():
    args = build_parser().parse_args(["demo", "--recipe", "curriculum", "--smoke"])
    assert args.recipe == "curriculum" and args.smoke and args.output_dir is None
    assert build_parser().parse_args(["demo"]).recipe == "counting"


def test_counting_curriculum_rows():
    import pytest

    from paddlemix_r1.data.synthetic import counting_curriculum_rows, counting_rows

    base = counting_rows(40, seed=4, max_count=3)
    by_form = {form: counting_curriculum_rows(40, form, seed=4, max_count=3) for form in CURRICULUM_FORMS}
    for form, rows in by_form.items():
        assert rows == counting_curriculum_rows(40, form, seed=4, max_count=3)  # deterministic
        assert all(r["task"] == "math" and r["images"][0].tobytes() == b["images"][0].tobytes()
                   for r, b in zip(rows, base))
    judged = [(r["count"], r["problem"], r["solution"]) for r in by_form["judge"]]
    assert all((f" {k} " in p) == (s == "<answer>yes</answer>") for k, p, s in judged)
    assert 10 < sum(s == "<answer>yes</answer>" for _, _, s in judged) < 30
    for r in by_form["choice"]:
        letter = r["solution"][len("<answer>"):-len("</answer>")]
        assert f"{letter}. {r['count']}" in r["problem"]
    assert all(r["solution"] == f"<answer>{r['count']}</answer>" for r in by_form["open"])
    ordered = counting_curriculum_rows(40, "choice", seed=4, max_count=3, shuffle_options=False)
    assert all(r["problem"].endswith("Options: A. 1 B. 2 C. 3 D. 4") and r["solution"] == f"<answer>{'ABCD'[r['count'] - 1]}</answer>"
               for r in ordered)
    assert len({r["problem"].split("Options: ")[1] for r in by_form["choice"]}) > 1  # shuffled per row by default
    with pytest.raises(ValueError, match="form"):
        counting_curriculum_rows(2, "essay")
    with pytest.raises(ValueError, match="max_count"):
        counting_curriculum_rows(2, "choice", max_count=5)
