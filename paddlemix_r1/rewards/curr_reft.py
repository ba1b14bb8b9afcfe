"""Curr-ReFT's stage rewards: ``judge`` (yes/no), ``choice`` (option letters), ``open`` and ``curr_format``.

Curr-ReFT (research file Part 1 §1.4) trains one set of tasks -- ``detection``, ``classify``,
``math`` (the rows' ``task`` column) -- through three answer formats: stage 1 judges a statement
(yes/no), stage 2 picks option letters, stage 3 answers openly. Each stage's accuracy reward is
registered under the stage's name; each reads the completion's last closed ``<answer>`` block (no
block: 0) and the gold ``solution`` (``<answer>GT</answer>``, ``<thinking>...</thinking><answer>GT
</answer>`` or the bare GT; only the answer is read).

``judge``        solution. The answer's yes/no equals the gold's. {0, 1}
``choice``       solution. The SET of option letters A-E equals the gold's. {0, 1}
``open``         solution, task; for detection rows also model_family, image_size, resized_size.
                 detection: IoU > 0.5 (in original pixels; {0, 1}); classify: token-set Jaccard
                 ([0, 1]); math: math_verify ({0, 1}).
``curr_format``  task, solution. ``<think>...</think>\\s*<answer>...</answer>``, and for a
                 detection row whose gold is a box, a JSON object holding a box in the answer. {0, 1}

Departures from the released code, each deliberate and tested (tests/rewards/test_curr_reft.py):

- judge: a judgement is a standalone yes/true/correct or no/false/incorrect; when the answer says
  both ("yes or no", "yes/no") it says nothing. Theirs looks for "yes" first, so hedging with both
  words always scored on yes-gold rows. Their math rows' second chance (math_verify of the whole
  completion against ``<answer>yes</answer>``) is left out: math_verify reads no value from
  "yes"/"no", so it never passed (tests/rewards/test_curr_reft.py checks that with the worker).
- choice: the letters compare as a set ("B,A" == "A,B"); theirs compares them in order of
  appearance. Letters are upper-case A-E standing alone ("A cat" is no choice of "a"); an answer
  that is nothing but a list of letters may write them in lower case. A gold without a letter is a
  data error (theirs compared two empty letter lists as equal).
- open / math: math_verify on the answer block only. Theirs falls back to comparing choice-letter
  lists, which are both empty for a numeric gold, so ANY tagged answer scored 1.0 ("12" vs "15"),
  and to a substring test an empty answer passes. A gold math_verify cannot read (a word answer) is
  compared as text instead (equal after ``answer_match.clean_text``), by rule, not by accident.
- open / classify: a list answer ("['cat', 'dog']") is read with ``json`` / ``ast.literal_eval``
  (literals only); theirs called ``ast`` without importing it, so every list answer scored 0.
  Tokens compare case-insensitively, without surrounding quotes and punctuation.
- open / detection: the box in the answer block, in the model family's frame, mapped to original
  pixels (``rewards.coords``, as ``rec_iou``); theirs reads integer boxes only, falls back to the
  whole text and to [0, 0, 0, 0], and mixes inclusive and exclusive pixel conventions in its IoU.
- curr_format: the box in a detection answer may have float coordinates, and only rows whose gold
  IS a box need it: theirs asked every detection row for a JSON box, so detection rows of the
  judge and choice stages could never earn the format reward.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from paddlemix_r1.families import VISION_FAMILIES
from paddlemix_r1.rewards.answer_match import clean_text
from paddlemix_r1.rewards.columns import RewardFn, as_size, check_column, check_completions
from paddlemix_r1.rewards.coords import QWEN2_5_VL
from paddlemix_r1.rewards.format_reward import has_think_answer_format
from paddlemix_r1.rewards.math_answer import MathVerifier, default_verifier, gold_text, score_math_completion
from paddlemix_r1.rewards.parsing import answer_text, find_answer_block, parse_box
from paddlemix_r1.rewards.rec import score_rec_completion

logger = logging.getLogger(__name__)

CURR_TASKS = ("detection", "classify", "math")
"""Curr-ReFT's row ``task`` values (its unused ``coco_vqa`` is not supported)."""
DETECTION_IOU_THRESHOLD = 0.5
"""Curr-ReFT: a detection answer is right when IoU > 0.5 (strictly)."""

