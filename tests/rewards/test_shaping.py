"""length (cosine, with the real accuracy) and repetition on literal completions."""

import json
import math

import pytest

from paddlemix_r1.rewards import get_reward
from paddlemix_r1.rewards.shaping import cosine_length_reward, make_length_reward


def A(text):
    return f"<think>...</think><answer>{text}</answer>"


# ---- length --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, accuracy, expected",
    [
        (0, 1.0, 1.0),
        (512, 1.0, 0.75),
        (1024, 1.0, 0.5),
        (0, 0.0, -0.5),
        (512, 0.0, -0.25),
        (1024, 0.0, 0.0),
        (256, 0.7, 1.0 - 0.5 * (1 - math.cos(math.pi / 4)) / 2),  # 0.7 counts as correct
        (256, 0.69, -0.5 + 0.5 * (1 - math.cos(math.pi / 4)) / 2),
    ],
)
def test_cosine_formula(length, accuracy, expected):
    assert cosine_length_reward(length, accuracy) == pytest.approx(expected)


def test_length_is_clamped_past_the_maximum():
    """VLM-R1 does not clamp: at L = 2048 its cosine is back at the L = 0 value."""
    assert cosine_length_reward(2048, 1.0) == pytest.approx(0.5)
    assert cosine_length_reward(2048, 0.0) == pytest.approx(0.0)


def test_length_uses_the_accuracy_actually_computed():
    """VLM-R1's cosine_reward overwrites the accuracy with 1.0: a short WRONG answer got the top
    reward 1.0 instead of -0.5."""
    completions = [A("15"), A("14")]
    scores = get_reward("length")(
        completions, solution=["15", "15"], accu_reward_method=["default", "default"], completion_length=[0, 0]
    )
    assert scores == [pytest.approx(1.0), pytest.approx(-0.5)]


def test_length_follows_each_rows_method():
    cat = json.dumps([{"bbox_2d": [0, 0, 10, 10], "label": "cat"}])
    completions = [A("yes"), A(cat), A("no")]
    scores = get_reward("length")(
        completions,
        solution=["yes", cat, "yes"],
        accu_reward_method=["yes_no", "od_ap", "yes_no"],
        completion_length=[1024, 1024, 1024],
    )
    assert scores == [pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.0)]


def test_length_with_a_custom_accuracy_and_maximum():
    length = make_length_reward(lambda completions, **_: [1.0] * len(completions), max_length=100)
    assert length(["x", "y"], completion_length=[0, 100]) == [pytest.approx(1.0), pytest.approx(0.5)]


@pytest.mark.parametrize("bad", [[-1], [1.5], [True], ["12"]])
def test_length_needs_token_counts(bad):
    with pytest.raises(ValueError, match="completion_length"):
        get_reward("length")([A("15")], solution=["15"], accu_reward_method=["default"], completion_length=bad)


def test_length_missing_columns_raise():
    with pytest.raises(TypeError, match="completion_length"):
        get_reward("length")([A("15")], solution=["15"], accu_reward_method=["default"])
    with pytest.raises(TypeError, match="accu_reward_method"):
        get_reward("length")([A("15")], solution=["15"], completion_length=[3])


# ---- repetition ----------------------------------------------------------------------------------


def boxes(*items):
    return "```json\n" + json.dumps([{"bbox_2d": b, "label": lab} for b, lab in items]) + "\n```"


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("", 0.0),
        ("one two three four five", 0.0),  # under 6 words
        ("a b c d e f g h", 0.0),  # 3 distinct 6-grams
        ("a b c d e f a b c d e f a b c d e f", -(1 - 6 / 13)),
        (A(boxes(([0, 0, 1, 1], "cat"), ([2, 2, 3, 3], "dog"))), 0.0),
        (A(boxes(([0, 0, 1, 1], "cat"), ([0, 0, 1, 1], "cat"), ([0, 0, 1, 1], "cat"), ([2, 2, 3, 3], "cat"))), -0.5),
        # the same box under two labels is not a repeat
        (A(boxes(([0, 0, 1, 1], "cat"), ([0, 0, 1, 1], "dog"))), 0.0),
        # an unfenced list in the answer block
        (
            '<answer>[{"bbox_2d": [0, 0, 1, 1], "label": "cat"}, {"bbox_2d": [0, 0, 1, 1], "label": "cat"}]</answer>',
            -0.5,
        ),
    ],
)
def test_repetition(completion, expected):
    assert get_reward("repetition")([completion]) == [pytest.approx(expected)]


def test_repetition_json_without_box_items_falls_back_to_words():
    """VLM-R1 raises on ``'bbox_2d' in 1`` for a list of numbers and returns 0.0 for a list of
    dicts without boxes; both read the words here."""
    text = "```json\n[1, 2, 3]\n``` " + "same words again and again here " * 3
    assert get_reward("repetition")([text])[0] < 0.0
