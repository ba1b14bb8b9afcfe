"""Registry and the weighted combination of rewards."""

import math

import pytest

from paddlemix_r1.rewards import (
    WeightedReward,
    get_reward,
    list_rewards,
    register_reward,
)
from paddlemix_r1.rewards import registry as registry_module

ISSUE_NAMES = {"format", "rec_format", "rec_iou", "rec_acc", "counting", "math"}
# VLM-R1's accuracy methods, the dispatcher over them and its shaping rewards (issue 15)
VLM_R1_NAMES = {
    "default", "mcq", "yes_no", "math", "all_match", "od_ap", "od_ap50", "odLength", "weighted_sum", "llm",
    "accuracy", "length", "repetition",
}  # fmt: skip


def test_all_issue_rewards_are_registered():
    assert ISSUE_NAMES | VLM_R1_NAMES <= set(list_rewards())
    for name in ISSUE_NAMES | VLM_R1_NAMES:
        assert callable(get_reward(name))


def test_accuracy_methods_are_the_registered_names():
    from paddlemix_r1.rewards.accuracy import ACCURACY_METHODS

    assert set(ACCURACY_METHODS) == VLM_R1_NAMES - {"accuracy", "length", "repetition"}


def test_unknown_name_lists_known_ones():
    with pytest.raises(KeyError, match="rec_iou"):
        get_reward("map")


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def test_register_and_decorator(scratch_registry):
    register_reward("char_count", lambda completions, **_: [float(len(c)) for c in completions])
    assert get_reward("char_count")(["ab", ""]) == [2.0, 0.0]

    @register_reward("const")
    def const(completions, **_):
        return [0.25] * len(completions)

    assert get_reward("const") is const
    with pytest.raises(ValueError, match="already registered"):
        register_reward("const", const)
    register_reward("const", lambda completions, **_: [1.0] * len(completions), overwrite=True)
    assert get_reward("const")(["x"]) == [1.0]


def test_weighted_sum_and_per_reward_scores():
    combined = WeightedReward({"rec_acc": 1.0, "rec_format": 0.5, "rec_iou": 0.0})
    completions = [
        "<think>a</think><answer>[0, 0, 10, 10]</answer>",  # acc 1, format 1, iou 1
        "<answer>[0, 0, 10, 20]</answer>",  # acc 1 (iou 0.5), format 0
        "<think>a</think><answer>none</answer>",  # acc 0, format 0 (no box)
    ]
    columns = {
        "solution": [[0, 0, 10, 10]] * 3,
        "image_size": [(100, 100)] * 3,
        "resized_size": [(100, 100)] * 3,
        "model_family": ["qwen2_5_vl"] * 3,
    }
    scores = combined(completions, **columns)
    assert scores.total == [1.5, 1.0, 0.0]
    assert scores.per_reward == {"rec_acc": [1.0, 1.0, 0.0], "rec_format": [1.0, 0.0, 0.0], "rec_iou": [1.0, 0.5, 0.0]}
    means = scores.means()
    assert means["rewards/rec_iou"] == pytest.approx(0.5)  # weight 0: still reported
    assert means["rewards/total"] == pytest.approx(2.5 / 3)


def test_weighted_reward_validates_at_construction():
    with pytest.raises(KeyError, match="nope"):
        WeightedReward({"format": 1.0, "nope": 1.0})
    with pytest.raises(ValueError, match="finite"):
        WeightedReward({"format": math.inf})
    with pytest.raises(ValueError, match="at least one"):
        WeightedReward({})


def test_weighted_reward_checks_score_count(scratch_registry):
    register_reward("short", lambda completions, **_: [1.0])
    with pytest.raises(ValueError, match="short"):
        WeightedReward({"short": 1.0})(["a", "b"])
