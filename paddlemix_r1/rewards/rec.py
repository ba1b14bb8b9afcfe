"""Referring expression comprehension rewards: IoU of the answered box with the gold box.

Columns (lists, one entry per completion):

``solution``      gold ``[x1, y1, x2, y2]`` in ORIGINAL image pixels; a list/tuple of 4 numbers
                  or a string holding one box (e.g. ``"[10, 20, 30, 40]"``, ``"<answer>[...]</answer>"``).
``image_size``    ``(W, H)`` of the original image.
``model_family``  ``"qwen2_5_vl"`` (boxes in absolute pixels of the resized image) or
                  ``"qwen2_vl"`` (0..1000 normalized). Required: there is no safe default, since
                  guessing the frame wrong silently mis-scores every box (the anchors' REC eval bug).
``resized_size``  ``(W', H')`` after smart_resize. Required for rows whose family is
                  ``qwen2_5_vl``; not used (may be absent or None) for ``qwen2_vl``. A model trained
                  to answer in original pixels is scored by passing ``resized_size = image_size``.

Other columns are ignored. A missing column or a malformed gold/size entry raises (naming the
column and row; a gold box must be finite with x2 > x1 and y2 > y1); the completion text never does: no box, an unparsable box, or a degenerate box
(x2 <= x1 or y2 <= y1) scores 0.

The box is the first one in the completion's last closed ``<answer>`` block; a completion without
one scores 0, even if a box appears in ``<think>`` or after an unclosed ``<answer>`` (the rewards
are training rewards; ``score_rec_completion(..., lenient=True)`` is for ``baseline`` evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from paddlemix_r1.families import VISION_FAMILIES
from paddlemix_r1.rewards.columns import as_size, check_column, check_completions
from paddlemix_r1.rewards.coords import (
    QWEN2_5_VL,
    Box,
    box_iou,
    model_box_to_original,
)
from paddlemix_r1.rewards.parsing import parse_answer_box, parse_box

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class RecScore:
    """One completion scored: the parsed box as written, the box in original pixels, the IoU."""

    predicted_box: Box | None
    original_box: Box | None
    iou: float


def check_gold_box(box: Sequence[float], where: str = "solution", raw: Any = None) -> None:
    """Raise ValueError naming ``where`` unless ``box`` is 4 finite numbers with x2 > x1 and y2 > y1.

    A gold box without area (inverted, empty or NaN) has IoU 0 with every answer: a row that can only
    score 0 is a data error, not a hard question."""
    shown = box if raw is None else raw
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"{where}: gold box must be 4 finite numbers, got {shown!r}")
    x1, y1, x2, y2 = box
    if not x2 > x1:
        raise ValueError(f"{where}: gold box [x1, y1, x2, y2] needs x2 > x1, got {shown!r}")
    if not y2 > y1:
        raise ValueError(f"{where}: gold box [x1, y1, x2, y2] needs y2 > y1, got {shown!r}")


def gold_box(solution: Any, where: str = "solution") -> Box:
    """The gold box of one row as 4 floats; raises ValueError naming ``where`` if malformed (not 4
    numbers, not finite, or without area: ``check_gold_box``)."""
    if isinstance(solution, str):
        box = parse_box(solution)
        if box is None:
            raise ValueError(f"{where}: no [x1, y1, x2, y2] box in {solution!r}")
        check_gold_box(box, where, solution)
        return box
    try:
        values = tuple(float(v) for v in solution)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{where}: gold box must be 4 numbers, got {solution!r}") from e
    if len(values) != 4:
        raise ValueError(f"{where}: gold box must be 4 numbers, got {solution!r}")
    check_gold_box(values, where, solution)
    return values  # type: ignore[return-value]


def score_rec_completion(
    completion: str,
    solution: Box,
    model_family: str,
    image_size: Sequence[float],
    resized_size: Sequence[float] | None,
    lenient: bool = False,
) -> RecScore:
    """IoU, in ORIGINAL pixels, of the completion's first answered box with ``solution``.

    ``lenient``: without an answer block, read the first box of the whole completion
    (``baseline`` evaluation only; training requires the block).
    """
    predicted = parse_answer_box(completion, lenient)
    if predicted is None:
        return RecScore(None, None, 0.0)
    original = model_box_to_original(predicted, model_family, image_size, resized_size)
    return RecScore(predicted, original, box_iou(original, solution))


def score_rec(
    reward: str,
    completions: list[str],
    solution: Sequence[Any],
    image_size: Sequence[Any],
    model_family: Sequence[str],
    resized_size: Sequence[Any] | None,
) -> list[RecScore]:
    """Validate the columns and score every completion (shared by the rewards and the evaluator)."""
    check_completions(completions, reward)
    n = len(completions)
    check_column(solution, "solution", n, reward)
    check_column(image_size, "image_size", n, reward)
    check_column(model_family, "model_family", n, reward)
    if resized_size is not None:
        check_column(resized_size, "resized_size", n, reward)
    scores = []
    for i, completion in enumerate(completions):
        family = model_family[i]
        if family not in VISION_FAMILIES:
            raise ValueError(f"{reward}: model_family[{i}] must be one of {VISION_FAMILIES}, got {family!r}")
        size = as_size(image_size[i], "image_size", i, reward)
        resized = None
        if family == QWEN2_5_VL:
            if resized_size is None or resized_size[i] is None:
                raise ValueError(
                    f"{reward}: column 'resized_size' is required for model_family 'qwen2_5_vl' (row {i}): "
                    "its boxes are in pixels of the resized image"
                )
            resized = as_size(resized_size[i], "resized_size", i, reward)
        gold = gold_box(solution[i], where=f"{reward}: solution[{i}]")
        scores.append(score_rec_completion(completion, gold, family, size, resized))
    return scores


def rec_iou_reward(
    completions: list[str],
    *,
    solution: Sequence[Any],
    image_size: Sequence[Any],
    model_family: Sequence[str],
    resized_size: Sequence[Any] | None = None,
    **_columns: Any,
) -> list[float]:
    """Continuous IoU in [0, 1] between the answered box (mapped to original pixels) and the gold box."""
    return [s.iou for s in score_rec("rec_iou", completions, solution, image_size, model_family, resized_size)]


def rec_acc_reward(
    completions: list[str],
    *,
    solution: Sequence[Any],
    image_size: Sequence[Any],
    model_family: Sequence[str],
    resized_size: Sequence[Any] | None = None,
    **_columns: Any,
) -> list[float]:
    """1.0 if that IoU is >= 0.5 (the REC accuracy criterion), else 0.0."""
    scores = score_rec("rec_acc", completions, solution, image_size, model_family, resized_size)
    return [1.0 if s.iou >= IOU_THRESHOLD else 0.0 for s in scores]