# ---- judgements ------------------------------------------------------------------------------------

_JUDGE_WORD = re.compile(r"(?<![a-z])(yes|true|correct|no|false|incorrect)(?![a-z])")
_YES = {"yes", "true", "correct"}


def judgement(text: str) -> str | None:
    """"yes" or "no" if every standalone judgement word of ``text`` (case-insensitive: yes / true /
    correct, no / false / incorrect) says the same, else None (none, or both: "yes or no")."""
    said = {"yes" if m.group(1) in _YES else "no" for m in _JUDGE_WORD.finditer(text.lower())}
    return said.pop() if len(said) == 1 else None


# ---- option letters --------------------------------------------------------------------------------

_LETTER = re.compile(r"(?<![A-Za-z])([A-E])(?![A-Za-z])")
# What separates the letters of an answer that is only letters: "A", "(b)", "A, C", "A and C", "[A] [C].", "A、C".
_LETTER_LIST_SEP = re.compile(r"(?:[\s,，、;/&()\[\].]|\b(?:and|or)\b)+", re.IGNORECASE)


def _letter_list(text: str) -> frozenset[str] | None:
    """The letters of a text that is nothing but option letters (any case) and separators, else None."""
    parts = [p for p in _LETTER_LIST_SEP.split(text) if p]
    if parts and all(len(p) == 1 and p.upper() in "ABCDE" for p in parts):
        return frozenset(p.upper() for p in parts)
    return None


def option_letters(text: str) -> frozenset[str]:
    """The set of option letters A-E in ``text``: upper-case letters standing alone, or every letter
    when the text is nothing but a list of letters (then lower case counts too)."""
    listed = _letter_list(text)
    return listed if listed is not None else frozenset(_LETTER.findall(text))


# ---- what a gold answer is -------------------------------------------------------------------------

_JUDGE_GOLD = re.compile(r"(yes|no|true|false|correct|incorrect)\.?", re.IGNORECASE)


def gold_kind(gold: str) -> str:
    """Which stage a gold answer text belongs to: "judge" (a yes/no word), "choice" (only option
    letters) or "open" (anything else: a box, class names, a math answer)."""
    text = gold.strip()
    if _JUDGE_GOLD.fullmatch(text):
        return "judge"
    if _letter_list(text) is not None:
        return "choice"
    return "open"


def curr_gold(solution: Any, where: str = "solution") -> str:
    """The gold answer text of one row: the last ``<answer>`` block's content (or the whole value),
    stripped. Numbers (SuperCLEVR's ``solution: 4``) become text; a list (a box) becomes JSON."""
    if isinstance(solution, (list, tuple)):
        return json.dumps(list(solution))
    return gold_text(solution, where)


# ---- classification tokens -------------------------------------------------------------------------

_TOKEN_SPLIT = re.compile(r"[,，、\s]+")
_TOKEN_STRIP = "'\"`[](){}.;:!?。"
_MAX_LITERAL = 10_000  # ast.literal_eval is linear, but keep a degenerate rollout from parsing megabytes


def _list_items(text: str) -> list[str] | None:
    """The strings of a list answer ("['cat', 'dog']", '["cat"]'), or None if it is no list of strings."""
    if "[" not in text or len(text) > _MAX_LITERAL:
        return None
    start, end = text.find("["), text.rfind("]")
    if end < start:
        return None
    literal = text[start : end + 1]
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(literal)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
    return None


