"""End-to-end evaluate() on tiny sets built in the test, with injected known model outputs."""

import json

import pytest
from PIL import Image

from paddlemix_r1.eval.data import read_counting_jsonl, read_eval_rows, read_geoqa_jsonl, read_rec_json
from paddlemix_r1.eval.evaluator import evaluate, format_table
from paddlemix_r1.processing.image_processor import smart_resize
from paddlemix_r1.rewards.math_answer import MathVerifier
from paddlemix_r1.tasks import get_prompt


def resize(width, height):
    """What the image processor of the run would give (default pixel limits)."""
    h, w = smart_resize(height, width)
    return w, h


class FakeModel:
    """generate_fn returning canned outputs per row id, recording what it was given."""

    def __init__(self, outputs):
        self.outputs = outputs
        self.calls = []

    def __call__(self, samples):
        self.calls.append(samples)
        return [text for s in samples for text in self.outputs[s.row.id]]


@pytest.fixture
def rec_rows(rec_set):
    path, root = rec_set
    # b.png is re-written at 2000x1000: smart_resize shrinks it to 1400x700, so a Qwen2.5-VL box
    # is right only if it is mapped back to the original frame.
    Image.new("RGB", (2000, 1000), (20, 90, 200)).save(root / "b.png")
    rows = read_rec_json(str(path), str(root))
    assert resize(2000, 1000) == (1400, 700)
    return rows


REC_OUTPUTS = {
    # a.jpg 640x480 -> 644x476: the gold [100,100,300,200] written in resized pixels, rounded
    "tiny_rec/0": ["<think>red car, left</think><answer>[101, 99, 302, 198]</answer>"],
    # b.png 2000x1000 -> 1400x700: gold [100,100,300,200] is [70,70,210,140] resized (IoU 1 after
    # mapping back; read as original pixels it would be IoU 0.16)
    "tiny_rec/1": [
        '<think>dog</think><answer>```json\n[{"bbox_2d": [70.0, 70.0, 210.0, 140.0], "label": "dog"}]\n```</answer>'
    ],
    # c.png 300x200: a box elsewhere
    "tiny_rec/2": ["<think>cup</think><answer>[200, 10, 290, 60]</answer>"],
}


