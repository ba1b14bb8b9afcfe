"""Curr-ReFT's stage rewards on literal strings, each bug of the released code next to the test that we do not copy it.

The bugs (research file Part 1 §1.4, Stage*_math_resize.py of ding523/Curr_REFT):
- stage 3 math: two empty choice-letter lists compare equal, so any tagged answer to a numeric gold scored 1.0;
- stage 3 classify: ``ast.literal_eval`` without ``import ast``: every list answer raised NameError and scored 0;
- stage 2: letters compared as an ordered list, so "B,A" != "A,B";
- stage 1: "yes" looked for first, so an answer saying both words scored on every yes-gold row;
- format: every detection row needs a JSON box, also the judge / choice rows whose answer is yes/no or letters.
"""

import pytest

from paddlemix_r1.rewards import get_reward
from paddlemix_r1.rewards.curr_reft import (
    class_tokens,
    gold_kind,
    has_json_box,
    judgement,
    make_open_reward,
    option_letters,
)
from paddlemix_r1.rewards.math_answer import MathVerifier


def think(answer: str) -> str:
    return f"<think>reasoning</think><answer>{answer}</answer>"


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(timeout_s=3.0) as v:
        yield v


# ---- judge ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, gold, expected", [
    ("yes", "<answer>yes</answer>", 1.0),
    ("Yes.", "<answer>yes</answer>", 1.0),
    ("True", "<answer>yes</answer>", 1.0),
    ("correct", "<answer>yes</answer>", 1.0),
    ("No", "<answer>no</answer>", 1.0),
    ("false", "<answer>no</answer>", 1.0),
    ("Incorrect", "<answer>no</answer>", 1.0),  # "incorrect" is not "correct": a word boundary
    ("incorrect", "<answer>yes</answer>", 0.0),
    ("no", "<answer>yes</answer>", 0.0),
    ("yes or no", "<answer>yes</answer>", 0.0),  # theirs: 1.0 (yes checked first): hedging paid
    ("yes/no", "<answer>no</answer>", 0.0),
    ("I do not know", "<answer>no</answer>", 0.0),  # "not", "know" are not "no"
    ("nobody", "<answer>no</answer>", 0.0),
    ("", "<answer>no</answer>", 0.0),
    ("yes", "<thinking>because</thinking><answer>yes</answer>", 1.0),
    ("yes", "yes", 1.0),  # a bare gold
])
def test_judge(answer, gold, expected):
    assert get_reward("judge")([think(answer)], solution=[gold]) == [expected]


def test_judge_reads_only_the_answer_block():
    judge = get_reward("judge")
    assert judge(["<think>yes</think> no tags: yes"], solution=["<answer>yes</answer>"]) == [0.0]
    assert judge(["<think>yes, clearly</think><answer>no</answer>"], solution=["<answer>no</answer>"]) == [1.0]
    assert judgement("Yes, it is TRUE") == "yes" and judgement("maybe") is None


def test_judge_refuses_a_gold_that_is_no_judgement():
    with pytest.raises(ValueError, match=r"judge: solution\[0\]: a judge gold answer must say yes or no"):
        get_reward("judge")([think("yes")], solution=["<answer>B</answer>"])


def test_math_verify_reads_nothing_from_judge_golds(verifier):
    """Why the judge reward has no math_verify second chance: theirs verifies the completion against
    parse('<answer>yes</answer>'), and math_verify reads no value from yes / no, so it never passes."""
    for gold in ("yes", "no", "<answer>yes</answer>"):
        assert verifier.check([gold], ["yes"]).status == "gold_unparsed"


# ---- choice --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, gold, expected", [
    ("B,A", "<answer>A,B</answer>", 1.0),  # theirs: 0.0 (ordered lists)
    ("A, B", "<answer>B, A</answer>", 1.0),
    ("(C) and (A)", "<answer>A, C</answer>", 1.0),
    ("a, c", "<answer>A,C</answer>", 1.0),  # a bare list of letters may be lower case
    ("A", "<answer>A,C</answer>", 0.0),  # select-all: all or nothing, as theirs
    ("A, B, C, D, E", "<answer>A,C</answer>", 0.0),  # listing everything does not pay
    ("B", "<answer>B</answer>", 1.0),
    ("The answer is B.", "<answer>B</answer>", 1.0),
    ("A or B", "<answer>B</answer>", 0.0),
    ("a cat", "<answer>A</answer>", 0.0),  # the article is no option
    ("F", "<answer>A</answer>", 0.0),
    ("", "<answer>A</answer>", 0.0),
])
def test_choice(answer, gold, expected):
    assert get_reward("choice")([think(answer)], solution=[gold]) == [expected]


