"""Curriculum GRPO (grpo/curriculum.py): recipe parsing with clear errors, the hand-off (stage k+1's
policy and reference are bit-identical to stage k's chosen checkpoint), resume after a kill mid-stage
(same final weights as an uninterrupted run), per-stage evaluation, summary and plot, the shipped
Curr-ReFT recipes and the CLI."""

from __future__ import annotations

import copy
import glob
import json
import os

import numpy as np
import pytest
import yaml

from paddlemix_r1.cli import build_parser
from paddlemix_r1.data.synthetic import counting_rows, write_jsonl_dataset
from paddlemix_r1.grpo import curriculum as cur
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.models import from_pretrained
from paddlemix_r1.rewards import list_rewards, register_reward

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def text_length(completions, **_):
    """A reward the random tiny model's completions differ in, so every step changes the weights."""
    return [len(text) / 10 for text in completions]


if "test_curriculum_length" not in list_rewards():
    register_reward("test_curriculum_length", text_length)

TINY_GRPO = dict(task="counting", dataset="synthetic_counting", num_train_samples=8, prompts_per_step=2,
                 reward_funcs=["test_curriculum_length"],
                 num_generations=2, max_completion_length=6, learning_rate=1e-3, beta=0.04, save_steps=1,
                 save_total_limit=0, visualdl=False, progress_bar=False, log_completions_steps=0, seed=3)


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return tiny_ckpt  # tests/conftest.py: one tiny Qwen2.5-VL (seed 1) per session


@pytest.fixture(scope="module")
def val_file(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("val"))
    return write_jsonl_dataset(counting_rows(3, seed=9, max_count=3), out, "val"), out


def _recipe(tiny, out, val=None) -> dict:
    """Stage a: 2 steps, hands off its checkpoint-1; stage b: half an epoch of 8 rows at 2 prompts = 2 steps."""
    b = {"name": "b", "epochs": 0.5, "num_generations": 4, "learning_rate": 5e-4}
    if val is not None:
        b.update(eval={"data_files": [val[0]], "image_root": val[1], "method": "r1", "max_new_tokens": 6},
                 eval_at_start=True)
    return {"output_dir": str(out), "model_name_or_path": tiny, "defaults": dict(TINY_GRPO),
            "stages": [{"name": "a", "max_steps": 2, "handoff": 1}, b]}


def _state(path) -> dict[str, np.ndarray]:
    model = from_pretrained(path) if isinstance(path, str) else path
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def full_run(tiny, val_file, tmp_path_factory):
    """One uninterrupted run; the stage-b trainer's initial policy and reference weights, recorded."""
    out = tmp_path_factory.mktemp("full")
    seen = {}

    def hook(stage, trainer):
        seen[stage.name] = {"policy": _state(trainer.model), "ref": _state(trainer.ref_model),
                            "model_path": trainer.model_path, "max_steps": trainer.cfg.max_steps}

    cfg = cur.CurriculumConfig.from_dict(_recipe(tiny, out, val_file))
    return cfg, cur.run_curriculum(cfg, on_trainer=hook), seen


@pytest.mark.slow
def test_handoff_policy_and_reference_equal_the_chosen_checkpoint(full_run):
    cfg, results, seen = full_run
    chosen = os.path.join(cfg.stage_dir(0), "checkpoint-1", "model")  # handoff: 1, not the final checkpoint-2
    assert results[0].handoff == chosen and seen["b"]["model_path"] == chosen
    saved = _state(chosen)
    _assert_same(seen["b"]["policy"], saved)
    _assert_same(seen["b"]["ref"], saved)  # the reference is reset to the hand-off, not carried over
    final_a = _state(os.path.join(cfg.stage_dir(0), "checkpoint-2", "model"))
    assert any(not np.array_equal(saved[k], final_a[k]) for k in saved)  # the named step is not the final one
    assert seen["b"]["max_steps"] == 2  # epochs 0.5 x 8 rows / 2 prompts per step
    assert [r.steps for r in results] == [2, 2] and all(len(r.reward_curve) == 2 for r in results)


@pytest.mark.slow
def test_summary_state_eval_and_plot(full_run):
    cfg, results, _ = full_run
    b = results[1]
    assert b.eval_start["n"] == b.eval_end["n"] == 3 and set(b.eval_end["by_task"]) == {"counting"}
    assert results[0].eval_end is None  # stage a has no eval block
    state = json.load(open(os.path.join(cfg.output_dir, cur.STATE_FILE)))
    assert state["stages"] == ["a", "b"] and all(r["status"] == "done" for r in state["records"].values())
    summary = json.load(open(os.path.join(cfg.output_dir, cur.SUMMARY_FILE)))
    assert [s["name"] for s in summary["stages"]] == ["a", "b"]
    table = cur.format_summary(results)
    assert "reward start -> end" in table and table.count("\n") == 3
    assert os.path.getsize(os.path.join(cfg.output_dir, cur.PLOT_FILE)) > 1000
    assert glob.glob(os.path.join(cfg.output_dir, "eval", "b_end_counting_r1.jsonl"))


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_kill_mid_stage(tiny, tmp_path, full_run):
    cfg_full, results_full, _ = full_run
    recipe = _recipe(tiny, tmp_path)

    def kill_in_b(stage, trainer):
        if stage.name == "b":
            trainer.train(num_steps=1)  # step 1 of stage b is trained and checkpointed, then the process "dies"
            raise Killed

    with pytest.raises(Killed):
        cur.run_curriculum(cur.CurriculumConfig.from_dict(recipe), on_trainer=kill_in_b)
    state = json.load(open(os.path.join(tmp_path, cur.STATE_FILE)))
    assert state["records"]["a"]["status"] == "done" and "status" not in state["records"].get("b", {})

    started = []
    results = cur.run_curriculum(cur.CurriculumConfig.from_dict(recipe),
                                 on_trainer=lambda stage, trainer: started.append((stage.name, trainer.step)))
    assert started == [("b", 1)]  # stage a is not rerun; b continues at its step 1
    assert results[1].resumed_from_step == 1 and results[0].handoff.startswith(str(tmp_path))
    _assert_same(_state(results[1].handoff), _state(results_full[1].handoff))
    assert results[1].reward_curve == results_full[1].reward_curve


