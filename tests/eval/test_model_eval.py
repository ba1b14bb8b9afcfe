"""The eval CLIs end to end with a real (tiny, random) model: every number in the outputs is
recomputed here from the raw completions the model produced."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from paddlemix_r1.eval import cli
from paddlemix_r1.models import build_tiny_checkpoint
from paddlemix_r1.rewards import get_reward


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return build_tiny_checkpoint(str(tmp_path_factory.mktemp("tiny")), family="qwen2_5_vl", seed=0)


def _records(out_dir, dataset):
    files = list(out_dir.glob(f"{dataset}_*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def test_rec_eval_with_model(rec_set, tiny_ckpt, tmp_path, capsys):
    path, root = rec_set
    out = tmp_path / "logs"
    argv = ["--model_path", tiny_ckpt, "--data_root", str(path.parent), "--image_root", str(root),
            "--test_datasets", "tiny_rec", "--output_dir", str(out), "--batch_size", "2", "--max_new_tokens", "8"]
    assert cli.main_rec(argv) == 0
    records = _records(out, "tiny_rec")
    assert len(records) == 5
    ok = [r for r in records if r.get("error") is None]
    assert len(ok) == 3  # a broken and a missing image are reported, not fatal
    for r in ok:  # the stored score is the reward of the stored raw output
        kw = dict(solution=[r["gold"]], image_size=[r["image_size"]], resized_size=[r["resized_size"]],
                  model_family=["qwen2_5_vl"])
        assert get_reward("rec_iou")([r["raw_output"]], **kw)[0] == r["score"]
        assert get_reward("rec_acc")([r["raw_output"]], **kw)[0] == float(r["correct"])
    summary = json.loads(next(out.glob("tiny_rec_*.summary.json")).read_text())
    assert summary["n"] == 5 and summary["errors"] == 2
    assert summary["correct"] == sum(r["correct"] for r in ok)
    assert "tiny_rec" in capsys.readouterr().out


def test_counting_eval_with_model_pass_at_k(counting_set, tiny_ckpt, tmp_path):
    path, root = counting_set
    out = tmp_path / "logs"
    argv = ["--model_path", tiny_ckpt, "--data_root", str(path.parent), "--image_root", str(root),
            "--test_datasets", path.stem, "--output_dir", str(out), "--batch_size", "2", "--max_new_tokens", "6",
            "--num_samples", "2"]
    assert cli.main_r1v(argv) == 0
    records = _records(out, path.stem)
    assert len(records) == 3
    for r in records:  # pass@2: two sampled completions per row, the row counts if either is right
        assert len(r["samples"]) == 2
        scores = get_reward("counting")([s["raw_output"] for s in r["samples"]], solution=[r["gold"]] * 2)
        assert r["correct"] == any(s == 1.0 for s in scores)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["eval/test_rec.py", "eval/test_r1-v.py"])
def test_scripts_help(script):
    res = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True)
    for flag in ("--model_name", "--method", "--model_path", "--data_root", "--image_root", "--test_datasets",
                 "--batch_size", "--sample_num", "--steps", "--seed", "--dtype", "--num_samples"):
        assert flag in res.stdout
