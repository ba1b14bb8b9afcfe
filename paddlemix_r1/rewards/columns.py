"""Checks on the dataset columns a reward receives.

Rewards are called as ``fn(completions, **columns)`` where every column is a list with one entry
per completion (the trainer repeats a prompt's row for each of its G completions). A missing or
misshapen column is a programming error in the caller and raises at once, naming the column;
only the completion TEXT is untrusted input that must never make a reward raise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

RewardFn = Callable[..., list[float]]
"""``fn(completions: list[str], **columns) -> list[float]``, one score per completion."""


def check_completions(completions: Sequence[str], reward: str) -> None:
    """Completions must be a list of strings (decoded text, not token ids or message dicts)."""
    if isinstance(completions, str) or not isinstance(completions, Sequence):
        raise TypeError(f"{reward}: completions must be a list of strings, got {type(completions).__name__}")
    for i, c in enumerate(completions):
        if not isinstance(c, str):
            raise TypeError(f"{reward}: completions[{i}] must be a str, got {type(c).__name__}")


def check_column(values: Any, name: str, n: int, reward: str) -> Sequence[Any]:
    """``values`` must be list-like with one entry per completion; returns it unchanged."""
    if values is None:
        raise ValueError(f"{reward}: column {name!r} is required")
    if isinstance(values, (str, bytes, dict)) or not (hasattr(values, "__len__") and hasattr(values, "__getitem__")):
        raise TypeError(
            f"{reward}: column {name!r} must be a list with one entry per completion, got {type(values).__name__}"
        )
    if len(values) != n:
        raise ValueError(f"{reward}: column {name!r} has {len(values)} entries for {n} completions")
    return values


def as_size(value: Any, name: str, index: int, reward: str) -> tuple[float, float]:
    """One ``(width, height)`` entry of a size column, validated."""
    try:
        w, h = value
        w, h = float(w), float(h)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{reward}: {name}[{index}] must be (width, height), got {value!r}") from e
    if not (w > 0 and h > 0 and w != float("inf") and h != float("inf")):
        raise ValueError(f"{reward}: {name}[{index}] must be a positive (width, height), got {value!r}")
    return w, h
