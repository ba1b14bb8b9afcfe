"""Curr-ReFT's tasks: gold forms of every stage, the stage prompts, the metric by gold kind, rows built in code."""

import pytest

from paddlemix_r1.tasks import STAGE_METHODS, ScoreContext, get_task, normalize_rows, row_prompt

ROW = {"problem": "Is the cat on the mat?"}


@pytest.mark.parametrize("task, value, canonical", [
    ("detection", "<thinking>left</thinking><answer>[1, 2, 3, 4]</answer>", "[1, 2, 3, 4]"),
    ("detection", [1, 2, 3, 4], "[1, 2, 3, 4]"),
    ("detection", "<answer> yes </answer>", "yes"),
    ("detection", "<answer>B</answer>", "B"),
    ("classify", "<thinking>t</thinking><answer>cat, dog</answer>", "cat, dog"),
    ("classify", "<answer>A, C</answer>", "A, C"),
    ("math", 4, "4"),  # Curr-ReFT's SuperCLEVR copy: solution: <int>
    ("math", "<thinking>3 x 4</thinking><answer>12</answer>", "12"),
])
def test_gold_forms_of_every_stage(task, value, canonical):
    assert get_task(task).parse_solution(value) == canonical


@pytest.mark.parametrize("task, value, message", [
    ("detection", "<answer>the red car</answer>", "must hold an"),
    ("math", "<answer> </answer>", "empty"),
    ("classify", None, "string or a number"),
])
def test_malformed_golds_name_the_row(task, value, message):
    with pytest.raises((TypeError, ValueError), match=message) as info:
        get_task(task).parse_solution(value, where="f.jsonl:3: field 'solution'")
    assert str(info.value).startswith("f.jsonl:3")


def test_every_task_has_the_stage_methods_and_stage_rewards():
    assert STAGE_METHODS == ("judge", "choice", "open")
    for name in ("detection", "classify", "math"):
        task = get_task(name)
        assert task.methods == ("judge", "choice", "open", "r1", "baseline") and task.train_method == "open"
        assert task.prompt(ROW, "judge").endswith("Ensure your final answer is exactly 'yes' or 'no'.")
        assert task.rewards == {"open": 1.0, "curr_format": 1.0}
    assert "select all options" in get_task("classify").prompt(ROW, "choice")
    assert "select all options" not in get_task("math").prompt(ROW, "choice")
    assert get_task("detection").prompt(ROW, "open").endswith("Output the final answer in JSON format in <answer> "
                                                              "</answer> tags.")
    assert get_task("math").prompt(ROW, "open") == get_task("math").prompt(ROW, "r1")


def test_metric_follows_the_gold_kind():
    det, cls, math = get_task("detection"), get_task("classify"), get_task("math")
    ctx = ScoreContext(model_family="qwen2_vl", image_size=(2000, 1000))
    assert det.score("<answer>No</answer>", "no", ctx).correct
    assert not det.score("<answer>yes or no</answer>", "no", ctx).correct
    s = det.score("<answer>{\"bbox_2d\": [50, 100, 150, 200]}</answer>", "[100, 100, 300, 200]", ctx)
    assert s.correct and s.score == pytest.approx(1.0)
    with pytest.raises(ValueError, match="model_family"):
        det.score("<answer>[1, 2, 3, 4]</answer>", "[1, 2, 3, 4]", ScoreContext())
    assert cls.score("<answer>B, A</answer>", "A, B", ScoreContext()).correct
    s = cls.score("<answer>cat, dog, bird</answer>", "cat, dog", ScoreContext())
    assert not s.correct and s.score == pytest.approx(2 / 3)  # Curr-ReFT's eval: correct (gold is a subset)
    assert math.score("the answer is B", "B", ScoreContext(lenient=True)).correct  # baseline reads the whole text
    assert not math.score("the answer is B", "B", ScoreContext()).correct


def test_rows_built_in_code():
    rows = [{"id": "a", "images": ["1.png"], "problem": "Where is the dog?", "task": "detection",
             "solution": "<thinking>t</thinking><answer>[1, 2, 3, 4]</answer>"},
            {"id": "b", "images": ["2.png"], "problem": "Is it a cat?", "task": "classify",
             "solution": "<answer>yes</answer>"}]
    out = normalize_rows(rows, default_task="math")
    assert [(r["task"], r["solution"]) for r in out] == [("detection", "[1, 2, 3, 4]"), ("classify", "yes")]
    assert row_prompt(out[1], "judge").startswith("Is it a cat? First output the thinking process")