def test_rec_end_to_end(rec_rows, tmp_path):
    model = FakeModel(REC_OUTPUTS)
    out_dir = tmp_path / "out"
    summary = evaluate(
        rec_rows,
        model,
        "rec",
        method="r1",
        dataset="tiny_rec",
        batch_size=2,
        model_family="qwen2_5_vl",
        resize=resize,
        output_dir=out_dir,
        run_name="run",
        progress=False,
    )
    # hand count: rows 0 and 1 correct, row 2 wrong, rows 3 (broken file) and 4 (missing) errors
    assert (summary.n, summary.correct, summary.errors) == (5, 2, 2)
    assert summary.accuracy == pytest.approx(2 / 5)
    assert summary.prompt_template == get_prompt("rec", "r1").template

    # batches of 2 rows; rows with image errors never reach the model
    assert [[s.row.id for s in call] for call in model.calls] == [["tiny_rec/0", "tiny_rec/1"], ["tiny_rec/2"]]
    first = model.calls[0][0]
    assert first.image_size == (640, 480) and first.resized_size == (644, 476)
    assert isinstance(first.image, Image.Image) and first.image.mode == "RGB"
    assert first.prompt == get_prompt("rec", "r1").template.format(Question="the red car")
    assert first.conversation == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": first.prompt}]}
    ]

    records = [json.loads(line) for line in (out_dir / "run.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"tiny_rec/{i}" for i in range(5)]
    r1 = records[1]
    assert r1["correct"] is True and r1["score"] == pytest.approx(1.0)
    assert r1["parsed_answer"]["box"] == [70.0, 70.0, 210.0, 140.0]
    assert r1["parsed_answer"]["box_original"] == pytest.approx([100.0, 100.0, 300.0, 200.0])
    assert r1["image_size"] == [2000, 1000] and r1["resized_size"] == [1400, 700]
    assert r1["gold"] == [100.0, 100.0, 300.0, 200.0]
    assert r1["raw_output"] == REC_OUTPUTS["tiny_rec/1"][0]
    assert r1["prompt"].startswith("the dog First output the thinking process")
    assert records[2]["correct"] is False and records[2]["score"] == 0.0
    for broken in records[3:]:
        assert broken["correct"] is False and broken["error"].startswith("image: ")
    assert "missing.jpg" in records[4]["error"]

    saved = json.loads((out_dir / "run.summary.json").read_text())
    assert saved["accuracy"] == pytest.approx(0.4)
    assert (saved["n"], saved["errors"], saved["dataset"], saved["method"]) == (5, 2, "tiny_rec", "r1")
    assert saved["settings"]["model_family"] == "qwen2_5_vl"


def test_rec_without_the_resize_mapping_would_score_lower(rec_rows):
    """Same outputs scored as if the boxes were original pixels (the anchors' REC eval bug)."""
    model = FakeModel(REC_OUTPUTS)
    identity = evaluate(rec_rows, model, "rec", model_family="qwen2_5_vl", resize=lambda w, h: (w, h), progress=False)
    assert identity.correct == 1  # only a.jpg (644x476 is close to 640x480) survives


def test_rec_qwen2_vl_normalized_boxes(rec_rows):
    outputs = {
        # 0..1000 normalized: gold [100,100,300,200] of 640x480 is (156,208),(469,417)
        "tiny_rec/0": ["<|box_start|>(156,208),(469,417)<|box_end|>"],
        "tiny_rec/1": ["<answer>[50, 100, 150, 200]</answer>"],  # 2000x1000: exactly the gold
        "tiny_rec/2": ["<answer>no idea</answer>"],
    }
    summary = evaluate(rec_rows, FakeModel(outputs), "rec", model_family="qwen2_vl", progress=False)
    # r1 reads the answer block only, as training does: row 0's untagged native box does not count
    assert (summary.correct, summary.errors) == (1, 2)
    baseline = evaluate(rec_rows, FakeModel(outputs), "rec", method="baseline", model_family="qwen2_vl",
                        progress=False)
    assert (baseline.correct, baseline.errors) == (2, 2)  # baseline also reads untagged answers
    tagged = {**outputs, "tiny_rec/0": ["<answer><|box_start|>(156,208),(469,417)<|box_end|></answer>"]}
    summary = evaluate(rec_rows, FakeModel(tagged), "rec", model_family="qwen2_vl", progress=False)
    assert (summary.correct, summary.errors) == (2, 2)


def test_pass_at_k(rec_rows, tmp_path):
    outputs = {
        "tiny_rec/0": ["<answer>[0, 0, 5, 5]</answer>", REC_OUTPUTS["tiny_rec/0"][0]],  # 2nd is right
        "tiny_rec/1": ["nothing", "still nothing"],
        # c.png 300x200 -> 308x196: gold [30,40,150,160] resized is [30.8,39.2,154,156.8]
        "tiny_rec/2": ["<answer>[31, 39, 154, 157]</answer>", "<answer>[0, 0, 1, 1]</answer>"],  # 1st is right
    }
    summary = evaluate(
        rec_rows,
        FakeModel(outputs),
        "rec",
        num_samples=2,
        model_family="qwen2_5_vl",
        resize=resize,
        output_dir=tmp_path,
        run_name="k2",
        progress=False,
    )
    assert (summary.correct, summary.n, summary.num_samples) == (2, 5, 2)
    records = [json.loads(line) for line in (tmp_path / "k2.jsonl").read_text().splitlines()]
    assert [len(r["samples"]) for r in records] == [2, 2, 2, 0, 0]
    assert [s["correct"] for s in records[0]["samples"]] == [False, True]
    assert records[0]["raw_output"] == outputs["tiny_rec/0"][1]  # the record shows a correct sample
    assert "pass@2" in format_table([summary])


def test_baseline_prompt_uses_the_caption(rec_rows):
    model = FakeModel(REC_OUTPUTS)
    evaluate(rec_rows, model, "rec", method="baseline", model_family="qwen2_5_vl", resize=resize, progress=False)
    assert model.calls[0][0].prompt == "Locate red car, output its bbox coordinates using JSON format."


def test_missing_caption_fails_before_generation(rec_rows):
    rows = list(rec_rows)
    rows[2] = type(rows[2])(**{**rows[2].__dict__, "caption": None})
    model = FakeModel(REC_OUTPUTS)
    with pytest.raises(ValueError, match="normal_caption"):
        evaluate(rows, model, "rec", method="baseline", model_family="qwen2_5_vl", resize=resize, progress=False)
    assert model.calls == []


def test_generate_fn_must_return_k_per_sample(rec_rows):
    def short(samples):
        return ["x"] * (len(samples) - 1)

    with pytest.raises(RuntimeError, match="generate_fn returned"):
        evaluate(rec_rows, short, "rec", model_family="qwen2_5_vl", resize=resize, progress=False)


def test_rec_argument_checks(rec_rows):
    with pytest.raises(ValueError, match="model_family"):
        evaluate(rec_rows, FakeModel(REC_OUTPUTS), "rec", progress=False)
    with pytest.raises(ValueError, match="resize"):
        evaluate(rec_rows, FakeModel(REC_OUTPUTS), "rec", model_family="qwen2_5_vl", progress=False)
    with pytest.raises(ValueError, match="task"):
        evaluate(rec_rows, FakeModel(REC_OUTPUTS), "ocr", progress=False)
    with pytest.raises(ValueError, match="no rows"):
        evaluate([], FakeModel(REC_OUTPUTS), "counting", progress=False)


def test_counting_end_to_end(counting_set, tmp_path):
    path, root = counting_set
    rows = read_counting_jsonl(str(path), str(root))
    outputs = {
        "superclevr_tiny/0": ["<think>..</think><answer>3</answer>"],
        "superclevr_tiny/1": ["<think>..</think><answer>five</answer>"],  # a \d+ extractor misses this
        "superclevr_tiny/2": ["<think>..</think><answer>6</answer>"],
    }
    summary = evaluate(
        rows, FakeModel(outputs), "counting", dataset="superclevr_tiny", output_dir=tmp_path, progress=False
    )
    assert (summary.correct, summary.n, summary.errors) == (2, 3, 0)
    assert summary.prompt_template == (
        "{Question} First output the thinking process in <think> </think> and final answer (number) "
        "in <answer> </answer> tags."
    )
    records = [json.loads(line) for line in (tmp_path / "superclevr_tiny_counting_r1.jsonl").read_text().splitlines()]
    assert [r["parsed_answer"] for r in records] == [3, 5, 6]
    assert [r["gold"] for r in records] == [3, 5, 7]


def test_geoqa_end_to_end(geoqa_set, tmp_path):
    path, root = geoqa_set
    rows = read_geoqa_jsonl(str(path), str(root))
    outputs = {
        "geoqa_tiny/0": ["<think>180-40</think><answer>140°</answer>"],  # gold "140°": \d+ vs "140°" failed
        "geoqa_tiny/1": ["<think>..</think><answer>2\\sqrt{3}</answer>"],  # gold "2√{3}"
        "geoqa_tiny/2": ["<think>..</think><answer>1.5</answer>"],  # gold 4/3 cm: wrong
    }
    with MathVerifier(timeout_s=3.0) as verifier:
        summary = evaluate(
            rows, FakeModel(outputs), "geoqa", verifier=verifier, output_dir=tmp_path, run_name="geo", progress=False
        )
    assert (summary.correct, summary.n) == (2, 3)
    assert summary.accuracy == pytest.approx(2 / 3)
    assert summary.scoring_issues == {}
    records = [json.loads(line) for line in (tmp_path / "geo.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in records] == [True, True, False]
    assert records[0]["samples"][0]["status"] == "correct"
    assert records[0]["parsed_answer"] == "140"


def test_general_rows_are_scored_by_their_own_accuracy_method(tmp_path):
    """VLM-R1 JSONL read by the training reader; each row scored by its accu_reward_method."""
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "a.png")
    rows = [
        {"image": "a.png", "accu_reward_method": "mcq",
         "conversations": [{"from": "human", "value": "<image>Colour? A. red B. blue"},
                           {"from": "gpt", "value": "<answer> A </answer>"}]},
        {"image": "a.png", "accu_reward_method": "yes_no",
         "conversations": [{"from": "human", "value": "<image>Is it blue?"}, {"from": "gpt", "value": "no"}]},
    ]
    (tmp_path / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = read_eval_rows(str(tmp_path / "vqa.jsonl"), str(tmp_path), "general")
    assert [(r.solution, r.fields["accu_reward_method"]) for r in rows] == [("A", "mcq"), ("no", "yes_no")]
    outputs = {"vqa/0": ["<think>red</think><answer>(A)</answer>"], "vqa/1": ["<answer>I do not know</answer>"]}
    model = FakeModel(outputs)
    summary = evaluate(rows, model, "general", method="default", progress=False)
    assert (summary.correct, summary.n) == (1, 2)  # "not" is not "no" (VLM-R1's yes_no said it was)
    assert model.calls[0][0].prompt == get_prompt("general", "default").template.format(
        Question="Colour? A. red B. blue")
    with pytest.raises(ValueError, match="method must be a prompt method of task 'general'"):
        evaluate(rows, model, "general", progress=False)  # r1 is not one of VLM-R1's templates