def test_choice_without_answer_block_scores_0_and_a_gold_without_letters_raises():
    choice = get_reward("choice")
    assert choice(["B"], solution=["<answer>B</answer>"]) == [0.0]
    with pytest.raises(ValueError, match="must name option letters"):
        choice([think("B")], solution=["<answer>12</answer>"])  # theirs: '' == '' for any tagged answer
    assert option_letters("B,A") == option_letters("A, B") == {"A", "B"}


# ---- open ----------------------------------------------------------------------------------------------


def test_open_math_numeric_gold_is_not_any_tagged_answer(verifier):
    reward = make_open_reward(verifier)
    gold = "<thinking>3 x 4</thinking><answer>12</answer>"
    cols = {"solution": [gold] * 5, "task": ["math"] * 5}
    completions = [think("15"), think("12"), think(""), think("12.0"), "12"]
    # theirs: 1.0 for "15" and "" (empty letter sets, substring test), and for "12"
    assert reward(completions, **cols) == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_open_math_choice_latex_and_word_golds(verifier):
    reward = make_open_reward(verifier)
    assert reward([think("(B)"), think("C")], solution=["<answer>B</answer>"] * 2, task=["math"] * 2) == [1.0, 0.0]
    assert reward([think("\\frac{1}{2}")], solution=["<answer>0.5</answer>"], task=["math"]) == [1.0]
    assert reward([think("Blue."), think("red")], solution=["<answer>blue</answer>"] * 2,
                  task=["math"] * 2) == [1.0, 0.0]


@pytest.mark.parametrize("answer, gold, expected", [
    ("['cat', 'dog']", "<answer>cat, dog</answer>", 1.0),  # theirs: NameError (ast not imported) -> 0
    ('["dog", "cat"]', "<answer>cat dog</answer>", 1.0),
    ("[cat, dog]", "<answer>cat, dog</answer>", 1.0),  # no literal: tokens without brackets
    ("cat", "<answer>cat, dog</answer>", 0.5),
    ("cat, dog, bird", "<answer>cat, dog</answer>", 2 / 3),
    ("Cat、Dog.", "<answer>cat，dog</answer>", 1.0),
    ("traffic light", "<answer>traffic light, car</answer>", 2 / 3),  # multi-word classes split, as theirs
    ("['cat', ['dog']]", "<answer>cat</answer>", 0.5),  # not a list of strings: read as text
    ("[" * 500, "<answer>cat</answer>", 0.0),
    ("", "<answer>cat</answer>", 0.0),
])
def test_open_classify(answer, gold, expected):
    scores = get_reward("open")([think(answer)], solution=[gold], task=["classify"])
    assert scores == [pytest.approx(expected)]


def test_class_tokens_never_evaluate_code():
    # literals only (json, ast.literal_eval): a call is no list, so the text is split into words
    assert class_tokens("[__import__('os').system('echo hi')]") == {"__import__('os').system('echo", "hi"}


