"""VLM-R1's extra shaping rewards: ``length`` (cosine length reward) and ``repetition``.

``length`` (arXiv 2502.03373, "Demystifying Long Chain-of-Thought Reasoning", as VLM-R1 ships it in
``cosine_reward``): with L the completion's token count, clamped to ``L_max = 1024``,

    r = v_max - (v_max - v_min) * (1 - cos(pi * L / L_max)) / 2

correct answers (accuracy >= 0.7): v_max = 1.0 at L = 0 down to v_min = 0.5 at L_max (shorter is
better); wrong answers: -0.5 at L = 0 up to 0.0 at L_max (a wrong answer should at least think).
The accuracy is the ``accuracy`` reward of the row, computed here with its ``accu_reward_method``.
VLM-R1 computes an accuracy (a detection-only one) and then overwrites it with
``acc_reward = 1.0``, so every completion took the "correct" branch and a wrong short answer earned
the top reward; it also does not clamp L, so the reward is periodic past L_max. Neither is copied.

Columns of ``length``: ``completion_length`` (token count of each completion: the trainer knows it
from the completion mask) plus every column the ``accuracy`` reward needs (``solution``,
``accu_reward_method``, ...). Range [-0.5, 1.0].

``repetition``: ``-(1 - distinct / total)`` n-grams, in [-1, 0], uses no columns. When the
completion holds a JSON box list (the last fenced block, else the answer block parsed as JSON) with
at least one well-formed ``{"bbox_2d", "label"}`` item, the n-grams are those items (1-grams: a
repeated box-and-label is a repetition); otherwise word 6-grams of the lower-cased text, and 0.0
under 6 words. VLM-R1 raises on a JSON list holding a non-dict (its ``'bbox_2d' in item`` on an
int) and scores a list without box items 0.0 without looking at the text; here such lists fall
through to the word n-grams.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from paddlemix_r1.rewards.columns import RewardFn, check_column, check_completions
from paddlemix_r1.rewards.detection import detection_item, json_list
from paddlemix_r1.rewards.parsing import find_answer_block

COSINE_MAX_LENGTH = 1024
CORRECT_THRESHOLD = 0.7
CORRECT_VALUES = (1.0, 0.5)  # reward at L = 0 and at L >= L_max when the answer is correct
WRONG_VALUES = (-0.5, 0.0)  # the same for a wrong answer
TEXT_NGRAM = 6


def cosine_length_reward(
    length: int, accuracy: float, max_length: int = COSINE_MAX_LENGTH, threshold: float = CORRECT_THRESHOLD
) -> float:
    """The cosine length reward of one completion of ``length`` tokens whose accuracy is ``accuracy``."""
    at_zero, at_max = CORRECT_VALUES if accuracy >= threshold else WRONG_VALUES
    fraction = min(max(length, 0), max_length) / max_length
    return at_zero - (at_zero - at_max) * (1.0 - math.cos(math.pi * fraction)) / 2.0


def _lengths(values: Sequence[Any], n: int) -> list[int]:
    check_column(values, "completion_length", n, "length")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"length: completion_length[{i}] must be a token count (int >= 0), got {v!r}")
        out.append(int(v))
    return out


def make_length_reward(
    accuracy: RewardFn,
    max_length: int = COSINE_MAX_LENGTH,
    threshold: float = CORRECT_THRESHOLD,
) -> RewardFn:
    """A ``length`` reward whose accuracy comes from ``accuracy(completions, **columns)``."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")

    def length_reward(completions: list[str], *, completion_length: Sequence[Any], **columns: Any) -> list[float]:
        """Cosine length reward (module docstring) with the row's real accuracy, in [-0.5, 1.0]."""
        check_completions(completions, "length")
        lengths = _lengths(completion_length, len(completions))
        accuracies = accuracy(completions, **columns)
        return [cosine_length_reward(n, a, max_length, threshold) for n, a in zip(lengths, accuracies)]

    return length_reward


def _box_items(completion: str) -> list[tuple[tuple[float, ...], str]] | None:
    for text in (completion, find_answer_block(completion)):
        if text is None:
            continue
        items = json_list(text)
        if items is not None:
            detections = [d for d in map(detection_item, items) if d is not None]
            if detections:
                return [(d.box, d.label) for d in detections]
    return None


def repetition_penalty(completion: str) -> float:
    """``-(1 - distinct / total)`` over box items or word 6-grams (module docstring), in [-1, 0]."""
    items = _box_items(completion)
    if items is not None:
        return -(1.0 - len(set(items)) / len(items))
    words = completion.lower().split()
    if len(words) < TEXT_NGRAM:
        return 0.0
    ngrams = [tuple(words[i : i + TEXT_NGRAM]) for i in range(len(words) - TEXT_NGRAM + 1)]
    return -(1.0 - len(set(ngrams)) / len(ngrams))


def repetition_reward(completions: list[str], **_columns: Any) -> list[float]:
    """Repetition penalty in [-1, 0] (0: nothing repeated); uses no columns."""
    check_completions(completions, "repetition")
    return [repetition_penalty(c) for c in completions]
