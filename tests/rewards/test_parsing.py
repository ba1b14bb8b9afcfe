"""Answer extraction, box and count parsing on literal strings."""

import time

import pytest

from paddlemix_r1.rewards.parsing import (
    answer_text,
    extract_answer,
    find_answer_block,
    parse_answer_box,
    parse_box,
    parse_count,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a</think><answer> 42 </answer>", "42"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),  # the LAST block
        ("no tags at all ", "no tags at all"),
        ("<answer>unclosed", "<answer>unclosed"),  # not a block: whole text
        ("</answer><answer>x", "</answer><answer>x"),  # closing before opening: not a block
        ("<answer>a<answer>b</answer>", "b"),  # the block opens at the last <answer>
        ("<answer>a</answer> </answer>", "a"),  # and closes at the first </answer> after it
        ("<answer>\nmulti\nline\n</answer>", "multi\nline"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_find_answer_block_distinguishes_empty_from_missing():
    assert find_answer_block("<answer></answer>") == ""
    assert find_answer_block("nothing") is None


@pytest.mark.parametrize(
    "text, box",
    [
        ("[10, 20, 30, 40]", (10, 20, 30, 40)),
        ("[352.14, 33.94, 639.59, 224.86]", (352.14, 33.94, 639.59, 224.86)),  # floats
        ("[ 1.5,2 , .5e1 , 7. ]", (1.5, 2, 5, 7)),
        ('{"bbox_2d": [1, 2, 3, 4], "label": "dog"}', (1, 2, 3, 4)),
        ('[{"bbox_2d": [5, 6, 7, 8]}, {"bbox_2d": [1, 2, 3, 4]}]', (5, 6, 7, 8)),  # first box counts
        ('```json\n[\n  {"bbox_2d": [11, 22, 33, 44], "label": "cat"}\n]\n```', (11, 22, 33, 44)),
        ('{"bbox_2d": ["1", "2", "3", "4"]}', (1, 2, 3, 4)),  # quoted numbers
        ("<|box_start|>(100,200),(300,400)<|box_end|>", (100, 200, 300, 400)),  # Qwen2-VL
        ("(100, 200), (300, 400)", (100, 200, 300, 400)),  # same, special tokens skipped on decode
        ("the box (1,2),(3,4) and then [5, 6, 7, 8]", (1, 2, 3, 4)),  # reading order across forms
        ("[-5, 0, 10, 10]", (-5, 0, 10, 10)),
    ],
)
def test_parse_box_forms(text, box):
    assert parse_box(text) == pytest.approx(box)


@pytest.mark.parametrize("text", ["", "[1, 2, 3]", "[a, b, c, d]", "(1,2)", "[1e999, 0, 1, 1]", "1, 2, 3, 4"])
def test_parse_box_none(text):
    assert parse_box(text) is None


def test_answer_text_strict_and_lenient():
    assert answer_text("<think>a</think><answer> B </answer>") == "B"
    assert answer_text("<answer></answer>") == ""  # an empty block is an (empty) answer
    for text in ("the answer is B", "<answer>B", "<think><answer>B</think>"):
        assert answer_text(text) is None  # no closed block: nothing, in training
    assert answer_text(" the answer is B ", lenient=True) == "the answer is B"  # baseline evaluation
    assert answer_text("<answer>B", lenient=True) == "<answer>B"


def test_parse_answer_box_prefers_the_last_answer_block():
    text = "<think>maybe [0, 0, 1, 1]</think><answer>[10, 10, 20, 20]</answer>"
    assert parse_answer_box(text) == (10, 10, 20, 20)
    # no block: nothing, unless lenient (baseline evaluation): then the whole completion, first box
    assert parse_answer_box("I think [0, 0, 1, 1] then [10, 10, 20, 20]") is None
    assert parse_answer_box("I think [0, 0, 1, 1] then [10, 10, 20, 20]", lenient=True) == (0, 0, 1, 1)


@pytest.mark.parametrize(
    "text",
    [
        "<think>it is [10, 10, 20, 20]</think>",  # the box only in the thinking
        "<think>ok</think><answer>[10, 10, 20, 20]",  # an unclosed answer
        "<think>[10, 10, 20, 20]</think><answer>the car</answer>",  # a block without a box
    ],
)
def test_d3_box_outside_the_answer_block_is_no_answer(text):
    """D3 (R1-V eval logs): the whole-text fallback gave these full REC credit in training."""
    assert parse_answer_box(text) is None


@pytest.mark.parametrize(
    "text, count",
    [
        ("<answer>3</answer>", 3),
        ("<answer> 3.0 </answer>", 3),
        ("<answer>three</answer>", 3),
        ("<answer>Three</answer>", 3),
        ("<answer>twenty-one</answer>", 21),
        ("<answer>seventeen</answer>", 17),
        ("<answer>There are 3 objects.</answer>", 3),
        ("<answer>three (3)</answer>", 3),  # several numbers that agree
        ("<answer>3 or 4</answer>", None),  # D2: ambiguous (the first number used to count)
        ("<answer>3 objects (2 red, 1 blue)</answer>", None),  # D2: ambiguous too
        ("There are 3 objects.", None),  # D2: no answer block, no answer
        ("I count 1, 2, 3, 4 ... so there are four", None),
        ("<answer>3", None),  # unclosed
        ("<answer>none</answer>", 0),
        ("<answer>3.5</answer>", None),
        ("<answer>many</answer>", None),
        ("", None),
        ("<answer>x3</answer>", None),  # a digit inside a word is not a number
    ],
)
def test_parse_count(text, count):
    assert parse_count(text) == count


@pytest.mark.parametrize(
    "text, count",
    [
        ("There are 3 objects.", 3),
        ("I count 1, 2, 3, 4 ... so there are four", 4),  # last number of free text
        ("<answer>3 or 4</answer>", None),  # a block is read the same way as in training
        ("<answer>3</answer>", 3),
    ],
)
def test_parse_count_lenient_for_baseline_evaluation(text, count):
    assert parse_count(text, lenient=True) == count


@pytest.mark.parametrize(
    "text",
    [
        "<answer>" * 20000,
        "[1" + " " * 20000 + "x",
        "(1,2)" + " " * 20000 + "x",
        "<think>" + "</think><answer>" * 5000,
        "1" * 50000 + "x",
    ],
    ids=["open-tags", "spaces-in-list", "spaces-after-point", "repeated-blocks", "digit-run"],
)
def test_parsers_stay_fast_on_degenerate_text(text):
    start = time.perf_counter()
    extract_answer(text)
    parse_box(text)
    parse_count(text)
    parse_count(text, lenient=True)
    parse_answer_box(text, lenient=True)
    assert time.perf_counter() - start < 1.0