def test_open_detection_iou_above_half_in_the_model_frame():
    reward = get_reward("open")
    gold = "<thinking>the dog</thinking><answer>[100, 100, 300, 200]</answer>"
    qwen25 = {"model_family": ["qwen2_5_vl"], "image_size": [(2000, 1000)], "resized_size": [(1400, 700)]}
    # resized frame: [70, 70, 210, 140] is the gold box exactly; floats parse (theirs: ints only)
    assert reward([think('{"bbox_2d": [70.0, 70.0, 210.0, 140.0]}')], solution=[gold], task=["detection"],
                  **qwen25) == [1.0]
    assert reward([think("[100, 100, 300, 200]")], solution=[gold], task=["detection"], **qwen25) == [0.0]
    qwen2 = {"model_family": ["qwen2_vl"], "image_size": [(2000, 1000)]}
    assert reward([think("[50, 100, 150, 200]")], solution=[gold], task=["detection"], **qwen2) == [1.0]
    # IoU exactly 0.5 is not > 0.5: [100,100,300,200] vs [100,100,200,200] in original pixels
    same_frame = {"model_family": ["qwen2_5_vl"], "image_size": [(2000, 1000)], "resized_size": [(2000, 1000)]}
    assert reward([think("[100, 100, 200, 200]")], solution=[gold], task=["detection"], **same_frame) == [0.0]
    assert reward(["[100, 100, 300, 200]"], solution=[gold], task=["detection"], **same_frame) == [0.0]  # no block


def test_open_refuses_missing_columns_and_unknown_tasks():
    reward = get_reward("open")
    gold = "<answer>[1, 2, 3, 4]</answer>"
    with pytest.raises(ValueError, match="column 'model_family' is required"):
        reward([think("[1, 2, 3, 4]")], solution=[gold], task=["detection"])
    with pytest.raises(ValueError, match="'resized_size' is required for model_family 'qwen2_5_vl'"):
        reward([think("[1, 2, 3, 4]")], solution=[gold], task=["detection"], model_family=["qwen2_5_vl"],
               image_size=[(10, 10)])
    with pytest.raises(ValueError, match=r"task\[0\] must be one of \('detection', 'classify', 'math'\)"):
        reward([think("x")], solution=["<answer>x</answer>"], task=["coco_vqa"])
    with pytest.raises(ValueError, match="must hold an"):
        reward([think("yes")], solution=["<answer>yes</answer>"], task=["detection"], model_family=["qwen2_vl"],
               image_size=[(10, 10)])


# ---- format --------------------------------------------------------------------------------------------


def test_curr_format_needs_the_json_box_only_for_open_detection_rows():
    fmt = get_reward("curr_format")
    box_gold, yes_gold = "<answer>[1, 2, 3, 4]</answer>", "<answer>yes</answer>"
    completions = [
        think('{"bbox_2d": [1, 2, 3, 4]}'),
        think('{"bbox_2d": [1.5, 2, 3, 4]}'),  # float boxes are boxes (theirs: \d+ only)
        think("[1, 2, 3, 4]"),  # no JSON object
        think("yes"),
        "<answer>{[1, 2, 3, 4]}</answer>",  # no think
    ]
    assert fmt(completions, task=["detection"] * 5, solution=[box_gold] * 5) == [1.0, 1.0, 0.0, 0.0, 0.0]
    # judge / choice rows of detection questions: yes/no or letters earn the format reward (theirs: never)
    assert fmt([think("yes"), think("A")], task=["detection"] * 2, solution=[yes_gold, "<answer>A</answer>"]) == [
        1.0, 1.0]
    assert fmt([think("12"), "12"], task=["math"] * 2, solution=["<answer>12</answer>"] * 2) == [1.0, 0.0]
    assert has_json_box('{"box": [1, 2, 3, 4]}') and not has_json_box('[1, 2, 3, 4] {"x": 1}')


@pytest.mark.parametrize("gold, kind", [
    ("yes", "judge"), ("No.", "judge"), ("A", "choice"), ("A, C", "choice"), ("(b)", "choice"),
    ("[1, 2, 3, 4]", "open"), ("cat, dog", "open"), ("12", "open"), ("A cat", "open"),
])
def test_gold_kind(gold, kind):
    assert gold_kind(gold) == kind


def test_acceptance_shape_judge_and_choice_from_the_registry():
    """``get_reward(name)(completions, solution=[<answer> golds], **columns)``: extra columns are ignored."""
    columns = {"task": ["math", "classify"], "image": ["a.png", "b.png"]}
    assert get_reward("judge")([think("yes"), think("No")], solution=["<answer>yes</answer>"] * 2, **columns) == [
        1.0, 0.0]
    assert get_reward("choice")([think("C, A"), think("A")], solution=["<answer>A, C</answer>"] * 2,
                                **columns) == [1.0, 0.0]
