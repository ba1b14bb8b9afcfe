"""An evaluation finishes and counts a row it cannot use as an error: an image the processor cannot take,
a truncated image, a gold answer the task cannot score."""

import io
import json

import pytest
from PIL import Image

from paddlemix_r1.eval.data import EvalRow, read_counting_jsonl, read_geoqa_jsonl, read_rec_json
from paddlemix_r1.eval.evaluator import evaluate
from paddlemix_r1.processing.image_processor import ImageProcessor, smart_resize
from paddlemix_r1.rewards.math_answer import MathVerifier


def resize(width, height):
    h, w = smart_resize(height, width)
    return w, h


def processor_generate(answer):
    """A generate_fn that, like the model-backed one, runs the image processor on every image."""
    processor = ImageProcessor()

    def generate(samples):
        processor([s.image for s in samples])
        return [answer for _ in samples]

    return generate


def test_counting_eval_counts_a_5000x10_and_a_truncated_image_as_errors(tmp_path):
    root = tmp_path / "clevr"
    root.mkdir()
    Image.new("RGB", (64, 48)).save(root / "good.png")
    Image.new("RGB", (5000, 10)).save(root / "strip.png")
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, format="PNG")
    (root / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    lines = [{"image_path": f"./{name}", "question": "How many?", "ground_truth": 3}
             for name in ("good.png", "strip.png", "cut.png", "good.png")]
    path = tmp_path / "superclevr.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = read_counting_jsonl(str(path), str(root))
    summary = evaluate(rows, processor_generate("<answer>3</answer>"), "counting", batch_size=4,
                       output_dir=tmp_path / "out")
    assert (summary.n, summary.correct, summary.errors) == (4, 2, 2)
    records = [json.loads(line) for line in open(summary.results_path)]
    assert "5000x10" in records[1]["error"] and "aspect ratio" in records[1]["error"]
    assert "truncated" in records[2]["error"]


def rec_file(tmp_path, golds):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (640, 480)).save(root / "a.jpg")
    rows = [{"image": "a.jpg", "problem": "the car", "normal_caption": "car", "solution": g} for g in golds]
    path = tmp_path / "tiny_rec.json"
    path.write_text(json.dumps(rows))  # json writes NaN as the NaN literal, which Python's reader accepts
    return path, root


def test_rec_eval_counts_nan_and_inverted_golds_as_errors(tmp_path):
    golds = [[100, 100, 300, 200], [float("nan"), 100, 300, 200], [300, 100, 100, 200], [100, 200, 300, 100]]
    path, root = rec_file(tmp_path, golds)
    rows = read_rec_json(str(path), str(root))
    assert [r.error is not None for r in rows] == [False, True, True, True]
    assert rows[1].error.startswith(f"{path}:1: ") and "finite" in rows[1].error
    assert "x2 > x1" in rows[2].error and "y2 > y1" in rows[3].error
    answer = "<answer>[100, 100, 300, 200]</answer>"
    summary = evaluate(rows, lambda samples: [answer] * len(samples), "rec", model_family="qwen2_vl",
                       output_dir=tmp_path / "out")
    assert (summary.n, summary.errors) == (4, 3)
    records = [json.loads(line) for line in open(summary.results_path)]
    assert [r["error"] is not None for r in records] == [False, True, True, True]
    assert records[1]["error"].startswith("gold: ")


def test_eval_rows_built_in_code_are_checked_too(tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    rows = [EvalRow(f"set/{i}", str(tmp_path / "a.png"), "How many?", gold, f"set:{i + 1}")
            for i, gold in enumerate([3, -3])]
    summary = evaluate(rows, lambda samples: ["<answer>3</answer>"] * len(samples), "counting")
    assert (summary.correct, summary.errors) == (1, 1)


def test_geoqa_gold_math_verify_cannot_parse_is_an_error_not_an_abort(tmp_path):
    root = tmp_path / "geo"
    root.mkdir()
    Image.new("RGB", (100, 80)).save(root / "0.png")
    lines = [{"image_path": "./0.png", "question": "Q?", "ground_truth": gt} for gt in ("140°", "!!!")]
    path = tmp_path / "geoqa.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with MathVerifier() as verifier:
        summary = evaluate(read_geoqa_jsonl(str(path), str(root)), lambda s: ["<answer>140°</answer>"] * len(s),
                           "geoqa", verifier=verifier, output_dir=tmp_path / "out")
    assert (summary.n, summary.correct, summary.errors) == (2, 1, 1)
    records = [json.loads(line) for line in open(summary.results_path)]
    assert records[1]["error"].startswith("gold: ") and "cannot parse the gold" in records[1]["error"]


def test_structural_errors_still_fail_the_read(tmp_path):
    path, root = rec_file(tmp_path, [[1, 2, 3, 4]])
    path.write_text(json.dumps([{"image": "a.jpg", "solution": [1, 2, 3, 4]}]))
    with pytest.raises(ValueError, match=r"tiny_rec.json:1: missing field 'problem'"):
        read_rec_json(str(path), str(root))