def class_tokens(text: str) -> frozenset[str]:
    """The class-name tokens of an answer: split on commas, 、 and whitespace (Curr-ReFT's rule, so
    "traffic light" is two tokens), lower-cased, without surrounding quotes, brackets and
    punctuation. A list literal is read as the list of its strings."""
    items = _list_items(text)
    parts = items if items is not None else [text]
    tokens = (t.strip(_TOKEN_STRIP).lower() for p in parts for t in _TOKEN_SPLIT.split(p))
    return frozenset(t for t in tokens if t)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|; 0.0 when both are empty."""
    union = a | b
    return len(a & b) / len(union) if union else 0.0


# ---- scoring one completion (shared by the rewards and the tasks' metrics) -------------------------


def score_judge(completion: str, gold: str, where: str = "solution", lenient: bool = False) -> float:
    """1.0 if the answer's ``judgement`` is the gold's; ValueError if the gold says neither yes nor no."""
    expected = judgement(gold)
    if expected is None:
        raise ValueError(f"{where}: a judge gold answer must say yes or no, got {gold!r}")
    answer = answer_text(completion, lenient)
    return 1.0 if answer is not None and judgement(answer) == expected else 0.0


def score_choice(completion: str, gold: str, where: str = "solution", lenient: bool = False) -> float:
    """1.0 if the answer's set of option letters is the gold's; ValueError if the gold has none."""
    expected = option_letters(gold)
    if not expected:
        raise ValueError(f"{where}: a choice gold answer must name option letters A-E, got {gold!r}")
    answer = answer_text(completion, lenient)
    return 1.0 if answer is not None and option_letters(answer) == expected else 0.0


def score_classify(completion: str, gold: str, where: str = "solution", lenient: bool = False) -> float:
    """Jaccard of the answer's class tokens with the gold's; ValueError if the gold has none."""
    expected = class_tokens(gold)
    if not expected:
        raise ValueError(f"{where}: a classify gold answer must name classes, got {gold!r}")
    answer = answer_text(completion, lenient)
    return 0.0 if answer is None else jaccard(class_tokens(answer), expected)


def score_math(completion: str, gold: str, verifier: MathVerifier, where: str = "solution",
               lenient: bool = False) -> float:
    """1.0 if math_verify finds the answer equal to the gold (choice-letter golds compare letters);
    a gold math_verify cannot parse is compared as text (equal after ``clean_text``)."""
    try:
        s = score_math_completion(completion, gold, verifier, where, lenient=lenient)
    except ValueError:  # the gold is no math: "blue", "a cube"
        answer = answer_text(completion, lenient)
        return 1.0 if answer is not None and clean_text(answer) == clean_text(gold) else 0.0
    if s.status in ("timeout", "error"):
        logger.warning("open reward (math): %s scored 0 (%s: %s)", where, s.status, s.detail)
    return 1.0 if s.correct else 0.0


def gold_box_of(gold: str, where: str = "solution") -> tuple[float, float, float, float]:
    """The [x1, y1, x2, y2] box of a detection gold (original pixels); ValueError if it has none."""
    box = parse_box(gold)
    if box is None:
        raise ValueError(f"{where}: a detection gold answer must hold an [x1, y1, x2, y2] box, got {gold!r}")
    return box


def detection_iou(completion: str, gold: str, model_family: str, image_size: Sequence[float],
                  resized_size: Sequence[float] | None, where: str = "solution", lenient: bool = False) -> float:
    """IoU, in original pixels, of the answer's first box (in ``model_family``'s frame) with the gold box."""
    return score_rec_completion(completion, gold_box_of(gold, where), model_family, image_size, resized_size,
                                lenient=lenient).iou


# ---- the rewards -----------------------------------------------------------------------------------


def _golds(reward: str, completions: list[str], solution: Sequence[Any]) -> list[str]:
    check_completions(completions, reward)
    check_column(solution, "solution", len(completions), reward)
    return [curr_gold(solution[i], f"{reward}: solution[{i}]") for i in range(len(completions))]


def _task(reward: str, task: Sequence[Any], i: int) -> str:
    if task[i] not in CURR_TASKS:
        raise ValueError(f"{reward}: task[{i}] must be one of {CURR_TASKS}, got {task[i]!r}")
    return task[i]


def judge_reward(completions: list[str], *, solution: Sequence[Any], **_columns: Any) -> list[float]:
    """Stage 1: 1.0 if the answer judges as the gold does (``judgement``: yes/true/correct vs
    no/false/incorrect, standalone words, every one agreeing), else 0.0."""
    golds = _golds("judge", completions, solution)
    return [score_judge(c, g, f"judge: solution[{i}]") for i, (c, g) in enumerate(zip(completions, golds))]


def choice_reward(completions: list[str], *, solution: Sequence[Any], **_columns: Any) -> list[float]:
    """Stage 2: 1.0 if the answer's set of option letters A-E equals the gold's (order-insensitive,
    all or nothing: single choice and classify's select-all alike), else 0.0."""
    golds = _golds("choice", completions, solution)
    return [score_choice(c, g, f"choice: solution[{i}]") for i, (c, g) in enumerate(zip(completions, golds))]


def make_open_reward(verifier: MathVerifier | None = None) -> RewardFn:
    """An ``open`` reward whose math rows use ``verifier`` (default: the process-wide math_verify worker)."""

    def open_reward(
        completions: list[str],
        *,
        solution: Sequence[Any],
        task: Sequence[Any],
        model_family: Sequence[Any] | None = None,
        image_size: Sequence[Any] | None = None,
        resized_size: Sequence[Any] | None = None,
        **_columns: Any,
    ) -> list[float]:
        """Stage 3, by the row's ``task``: detection 1.0 iff IoU > 0.5 (``model_family``, ``image_size``
        and, for qwen2_5_vl, ``resized_size`` required), classify the token-set Jaccard, math 1.0 iff
        math_verify says equal."""
        golds = _golds("open", completions, solution)
        n = len(completions)
        check_column(task, "task", n, "open")
        scores = []
        for i, (completion, gold) in enumerate(zip(completions, golds)):
            where = f"open: solution[{i}]"
            kind = _task("open", task, i)
            if kind == "classify":
                scores.append(score_classify(completion, gold, where))
            elif kind == "math":
                scores.append(score_math(completion, gold, verifier or default_verifier(), where))
            else:
                family, size, resized = _box_frame(i, n, model_family, image_size, resized_size)
                iou = detection_iou(completion, gold, family, size, resized, where)
                scores.append(1.0 if iou > DETECTION_IOU_THRESHOLD else 0.0)
        return scores

    return open_reward


def _box_frame(i: int, n: int, model_family: Sequence[Any] | None, image_size: Sequence[Any] | None,
               resized_size: Sequence[Any] | None) -> tuple[str, tuple[float, float], tuple[float, float] | None]:
    """Row i's (model family, original size, resized size) for a detection row, checked."""
    check_column(model_family, "model_family", n, "open")
    check_column(image_size, "image_size", n, "open")
    family = model_family[i]  # type: ignore[index]
    if family not in VISION_FAMILIES:
        raise ValueError(f"open: model_family[{i}] must be one of {VISION_FAMILIES}, got {family!r}")
    size = as_size(image_size[i], "image_size", i, "open")  # type: ignore[index]
    if family != QWEN2_5_VL:
        return family, size, None
    if resized_size is None or resized_size[i] is None:
        raise ValueError(f"open: column 'resized_size' is required for model_family 'qwen2_5_vl' (row {i}): "
                         "its boxes are in pixels of the resized image")
    check_column(resized_size, "resized_size", n, "open")
    return family, size, as_size(resized_size[i], "resized_size", i, "open")


open_reward = make_open_reward()

# A JSON object holding a box: "{", then [n, n, n, n], then "}" (Curr-ReFT: ``\\{.*\\[\\d+,\\s*\\d+,...\\].*\\}``).
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_INLINE_BOX = re.compile(r"\[\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*\]")


def has_json_box(answer: str) -> bool:
    """``answer`` holds a ``{`` ... ``[x1, y1, x2, y2]`` ... ``}`` (a JSON object with a box in it)."""
    opening = answer.find("{")
    if opening < 0:
        return False
    m = _INLINE_BOX.search(answer, opening + 1)
    return m is not None and answer.find("}", m.end()) >= 0


def curr_format_reward(completions: list[str], *, task: Sequence[Any], solution: Sequence[Any],
                       **_columns: Any) -> list[float]:
    """1.0 if the completion is ``<think>...</think>\\s*<answer>...</answer>`` and, for a detection
    row whose gold is a box (the open stage), the answer holds a JSON object with a box; else 0.0."""
    golds = _golds("curr_format", completions, solution)
    check_column(task, "task", len(completions), "curr_format")
    scores = []
    for i, (completion, gold) in enumerate(zip(completions, golds)):
        ok = has_think_answer_format(completion)
        if ok and _task("curr_format", task, i) == "detection" and gold_kind(gold) == "open":
            block = find_answer_block(completion)
            ok = block is not None and has_json_box(block)
        scores.append(1.0 if ok else 0.0)
    return scores
