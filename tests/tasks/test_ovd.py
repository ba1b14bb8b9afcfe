"""Open-vocabulary detection: set-level COCO mAP / AP50 and greedy P/R@0.5, the ovd task's per-row score in
the gold frame, and the evaluation CLI's loop on a tiny set with injected model outputs."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from paddlemix_r1.eval.cli import ovd_parser
from paddlemix_r1.eval.data import read_eval_rows
from paddlemix_r1.eval.evaluator import evaluate, format_table
from paddlemix_r1.processing.image_processor import smart_resize
from paddlemix_r1.rewards.detection import Detection, coco_map, greedy_precision_recall
from paddlemix_r1.tasks import ScoreContext, get_task

CAT, DOG = (10.0, 10.0, 50.0, 50.0), (60.0, 20.0, 90.0, 80.0)


def d(box, label):
    return Detection(tuple(float(v) for v in box), label)


def test_coco_map_over_a_set():
    golds = [[d(CAT, "cat")], [d(DOG, "dog"), d(CAT, "cat")]]
    perfect = [(g, list(g)) for g in golds]
    assert coco_map(perfect) == pytest.approx((1.0, 1.0))
    shifted = [(golds[0], [d((14, 10, 54, 50), "cat")]), (golds[1], list(golds[1]))]  # IoU 36/44 = 0.82
    ap, ap50 = coco_map(shifted)
    assert ap50 == pytest.approx(1.0) and 0.5 < ap < 1.0
    # a label no gold of the set has cannot enter COCO's per-category AP: it changes nothing there
    assert coco_map([(golds[0], [d(CAT, "cat"), d(DOG, "unicorn")])]) == pytest.approx((1.0, 1.0))
    assert coco_map([([], [d(CAT, "cat")])]) == (0.0, 0.0)


def test_greedy_precision_recall():
    golds = [d(CAT, "cat"), d(DOG, "dog")]
    # duplicate cat (second one a false positive), a hallucinated label, a malformed item; the dog missed
    preds = [d(CAT, "cat"), d(CAT, "cat"), d(DOG, "unicorn"), None]
    assert greedy_precision_recall([(golds, preds)]) == (1, 3, 1)
    # IoU just below 0.5 is a miss; label must match
    assert greedy_precision_recall([([d(CAT, "cat")], [d((30, 10, 70, 50), "cat")])]) == (0, 1, 1)
    assert greedy_precision_recall([([d(CAT, "cat")], [d(CAT, "dog")])]) == (0, 1, 1)
    assert greedy_precision_recall([([], [])]) == (0, 0, 0)


def test_ovd_score_maps_boxes_to_the_gold_frame():
    task = get_task("ovd")
    gold = task.parse_solution('```json\n[{"bbox_2d": [20, 10, 100, 50], "label": "Cat"}]\n```')
    assert gold == [{"bbox_2d": [20.0, 10.0, 100.0, 50.0], "label": "cat"}]
    ctx = ScoreContext(model_family="qwen2_vl", image_size=(200, 100))
    answer = '<answer>```json\n[{"bbox_2d": [100, 100, 500, 500], "label": "cat"}]\n```</answer>'  # 0..1000 frame
    s = task.score(answer, gold, ctx)
    assert s.correct and s.score == 1.0 and s.parsed["detections"][0]["bbox_2d"] == pytest.approx([20, 10, 100, 50])
    wrong = task.score(answer.replace("500, 500", "500, 500], \"label\": \"cat\"}, {\"bbox_2d\": [0, 0, 900, 900"), gold,
                       ctx)
    assert not wrong.correct and wrong.score == pytest.approx(2 / 3)  # one TP, one FP
    assert task.score("<answer>None</answer>", task.parse_solution("None"), ctx).correct
    assert task.score("no answer block", gold, ctx) == task.score("<answer>not a list</answer>", gold, ctx)
    assert task.score("no answer block", gold, ctx).parsed is None


@pytest.fixture
def ovd_set(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(root / "a.png")
    Image.new("RGB", (300, 200), (30, 30, 200)).save(root / "b.png")
    q = "Please carefully check the image and detect the following objects: [cat, dog]."
    rows = [
        {"image": "a.png", "problem": q,
         "solution": '```json\n[{"bbox_2d": [100, 100, 300, 200], "label": "cat"}, '
                     '{"bbox_2d": [400, 100, 600, 400], "label": "dog"}]\n```'},
        {"image": "b.png", "problem": q, "solution": "None"},
        {"image": "missing.png", "problem": q, "solution": '```json\n[{"bbox_2d": [1, 1, 50, 50], "label": "cat"}]\n```'},
    ]
    path = tmp_path / "data" / "ovd_tiny.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, root


def resize(width, height):
    h, w = smart_resize(height, width)
    return w, h


def test_ovd_evaluation_reports_set_metrics(ovd_set, tmp_path):
    path, root = ovd_set
    rows = read_eval_rows(str(path), str(root), "ovd")
    assert [r.solution for r in rows][1] == []
    w, h = resize(640, 480)  # Qwen2.5-VL answers in resized pixels
    sx, sy = w / 640, h / 480
    cat = [100 * sx, 100 * sy, 300 * sx, 200 * sy]
    outputs = {
        "ovd_tiny/0": '<think>a cat</think><answer>```json\n[{"bbox_2d": %s, "label": "cat"}]\n```</answer>' % cat,
        "ovd_tiny/1": "<think>nothing</think><answer>None</answer>",
    }
    prompts = []

    def generate_fn(samples):
        prompts.extend(s.prompt for s in samples)
        return [outputs[s.row.id] for s in samples]

    summary = evaluate(rows, generate_fn, "ovd", method="r1", dataset="ovd_tiny", model_family="qwen2_5_vl",
                       resize=resize, output_dir=tmp_path / "out", progress=False)
    assert prompts[0].endswith("\n" + rows[0].question) and prompts[0].startswith("First thinks")
    assert (summary.n, summary.correct, summary.errors) == (3, 1, 1)  # the None row right; cat-only misses the dog
    # 3 golds (cat, dog; the missing image's cat), 1 true positive, no false positive
    assert summary.metrics["precision@0.5"] == 1.0 and summary.metrics["recall@0.5"] == pytest.approx(1 / 3)
    # COCO AP50 per category, 101-point interpolated: cat 1 of 2 golds found at precision 1 -> 51/101; dog 0
    assert summary.metrics["AP50"] == pytest.approx((51 / 101 + 0.0) / 2)
    records = [json.loads(line) for line in open(summary.results_path, encoding="utf-8")]
    assert records[0]["parsed_answer"]["detections"][0]["bbox_2d"] == pytest.approx([100, 100, 300, 200], abs=0.5)
    assert "mAP" in format_table([summary]) and "recall@0.5 33.33%" in format_table([summary])
    assert json.load(open(summary.summary_path))["metrics"] == summary.metrics


def test_ovd_cli_parser_defaults():
    args = ovd_parser().parse_args(["--model_path", "m", "--data_root", "d", "--image_root", "i"])
    assert args.test_datasets == ["ovd_test"] and args.method == "r1" and args.sample_num is None
