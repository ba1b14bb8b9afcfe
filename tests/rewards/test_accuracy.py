"""The accuracy dispatcher, and the acceptance form: ``get_reward(name)(completions, solution=[...],
**columns)`` for every VLM-R1 method name, and ``accuracy`` with an ``accu_reward_method`` column, on
held-out cases (not the ones the per-module tests were written against)."""

import json

import pytest

from paddlemix_r1.rewards import get_reward
from paddlemix_r1.rewards.accuracy import ACCURACY_METHODS, make_accuracy_reward
from paddlemix_r1.rewards.llm_judge import JudgeConfig, LLMJudge, set_default_judge


@pytest.fixture(autouse=True)
def stub_judge(judge_stub):
    url, _ = judge_stub
    judge = LLMJudge(JudgeConfig(base_url=url, timeout_s=0.5))
    set_default_judge(judge)
    yield judge
    set_default_judge(None)


def A(text):
    return f"<think>Let me look at the image.</think>\n<answer>{text}</answer>"


def ovd(*items):
    return "```json\n" + json.dumps([{"bbox_2d": b, "label": lab} for b, lab in items]) + "\n```"


PERSON = ([120, 40, 260, 400], "person")
BIKE = ([100, 250, 330, 480], "bicycle")
HAT = ([150, 30, 210, 70], "hat")

# (method, completion, solution, expected score)
HELD_OUT = [
    ("default", A("3/4"), "<answer> 0.75 </answer>", 1.0),
    ("default", A("x = 12"), "12", 1.0),
    ("default", A("12.5"), "12", 0.0),
    ("default", A("(D)"), "D", 1.0),
    ("default", A("the red one"), "the red one", 1.0),
    ("default", "12", "12", 0.0),  # no answer block
    ("mcq", A("I choose option C."), "<answer> C </answer>", 1.0),
    ("mcq", A("C) 30°"), "C", 1.0),
    ("mcq", A("A"), "C", 0.0),
    ("yes_no", A("No, it is not."), "No", 1.0),
    ("yes_no", A("It is not known"), "No", 0.0),  # "not", "known": VLM-R1 reads "no"
    ("yes_no", A("YES"), "yes", 1.0),
    ("math", A("\\frac{3}{2}"), "1.5", 1.0),
    ("math", A("$4\\sqrt{2}$"), "4√{2}", 1.0),
    ("math", A("9pi"), "9πcm^{2}", 1.0),
    ("math", A("5"), "6", 0.0),
    ("all_match", A("Missing Screw."), "missing screw", 1.0),
    ("all_match", A("missing screws"), "missing screw", 0.0),
    ("od_ap", A(ovd(PERSON, BIKE)), ovd(PERSON, BIKE), 1.0),
    ("od_ap", A(ovd(PERSON)), ovd(PERSON, BIKE), 0.5),
    ("od_ap", A(ovd(PERSON, HAT)), ovd(PERSON), 0.5),  # hat: a hallucinated label
    ("od_ap", A("None"), "None", 1.0),
    ("od_ap", A("nothing to see"), None, 0.0),  # VLM-R1: 1.0
    ("od_ap50", A(ovd(([120, 40, 260, 330], "person"))), ovd(PERSON), 1.0),  # IoU 0.81
    ("odLength", A(ovd(PERSON, PERSON, PERSON)), ovd(PERSON), 1 / 3),
    ("odLength", A(ovd(PERSON)), ovd(PERSON), 1.0),
    ("weighted_sum", A(ovd(PERSON, BIKE)), ovd(PERSON, BIKE), 1.0),
    ("weighted_sum", A(ovd(PERSON)), ovd(PERSON, BIKE), 0.7 * 0.5 + 0.3 * 0.75),
    ("weighted_sum", A("None"), None, 1.0),
    ("llm", A("Paris"), "Paris", 1.0),
    ("llm", A("Rome"), "Paris", 0.0),
    ("llm", A("HTTP500"), "HTTP500", 0.0),  # a judge failure: 0 (VLM-R1's string match would say 1)
]


@pytest.mark.parametrize("method, completion, solution, expected", HELD_OUT)
def test_each_method_by_name_and_through_accuracy(method, completion, solution, expected):
    by_name = get_reward(method)([completion], solution=[solution])
    dispatched = get_reward("accuracy")([completion], solution=[solution], accu_reward_method=[method])
    assert by_name == [pytest.approx(expected)]
    assert dispatched == by_name


def test_every_method_is_held_out():
    assert {case[0] for case in HELD_OUT} == set(ACCURACY_METHODS)


def test_one_mixed_batch_keeps_row_order():
    completions = [c for _, c, _, _ in HELD_OUT]
    columns = {
        "solution": [s for _, _, s, _ in HELD_OUT],
        "accu_reward_method": [m for m, _, _, _ in HELD_OUT],
        "problem": ["ignored"] * len(HELD_OUT),  # other dataset columns pass through
        "resized_size": None,
    }
    scores = get_reward("accuracy")(completions, **columns)
    assert scores == [pytest.approx(e) for _, _, _, e in HELD_OUT]


def test_frame_columns_reach_the_detection_methods():
    gold = ovd(([100, 100, 300, 200], "car"))
    answer = A(ovd(([50, 50, 150, 100], "car")))  # Qwen2.5-VL pixels of a 500x250 input
    scores = get_reward("accuracy")(
        [answer, answer],
        solution=[gold, gold],
        accu_reward_method=["od_ap", "weighted_sum"],
        model_family=["qwen2_5_vl"] * 2,
        image_size=[(1000, 500)] * 2,
        resized_size=[(500, 250)] * 2,
    )
    assert scores == [pytest.approx(1.0), pytest.approx(1.0)]


@pytest.mark.parametrize("method", ["odlength", "map", None, ""])
def test_unknown_method_raises(method):
    """VLM-R1 scores an unknown method with ``default``: a typo trains on the wrong reward."""
    with pytest.raises(ValueError, match=r"accu_reward_method\[1\]"):
        get_reward("accuracy")([A("1"), A("1")], solution=["1", "1"], accu_reward_method=["default", method])


def test_missing_or_misshapen_method_column_raises():
    with pytest.raises(TypeError, match="accu_reward_method"):
        get_reward("accuracy")([A("1")], solution=["1"])
    with pytest.raises(ValueError, match="accu_reward_method"):
        get_reward("accuracy")([A("1")], solution=["1"], accu_reward_method=["default", "mcq"])
    with pytest.raises(ValueError, match="problem"):
        get_reward("accuracy")([A("1")], solution=["1"], accu_reward_method=["default"], problem=["a", "b"])


def test_custom_method_table_and_batching():
    calls = []

    def half(completions, **columns):
        calls.append((list(completions), dict(columns)))
        return [0.5] * len(completions)

    accuracy = make_accuracy_reward({"half": half, "one": lambda completions, **_: [1.0] * len(completions)})
    assert accuracy(["a", "b", "c"], accu_reward_method=["half", "one", "half"], solution=[1, 2, 3]) == [0.5, 1.0, 0.5]
    assert calls == [(["a", "c"], {"solution": [1, 3]})]  # one call per method, columns sliced
