"""Rewards of focus-region trajectories (box -> crop -> answer; ``paddlemix_r1.focus``).

Over a batch of trajectories: ``completions`` are the turn-2 answers ("" where the box was unusable)
and the column ``focus_status`` holds each trajectory's box status (``focus.boxes``: "ok" or why not),
so a trajectory whose box is unusable scores 0 in every term.

``focus_answer``     1.0 if the box was usable and the answer matches the gold (``answer_correct``)
``focus_box_valid``  1.0 if the box was usable
``focus_crop``       the fraction of the row's ``evidence`` box inside the crop (``focus_box``; rows need
                     ``evidence``), the rule-based crop-relevance score

They are built-in rewards (registered with the others in ``rewards/registry.py``), so the registry holds
them whatever was imported first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from paddlemix_r1.rewards.answer_match import clean_text
from paddlemix_r1.rewards.parsing import extract_answer


def normalize_answer(text: str) -> str:
    """The answer block's (or whole text's) content, lower-cased, trailing period and outer space removed."""
    return clean_text(extract_answer(text))


def answer_correct(answer: str, gold: str) -> float:
    """1.0 if the normalised answer equals the normalised gold, else 0.0."""
    return 1.0 if normalize_answer(answer) == normalize_answer(gold) and normalize_answer(gold) else 0.0


def coverage(region: Sequence[float], target: Sequence[float]) -> float:
    """Fraction of ``target``'s area inside ``region`` (same frame): 1.0 when the region holds all of the
    target box, 0 when none of it."""
    tx1, ty1, tx2, ty2 = (float(v) for v in target)
    rx1, ry1, rx2, ry2 = (float(v) for v in region)
    area = (tx2 - tx1) * (ty2 - ty1)
    if not area > 0:
        return 0.0
    iw = min(tx2, rx2) - max(tx1, rx1)
    ih = min(ty2, ry2) - max(ty1, ry1)
    return float(iw * ih / area) if iw > 0 and ih > 0 else 0.0


def _statuses(columns: dict[str, Any], n: int, reward: str) -> Sequence[str]:
    status = columns.get("focus_status")
    if status is None or len(status) != n:
        raise ValueError(f"{reward}: needs the focus_status column (one box status per trajectory; "
                         "focus.online.FocusGRPOTrainer provides it)")
    return status


def focus_answer_reward(completions: list[str], *, solution: Sequence[Any], **columns: Any) -> list[float]:
    status = _statuses(columns, len(completions), "focus_answer")
    return [answer_correct(c, str(g)) if s == "ok" else 0.0 for c, g, s in zip(completions, solution, status)]


def focus_box_valid_reward(completions: list[str], **columns: Any) -> list[float]:
    return [1.0 if s == "ok" else 0.0 for s in _statuses(columns, len(completions), "focus_box_valid")]


def focus_crop_reward(completions: list[str], **columns: Any) -> list[float]:
    status = _statuses(columns, len(completions), "focus_crop")
    boxes, evidence = columns.get("focus_box"), columns.get("evidence")
    if evidence is None or any(e is None for e in evidence):
        raise ValueError("focus_crop: every row needs an 'evidence' FOCUS box")
    return [coverage(b, e) if s == "ok" else 0.0 for s, b, e in zip(status, boxes, evidence)]
