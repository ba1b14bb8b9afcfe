"""Parsing model completions: the answer block, boxes, counts.

Every function here takes arbitrary text and returns a value or None; none of them raises on
any string (the rewards rely on that). All regular expressions are written so that their cost
stays linear-ish in the input length (no nested quantifiers over overlapping classes).

Strict and lenient reading. A TRAINING reward reads only the completion's last closed
``<answer>...</answer>`` block: no block (or an unclosed ``<answer>``), no answer. Reading the
whole text instead would credit a box or a number that appears only inside ``<think>`` (the D3
defect found on R1-V's logs). ``lenient=True`` restores the whole-text fallback; only the
evaluation of the ``baseline`` method uses it, since its prompts need not ask for tags.
"""

from __future__ import annotations

import math
import re

from paddlemix_r1.rewards.coords import Box

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"


def find_answer_block(text: str) -> str | None:
    """Content of the LAST ``<answer>...</answer>`` block (unstripped), or None if there is none.

    The last block is the model's final word (models sometimes quote the tags while reasoning).
    It is found from the end with ``rfind`` rather than a ``<answer>(.*?)</answer>`` scan, whose
    cost is quadratic on the repeated unclosed tags a degenerate rollout can produce. The block
    opens at the last ``<answer>`` before the last ``</answer>`` and closes at the first
    ``</answer>`` after that opening. An unclosed ``<answer>`` is not a block.
    """
    last_close = text.rfind(ANSWER_CLOSE)
    if last_close < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, last_close)
    if start < 0:
        return None
    start += len(ANSWER_OPEN)
    return text[start : text.find(ANSWER_CLOSE, start)]


def extract_answer(text: str) -> str:
    """Content of the LAST ``<answer>...</answer>`` block, stripped; the whole text if none.

    For GOLD answers (which may or may not carry tags) and lenient reading; a training reward
    reads completions with ``answer_text``.
    """
    block = find_answer_block(text)
    return (text if block is None else block).strip()


def answer_text(completion: str, lenient: bool = False) -> str | None:
    """What a completion answers: the last closed ``<answer>`` block, stripped.

    Without a block: None (strict, every training reward), or the whole completion stripped
    when ``lenient`` (``baseline`` evaluation only; see the module docstring).
    """
    block = find_answer_block(completion)
    if block is None:
        return completion.strip() if lenient else None
    return block.strip()


# ---- boxes -------------------------------------------------------------------------------------

# A number as models and JSON write it: 12, -3, 4.5, .5, 7., 1e3; optionally quoted ("12").
# Whitespace lives only in the separators: two adjacent ``\s*`` would make a long run of spaces
# quadratic to backtrack through.
_NUM = r"""["']?([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)["']?"""
_SEP = r"\s*,\s*"
# [x1, y1, x2, y2]: a bare list, the value of {"bbox_2d": [...]}, an element of a list of such
# dicts, or inside a fenced ```json block -- all of them contain this bracketed form.
_BRACKET_BOX = re.compile(r"\[\s*" + _SEP.join([_NUM] * 4) + r"\s*\]")
# Qwen2-VL: <|box_start|>(x1,y1),(x2,y2)<|box_end|>. The special tokens disappear when the output
# is decoded with skip_special_tokens=True, so the two bracketed points alone are accepted too.
_POINT_PAIR_BOX = re.compile(
    r"(?:<\|box_start\|>\s*)?\(\s*" + _NUM + _SEP + _NUM + r"\s*\)\s*(?:,\s*)?\(\s*" + _NUM + _SEP + _NUM + r"\s*\)"
)


def _finite_box(groups: tuple[str, ...]) -> Box | None:
    values = tuple(float(g) for g in groups)
    if not all(math.isfinite(v) for v in values):
        return None
    return values  # type: ignore[return-value]


def parse_box(text: str) -> Box | None:
    """The first box written in ``text`` (in reading order), as 4 floats, or None.

    Accepted forms: ``[x1, y1, x2, y2]`` with ints or floats (also as ``{"bbox_2d": [...]}``,
    a list of such dicts, or inside a fenced ```json block) and Qwen2-VL's
    ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` with or without the special tokens. Values that
    overflow to inf are treated as no box. The box is returned as written: no frame conversion
    and no ordering check (a degenerate box is the IoU's business).
    """
    candidates = [m for m in (_BRACKET_BOX.search(text), _POINT_PAIR_BOX.search(text)) if m is not None]
    if not candidates:
        return None
    first = min(candidates, key=lambda m: m.start())
    return _finite_box(first.groups())


def parse_answer_box(completion: str, lenient: bool = False) -> Box | None:
    """The first box of the answer: of the last ``<answer>`` block; without a block None, or
    (``lenient``) the first box of the whole completion."""
    text = answer_text(completion, lenient)
    return None if text is None else parse_box(text)


# ---- counts ------------------------------------------------------------------------------------

# fmt: off
_UNIT_WORDS_LIST = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
# fmt: on
_UNITS = {word: value for value, word in enumerate(_UNIT_WORDS_LIST)}
_UNITS["none"] = 0
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_ONES_WORDS = "one|two|three|four|five|six|seven|eight|nine"
# Longest alternatives first so "seventeen" is not read as "seven".
_UNIT_WORDS = "|".join(sorted(_UNITS, key=len, reverse=True))
_TENS_WORDS = "|".join(_TENS)
_NUMBER = re.compile(
    r"(?<![\w.])(?P<digits>[-+]?\d+(?:\.\d+)?)(?![\d])"
    r"|\b(?P<tens>" + _TENS_WORDS + r")(?:[-\s](?P<tens_unit>" + _ONES_WORDS + r"))?\b"
    r"|\b(?P<unit>" + _UNIT_WORDS + r")\b",
    re.IGNORECASE,
)


def _number_value(m: re.Match[str]) -> float:
    if m.group("digits") is not None:
        return float(m.group("digits"))
    if m.group("tens") is not None:
        value = _TENS[m.group("tens").lower()]
        if m.group("tens_unit") is not None:
            value += _UNITS[m.group("tens_unit").lower()]
        return float(value)
    return float(_UNITS[m.group("unit").lower()])


def parse_number(text: str, last: bool = False) -> float | None:
    """The first (or last) number in ``text``: digits ("3", "3.0", "-2") or English words
    ("three", "twenty-one", "none"); None if there is none."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    value = _number_value(matches[-1] if last else matches[0])
    return value if math.isfinite(value) else None


def parse_count(completion: str, lenient: bool = False) -> int | None:
    """The integer count a completion answers, or None.

    Inside the last ``<answer>`` block every number must say the same value: "3", "3.0",
    "three", "There are 3 objects." answer 3, but "3 or 4" and "3 objects (2 red, 1 blue)" are
    ambiguous and answer nothing (the block's first number used to count, so hedging paid).
    Without a block there is no answer, unless ``lenient``: then the LAST number of the whole
    text counts (free text ends with its conclusion: "1, 2, 3 ... so there are 3"). A
    non-integral value such as "3.5" is not a count.
    """
    block = find_answer_block(completion)
    if block is not None:
        values = {_number_value(m) for m in _NUMBER.finditer(block)}
        if len(values) != 1:
            return None
        value: float | None = values.pop()
    elif lenient:
        value = parse_number(completion, last=True)
    else:
        return None
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    return int(value)