def test_stage_errors_name_the_stage_and_field(tiny, tmp_path):
    def err(mutate) -> str:
        d = copy.deepcopy(_recipe(tiny, tmp_path))
        mutate(d)
        with pytest.raises(ValueError) as e:
            cur.CurriculumConfig.from_dict(d, source="r.yaml")
        return str(e.value)

    assert "stages[1] ('b')" in err(lambda d: d["stages"][1].update(num_generation=4)) and "num_generation" in err(
        lambda d: d["stages"][1].update(num_generation=4))
    assert "'epochs' or 'max_steps'" in err(lambda d: d["stages"][1].update(max_steps=3))
    assert "set by the curriculum" in err(lambda d: d["stages"][0].update(output_dir="x"))
    assert "handoff" in err(lambda d: d["stages"][0].update(handoff="best"))
    assert "past the stage's max_steps" in err(lambda d: d["stages"][0].update(handoff=3))
    assert "used twice" in err(lambda d: d["stages"][1].update(name="a"))
    assert "learning_rate" in err(lambda d: d["stages"][0].update(learning_rate="fast"))
    assert "defaults" in err(lambda d: d["defaults"].update(model_name_or_path="x"))
    assert "unknown top-level" in err(lambda d: d.update(max_steps=3))
    assert "eval.data_files" in err(lambda d: d["stages"][0].update(eval={"data_files": []}))


def test_overrides(tiny, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(tiny, tmp_path / "out")))
    cfg = cur.CurriculumConfig.load(str(path), ["max_steps=1", "b.learning_rate=2e-3", "output_dir=elsewhere",
                                                "a.handoff=final"])
    assert cfg.output_dir == "elsewhere" and cfg.stages[0].handoff == "final"
    assert [s.grpo["max_steps"] for s in cfg.stages] == [1, 1] and cfg.stages[1].epochs is None
    assert cfg.stages[1].grpo["learning_rate"] == 2e-3 and cfg.stages[0].grpo["learning_rate"] == 1e-3
    for bad, msg in (["c.max_steps=1", "no stage named 'c'"], ["lr=1", "not a GRPOConfig field"],
                     ["a.eval.sample_num=3", "no eval block"], ["max_steps", "not key=value"]):
        with pytest.raises(ValueError, match=msg):
            cur.CurriculumConfig.load(str(path), [bad])


def test_handoff_step_must_survive_checkpoint_pruning():
    stage = cur.StageConfig(name="s", grpo={}, handoff=600)
    keep_all = GRPOConfig(max_steps=1000, save_steps=100, save_total_limit=0)
    assert cur.handoff_step(stage, keep_all) == 600
    with pytest.raises(ValueError, match="would be deleted"):
        cur.handoff_step(stage, GRPOConfig(max_steps=1000, save_steps=100, save_total_limit=2))
    with pytest.raises(ValueError, match="never saved"):
        cur.handoff_step(stage, GRPOConfig(max_steps=1000, save_steps=0))
    assert cur.handoff_step(cur.StageConfig(name="s", grpo={}), keep_all) == 1000


def test_state_file_of_another_curriculum_is_refused(tiny, tmp_path):
    cfg = cur.CurriculumConfig.from_dict(_recipe(tiny, tmp_path))
    (tmp_path / cur.STATE_FILE).write_text(json.dumps({"stages": ["judge"], "records": {}}))
    with pytest.raises(ValueError, match="another output_dir"):
        cur.load_state(cfg)


CURR_REFT_RECIPES = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "curr_reft_*.yaml"))
                           if "reject_sft" not in os.path.basename(p))


def test_curr_reft_recipes_parse():
    """Their 3B scripts: G 4 / 2 / 4, epochs 1 / 1 / 2, 8 prompts per step, max_prompt_length 2048."""
    assert CURR_REFT_RECIPES
    for path in CURR_REFT_RECIPES:
        cfg = cur.CurriculumConfig.load(path)
        assert [s.name for s in cfg.stages] == ["judge", "choice", "open"], path
        configs = [s.grpo_config("model", "out") for s in cfg.stages]
        assert [c.task_type for c in configs] == ["judge", "choice", "open"]
        assert [c.max_prompt_length for c in configs] == [2048] * 3
        if "3b" in os.path.basename(path):
            assert [c.num_generations for c in configs] == [4, 2, 4]
            assert [s.epochs for s in cfg.stages] == [1, 1, 2]
            assert all(c.prompts_per_step == 1 for c in configs)  # per rank: 8 GPUs -> 8 prompts per step


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["curriculum", "--help"])
    assert e.value.code == 0 and "--config" in capsys.readouterr().out
    args = build_parser().parse_args(["curriculum", "--config", "c.yaml", "max_steps=2", "judge.beta=0"])
    assert args.overrides == ["max_steps=2", "judge.beta=0"]
