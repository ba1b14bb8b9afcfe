"""Counting reward: the integer the completion answers equals the gold count.

Column ``solution``: the gold count per completion, as an int (SuperCLEVR's ``ground_truth``), a
numeric string ("3", "3.0") or an answer-tagged string ("<answer> 3 </answer>"). A gold that is
not an integer >= 0 raises ValueError naming the row: that is a data error, not a model error.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from paddlemix_r1.rewards.columns import check_column, check_completions
from paddlemix_r1.rewards.parsing import parse_count


def gold_count(solution: Any, where: str = "solution") -> int:
    """The gold count of one row; raises ValueError naming ``where`` if it is not an integer >= 0."""
    if isinstance(solution, bool):  # bool is an int subclass; True is not a count
        raise TypeError(f"{where}: gold count must be an integer, got {solution!r}")
    if isinstance(solution, numbers.Integral):
        count = int(solution)
    elif isinstance(solution, numbers.Real):
        if not float(solution).is_integer():
            raise ValueError(f"{where}: gold count must be an integer, got {solution!r}")
        count = int(solution)
    elif isinstance(solution, str):
        parsed = parse_count(solution, lenient=True)  # golds need not carry answer tags
        if parsed is None:
            raise ValueError(f"{where}: gold count must be an integer, got {solution!r}")
        count = parsed
    else:
        raise TypeError(f"{where}: gold count must be an integer or a string, got {solution!r}")
    if count < 0:  # no answer can match it: the row would train (or score) nothing
        raise ValueError(f"{where}: gold count must be >= 0, got {solution!r}")
    return count


def counting_reward(completions: list[str], *, solution: Sequence[Any], **_columns: Any) -> list[float]:
    """1.0 if ``parse_count(completion)`` equals the gold count, else 0.0.

    The count is read from the last closed ``<answer>`` block only, whose numbers must all say
    the same value (digits, "3.0" and English number words count): an ambiguous answer
    ("3 or 4") and a completion without an answer block score 0.
    """
    check_completions(completions, "counting")
    check_column(solution, "solution", len(completions), "counting")
    scores = []
    for i, completion in enumerate(completions):
        gold = gold_count(solution[i], where=f"counting: solution[{i}]")
        scores.append(1.0 if parse_count(completion) == gold else 0.0)
    return scores
