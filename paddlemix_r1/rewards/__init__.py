"""Rewards: pure functions ``fn(completions: list[str], **columns) -> list[float]`` and a registry.

Registered names (``list_rewards()``):

``format``      the completion is ``<think>...</think>\\s*<answer>...</answer>``
``rec_format``  ``format`` and a box in the answer
``rec_iou``     IoU of the answered box with the gold box, in original pixels
``rec_acc``     that IoU >= 0.5
``counting``    the answered integer equals the gold count
``math``        math_verify says the answer equals the gold (geometry: "140°", LaTeX, choice letters)

Columns are the dataset row fields as lists, one entry per completion; see each module for the
columns it reads. No reward raises on any completion text; a missing column raises.
"""

from paddlemix_r1.rewards.coords import (
    box_iou,
    model_box_to_original,
    normalized_to_original,
    original_box_to_model,
    original_to_normalized,
    original_to_resized,
    resized_to_original,
)
from paddlemix_r1.rewards.counting import counting_reward
from paddlemix_r1.rewards.format_reward import format_reward, rec_format_reward
from paddlemix_r1.rewards.math_answer import MathVerifier, make_math_reward, math_reward
from paddlemix_r1.rewards.parsing import extract_answer, parse_box, parse_count
from paddlemix_r1.rewards.rec import rec_acc_reward, rec_iou_reward
from paddlemix_r1.rewards.registry import (
    RewardFn,
    RewardScores,
    WeightedReward,
    get_reward,
    list_rewards,
    register_reward,
)

__all__ = [
    "MathVerifier",
    "RewardFn",
    "RewardScores",
    "WeightedReward",
    "box_iou",
    "counting_reward",
    "extract_answer",
    "format_reward",
    "get_reward",
    "list_rewards",
    "make_math_reward",
    "math_reward",
    "model_box_to_original",
    "normalized_to_original",
    "original_box_to_model",
    "original_to_normalized",
    "original_to_resized",
    "parse_box",
    "parse_count",
    "rec_acc_reward",
    "rec_format_reward",
    "rec_iou_reward",
    "register_reward",
    "resized_to_original",
]
