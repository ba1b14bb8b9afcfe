"""counting reward on literal strings."""

import numpy as np
import pytest

from paddlemix_r1.rewards import get_reward


@pytest.mark.parametrize(
    "completion",
    [
        "<think>I see three cubes</think><answer>3</answer>",
        "<answer>3.0</answer>",
        "<answer>three</answer>",
        "<answer>There are 3 objects.</answer>",
        "<answer>three (3)</answer>",
        "<answer> 3 </answer>",
        "<think>1, 2, 5?</think><answer>3</answer>",  # numbers in the thinking do not count
    ],
)
@pytest.mark.parametrize("gold", [3, "3", "<answer> 3 </answer>", 3.0, np.int64(3)])
def test_counting_correct(completion, gold):
    assert get_reward("counting")([completion], solution=[gold]) == [1.0]


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>4</answer>",
        "<answer>3.5</answer>",
        "<answer>some</answer>",
        "<answer>3</answer><answer>4</answer>",  # the last block counts
        "",
        "<answer></answer>",
    ],
)
def test_counting_wrong(completion):
    assert get_reward("counting")([completion], solution=[3]) == [0.0]


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>3 or 4</answer>",  # scored 1 before: the first number of the block counted
        "<answer>4 or 3</answer>",
        "<answer>3 objects (2 red, 1 blue)</answer>",
        "<answer>3, maybe 4</answer>",
    ],
)
def test_d2_ambiguous_answer_scores_zero(completion):
    assert get_reward("counting")([completion], solution=[3]) == [0.0]


@pytest.mark.parametrize(
    "completion",
    [
        "There are 3 objects.",  # scored 1 before: the last number of the free text counted
        "<think>1, 2, 3</think> so 3",
        "<think>I count 3</think><answer>3",  # unclosed block
    ],
)
def test_d2_missing_answer_block_scores_zero_in_training(completion):
    assert get_reward("counting")([completion], solution=[3]) == [0.0]


def test_anchor_digit_regex_case():
    """R1-V / PaddleMIX eval read only r'<answer>\\s*(\\d+)\\s*</answer>': these all scored 0 there."""
    completions = ["<answer>3.0</answer>", "<answer>three</answer>", "<answer>There are 3 objects.</answer>"]
    assert get_reward("counting")(completions, solution=[3, 3, 3]) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("gold", ["many", True, 2.5, None, "<answer></answer>"])
def test_bad_gold_fails_loudly(gold):
    with pytest.raises((TypeError, ValueError), match=r"solution\[0\]"):
        get_reward("counting")(["3"], solution=[gold])


def test_missing_solution_column():
    with pytest.raises(TypeError, match="solution"):
        get_reward("counting")(["3"])
