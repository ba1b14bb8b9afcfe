"""Reward registry and the weighted combination a training config asks for."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paddlemix_r1.rewards.accuracy import accuracy_reward
from paddlemix_r1.rewards.answer_match import all_match_reward, default_reward, mcq_reward, yes_no_reward
from paddlemix_r1.rewards.columns import RewardFn
from paddlemix_r1.rewards.counting import counting_reward
from paddlemix_r1.rewards.detection import od_ap50_reward, od_ap_reward, od_length_reward, weighted_sum_reward
from paddlemix_r1.rewards.focus import focus_answer_reward, focus_box_valid_reward, focus_crop_reward
from paddlemix_r1.rewards.format_reward import format_reward, rec_format_reward
from paddlemix_r1.rewards.llm_judge import llm_reward
from paddlemix_r1.rewards.math_answer import math_reward
from paddlemix_r1.rewards.reasoner import reasoner_reward
from paddlemix_r1.rewards.rec import rec_acc_reward, rec_iou_reward
from paddlemix_r1.rewards.shaping import make_length_reward, repetition_reward

_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str, fn: RewardFn | None = None, *, overwrite: bool = False) -> Any:
    """Register ``fn`` under ``name``; usable as ``register_reward("x", fn)`` or as a decorator
    ``@register_reward("x")``. Re-registering a name raises unless ``overwrite=True``."""

    def add(f: RewardFn) -> RewardFn:
        if not callable(f):
            raise TypeError(f"reward {name!r} must be callable, got {type(f).__name__}")
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"reward {name!r} is already registered (pass overwrite=True to replace it)")
        _REGISTRY[name] = f
        return f

    return add if fn is None else add(fn)


def get_reward(name: str) -> RewardFn:
    """The reward function registered under ``name``; KeyError listing the known names if none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; registered rewards: {', '.join(list_rewards())}") from None


def list_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(_REGISTRY)


register_reward("format", format_reward)
register_reward("rec_format", rec_format_reward)
register_reward("rec_iou", rec_iou_reward)
register_reward("rec_acc", rec_acc_reward)
register_reward("counting", counting_reward)
register_reward("math", math_reward)
# VLM-R1's accuracy methods under their own names, the dispatcher over them, and its shaping rewards.
register_reward("default", default_reward)
register_reward("mcq", mcq_reward)
register_reward("yes_no", yes_no_reward)
register_reward("all_match", all_match_reward)
register_reward("od_ap", od_ap_reward)
register_reward("od_ap50", od_ap50_reward)
register_reward("odLength", od_length_reward)
register_reward("weighted_sum", weighted_sum_reward)
register_reward("llm", llm_reward)
register_reward("accuracy", accuracy_reward)
register_reward("length", make_length_reward(accuracy_reward))
register_reward("repetition", repetition_reward)
register_reward("reasoner", reasoner_reward)  # RACRO: a frozen text reasoner answers from the caption


@dataclass(frozen=True)
class RewardScores:
    """Scores of one batch: the weighted total per completion and each reward's raw scores."""

    total: list[float]
    per_reward: dict[str, list[float]] = field(default_factory=dict)

    def means(self, prefix: str = "rewards/") -> dict[str, float]:
        """Batch means for logging: ``{prefix + name: mean}`` for each reward and for the total."""
        out = {f"{prefix}{name}": _mean(values) for name, values in self.per_reward.items()}
        out[f"{prefix}total"] = _mean(self.total)
        return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


class WeightedReward:
    """``total = sum_i weight_i * reward_i(completions, **columns)`` over a config's rewards.

    Built once from the config (``{"rec_acc": 1.0, "rec_format": 0.5}``): unknown names and
    non-finite weights fail here, at start-up, not mid-run. Every listed reward is computed and
    reported even with weight 0, so a reward can be logged without being optimized. Functions are
    looked up at construction: later registrations do not change a built combiner.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        if not weights:
            raise ValueError("WeightedReward needs at least one reward")
        self.weights: dict[str, float] = {}
        self.functions: dict[str, RewardFn] = {}
        for name, weight in weights.items():
            w = float(weight)
            if not math.isfinite(w):
                raise ValueError(f"weight of reward {name!r} must be finite, got {weight!r}")
            self.functions[name] = get_reward(name)
            self.weights[name] = w

    def __call__(self, completions: list[str], **columns: Any) -> RewardScores:
        per_reward: dict[str, list[float]] = {}
        total = [0.0] * len(completions)
        for name, fn in self.functions.items():
            scores = [float(s) for s in fn(completions, **columns)]
            if len(scores) != len(completions):
                raise ValueError(f"reward {name!r} returned {len(scores)} scores for {len(completions)} completions")
            per_reward[name] = scores
            w = self.weights[name]
            total = [t + w * s for t, s in zip(total, scores)]
        return RewardScores(total=total, per_reward=per_reward)
# Focus-region trajectories (paddlemix_r1.focus): answer, box validity, crop relevance.
register_reward("focus_answer", focus_answer_reward)
register_reward("focus_box_valid", focus_box_valid_reward)
register_reward("focus_crop", focus_crop_reward)
