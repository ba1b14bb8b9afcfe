"""Curr-ReFT's test files ({image, problem, solution}, its tasks' rows) read and scored by the evaluation path."""

import json

import pytest

from paddlemix_r1.eval import cli, evaluate, pass_at_k_of_file, read_eval_rows
from paddlemix_r1.rewards.math_answer import MathVerifier
from tests.eval.conftest import write_image


def test_curr_reft_superclevr_copy_is_read_by_test_r1v(tmp_path, monkeypatch):
    """Curr-ReFT's eval/superclevr_test200_counting_problems.jsonl: {image, problem, solution: <int>}, no image_path."""
    root = tmp_path / "superclevr_200"
    rows = []
    for i, gt in enumerate([4, 6]):
        write_image(root / f"superCLEVR_new_02500{i}.png", (64, 48))
        rows.append({"image": f"superCLEVR_new_02500{i}.png",
                     "problem": "How many different items are there in the image?", "solution": gt})
    data = tmp_path / "data"
    data.mkdir()
    (data / "superclevr_test200_counting_problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = read_eval_rows(str(data / "superclevr_test200_counting_problems.jsonl"), str(root), "counting")
    assert [(r.question, r.solution, r.image) for r in read] == [
        (rows[0]["problem"], 4, str(root / rows[0]["image"])), (rows[1]["problem"], 6, str(root / rows[1]["image"]))]

    outputs = {"superclevr_test200_counting_problems/0": "<answer>4</answer>",
               "superclevr_test200_counting_problems/1": "<answer>5</answer>"}

    def build(args, image_processor=None):
        return lambda samples: [outputs[s.row.id] for s in samples]

    monkeypatch.setattr(cli, "build_generate_fn", build)
    argv = ["--model_path", str(tmp_path / "ckpt"), "--data_root", str(data), "--image_root", str(root),
            "--output_dir", str(tmp_path / "logs")]  # the default --test_datasets is this file's name
    assert cli.main_r1v(argv) == 0
    table = json.loads((tmp_path / "logs" / "summary_qwen2.5-vl-3b-instruct_r1_100.json").read_text())
    assert [(t["dataset"], t["task"], t["correct"], t["n"]) for t in table] == [
        ("superclevr_test200_counting_problems", "counting", 1, 2)]


@pytest.fixture
def curr_files(tmp_path):
    """One Curr-ReFT-style file per task: rows {image, problem, solution, task} with <thinking>/<answer> golds."""
    root = tmp_path / "images"
    for name in ("a.png", "b.png", "c.png"):
        write_image(root / name, (640, 480))
    files = {
        "detection": [
            {"image": "a.png", "problem": "Locate the red car.", "task": "detection",
             "solution": "<thinking>left</thinking><answer>[100, 100, 300, 200]</answer>"},
            {"image": "b.png", "problem": "Is there a dog in the box [1, 2, 3, 4]?", "task": "detection",
             "solution": "<answer>no</answer>"},  # a judge row
        ],
        "classify": [
            {"image": "a.png", "problem": "What objects are in the image?", "task": "classify",
             "solution": "<thinking>I see</thinking><answer>cat, dog</answer>"},
            {"image": "c.png", "problem": "Which apply? A. cat B. car C. dog", "task": "classify",
             "solution": "<answer>A, C</answer>"},  # a select-all choice row
        ],
        "math": [
            {"image": "a.png", "problem": "What is 3 x 4?", "task": "math",
             "solution": "<thinking>3 x 4</thinking><answer>12</answer>"},
            {"image": "b.png", "problem": "Which? A. 1 B. 2", "task": "math", "solution": "<answer>B</answer>"},
        ],
    }
    paths = {}
    for task, rows in files.items():
        paths[task] = tmp_path / f"{task}_test.jsonl"
        paths[task].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths, root


def test_curr_reft_rows_are_read_and_scored_per_gold_kind(curr_files, tmp_path):
    paths, root = curr_files
    outputs = {
        "detection_test/0": ["<think>.</think><answer>{\"bbox_2d\": [101, 99, 302, 198]}</answer>",  # 640x480 -> 644x476
                             "<think>.</think><answer>[0, 0, 10, 10]</answer>"],
        "detection_test/1": ["<think>.</think><answer>No</answer>", "<think>.</think><answer>yes</answer>"],
        "classify_test/0": ["<think>.</think><answer>['dog', 'cat']</answer>", "<answer>cat</answer>"],
        "classify_test/1": ["<answer>C, A</answer>", "<answer>A</answer>"],
        "math_test/0": ["<answer>15</answer>", "<answer>12</answer>"],
        "math_test/1": ["<answer>(B)</answer>", "<answer>A</answer>"],
    }
    expected = {  # per row: each sample's correct
        "detection": [[True, False], [True, False]],
        "classify": [[True, False], [True, False]],
        "math": [[False, True], [True, False]],
    }
    with MathVerifier(timeout_s=3.0) as verifier:
        for task, path in paths.items():
            rows = read_eval_rows(str(path), str(root), task)
            assert rows[0].solution == {"detection": "[100, 100, 300, 200]", "classify": "cat, dog", "math": "12"}[task]
            summary = evaluate(rows, lambda samples: [o for s in samples for o in outputs[s.row.id]], task,
                               num_samples=2, model_family="qwen2_5_vl",
                               resize=lambda w, h: (644, 476) if (w, h) == (640, 480) else (w, h),
                               verifier=verifier, output_dir=tmp_path / "logs", progress=False)
            records = [json.loads(line) for line in open(summary.results_path)]
            assert [[s["correct"] for s in r["samples"]] for r in records] == expected[task], task
            assert summary.prompt_template.startswith("{Question} First output")
            result = pass_at_k_of_file(summary.results_path)
            assert result.task == task and result.values == {1: 0.5, 2: 1.0}
