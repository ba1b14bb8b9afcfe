"""format / rec_format rewards on literal strings."""

import time

import pytest

from paddlemix_r1.rewards import get_reward


@pytest.mark.parametrize(
    "completion, score",
    [
        ("<think>reasoning</think><answer>3</answer>", 1.0),
        ("<think>a\nb</think>\n\n<answer>\n3\n</answer>", 1.0),  # DOTALL, whitespace between blocks
        ("  <think>a</think><answer>3</answer>\n", 1.0),  # surrounding whitespace ignored
        ("<think></think><answer></answer>", 1.0),
        ("<answer>3</answer>", 0.0),  # no think
        ("<think>a</think>", 0.0),  # no answer
        ("<think>a</think>text<answer>3</answer>", 0.0),  # text between the blocks
        ("<think>a</think><answer>3</answer> trailing", 0.0),  # text after the answer
        ("prefix <think>a</think><answer>3</answer>", 0.0),
        ("<answer>3</answer><think>a</think>", 0.0),  # wrong order
        ("<think>a</think><answer>3", 0.0),  # unclosed
        ("", 0.0),
    ],
)
def test_format(completion, score):
    assert get_reward("format")([completion]) == [score]


@pytest.mark.parametrize(
    "completion, score",
    [
        ("<think>a</think><answer>[1, 2, 3, 4]</answer>", 1.0),
        ("<think>a</think><answer>[1.5, 2.5, 3.5, 4.5]</answer>", 1.0),  # floats count as a box
        ('<think>a</think><answer>```json\n[{"bbox_2d": [1, 2, 3, 4]}]\n```</answer>', 1.0),
        ("<think>a</think><answer><|box_start|>(1,2),(3,4)<|box_end|></answer>", 1.0),
        ("<think>a</think><answer>the dog</answer>", 0.0),  # format fine, no box
        ("<think>[1, 2, 3, 4]</think><answer>left</answer>", 0.0),  # box only in the thinking
        ("<answer>[1, 2, 3, 4]</answer>", 0.0),  # box fine, format not
    ],
)
def test_rec_format(completion, score):
    assert get_reward("rec_format")([completion]) == [score]


def test_format_ignores_columns_and_scores_each_completion():
    out = get_reward("format")(["<think>a</think><answer>b</answer>", "x"], solution=["1", "2"], image=["a", "b"])
    assert out == [1.0, 0.0]


def test_format_is_linear_on_repeated_tags():
    text = "<think>" + "</think><answer>x</answer>" * 20000 + " tail"
    start = time.perf_counter()
    assert get_reward("format")([text]) == [0.0]
    assert get_reward("format")([text[: -len(" tail")]]) == [1.0]
    assert time.perf_counter() - start < 1.0


def test_completions_must_be_strings():
    with pytest.raises(TypeError, match=r"completions\[0\]"):
        get_reward("format")([[{"role": "assistant", "content": "x"}]])
    with pytest.raises(TypeError, match="list of strings"):
        get_reward("format")("<think>a</think><answer>b</answer>")
