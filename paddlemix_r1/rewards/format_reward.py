"""Format rewards: is the completion ``<think>...</think> <answer>...</answer>``?"""

from __future__ import annotations

import re
from typing import Any

from paddlemix_r1.rewards.columns import check_completions
from paddlemix_r1.rewards.parsing import find_answer_block, parse_box

THINK_ANSWER_PATTERN = r"<think>.*?</think>\s*<answer>.*?</answer>"
_THINK_ANSWER = re.compile(THINK_ANSWER_PATTERN, re.DOTALL)


def has_think_answer_format(completion: str) -> bool:
    """The whole completion (surrounding whitespace aside) matches ``THINK_ANSWER_PATTERN``.

    Surrounding whitespace is ignored because decoders often leave a trailing newline. The
    start/end checks run first: with the text known to end in ``</answer>`` the lazy groups
    succeed at the first ``</think>\\s*<answer>``, which keeps the match linear in the length
    (without them repeated tags make the backtracking quadratic).
    """
    text = completion.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    return _THINK_ANSWER.fullmatch(text) is not None


def format_reward(completions: list[str], **_columns: Any) -> list[float]:
    """1.0 if the completion is ``<think>...</think>`` then ``<answer>...</answer>`` (DOTALL), else 0.0.

    Uses no columns.
    """
    check_completions(completions, "format")
    return [1.0 if has_think_answer_format(c) else 0.0 for c in completions]


def rec_format_reward(completions: list[str], **_columns: Any) -> list[float]:
    """``format`` plus a box in the (last) answer block, in any form ``parse_box`` accepts.

    Uses no columns: the box only has to be there, its position is the accuracy rewards' job.
    """
    check_completions(completions, "rec_format")
    scores = []
    for c in completions:
        ok = has_think_answer_format(c)
        if ok:
            block = find_answer_block(c)
            ok = block is not None and parse_box(block) is not None
        scores.append(1.0 if ok else 0.0)
    return scores
