"""Text-answer accuracy rewards under VLM-R1's method names: ``default``, ``mcq``, ``yes_no``, ``all_match``.

Reimplemented from the description of VLM-R1's ``grpo_jsonl.py`` (../shared/research/vlm_r1_and_racro.md
§1.3), with its bugs fixed (each one has a literal-string test in tests/rewards/test_answer_match.py).

Column ``solution``: the gold answer per completion, a string (answer tags optional: VLM-R1 rows
store ``"<answer> B </answer>"``) or a number. A gold the method cannot use raises ValueError naming
the row (an empty gold; no choice letter for ``mcq``; neither "yes" nor "no" for ``yes_no``): that is
a data error, and a reward that is silently always 0 (or always 1: VLM-R1's ``yes_no`` scores two
answers without yes/no as equal) trains nothing.

The answer is the completion's last closed ``<answer>`` block; a completion without one scores 0.
VLM-R1 falls back to the whole text, which credits an answer that appears only in the reasoning
(the D3 defect; ``parsing`` module docstring). Departures from VLM-R1, each deliberate:

- ``yes_no`` matches whole words: VLM-R1's ``re.search('(yes|no)')`` reads "not", "know", "none"
  and "nothing" as "no", so "I do not know" matched the gold "no".
- ``mcq`` and ``default`` read every answer from its last block (VLM-R1's ``mcq`` takes the first),
  recognise "(B)", "[B]", "\\boxed{B}" and "answer is B" (VLM-R1's letter regex needs a following
  punctuation mark, so "(B)" was no choice), and score a multi-letter text at each letter's own
  position (VLM-R1 looks the letter up again with ``text.find``, i.e. its first occurrence
  anywhere, such as the "B" of "BECAUSE").
- ``default`` calls math_verify with the gold as gold (VLM-R1 swaps the arguments), through the
  time-bounded worker and the GeoQA normalisation of the ``math`` reward; a gold containing a digit
  needs an exact answer (equal numbers, or equal cleaned text): VLM-R1 gives such golds fuzzy
  partial credit whenever a side is not a bare float ("16 apples" vs "15 apples" scored 0.89).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from rapidfuzz.distance import Indel

from paddlemix_r1.rewards.columns import RewardFn, check_column, check_completions
from paddlemix_r1.rewards.math_answer import MathVerifier, default_verifier, gold_text, math_candidates
from paddlemix_r1.rewards.parsing import answer_text

logger = logging.getLogger(__name__)


# ---- text normalisation --------------------------------------------------------------------------

_SPACED_NEWLINE = re.compile(r"(?<=\s)[\n\r]")
_BARE_NEWLINE = re.compile(r"[\n\r]")


def clean_text(text: str) -> str:
    """VLM-R1's ``clean_text`` on an already extracted answer: a newline after whitespace is
    dropped, any other becomes a space; then strip, drop trailing periods, lower-case."""
    text = _SPACED_NEWLINE.sub("", text)
    text = _BARE_NEWLINE.sub(" ", text)
    return text.strip().rstrip(".").lower()


def fuzzy_ratio(a: str, b: str) -> float:
    """Normalised Indel similarity in [0, 1]: exactly python-Levenshtein's ``ratio``, which VLM-R1
    uses (rapidfuzz implements it; 1 - (insertions + deletions) / (len(a) + len(b)))."""
    return float(Indel.normalized_similarity(a, b))


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def as_number(text: str) -> float | None:
    """The value of a text that is one plain number ("12", "-0.5", "1e3"), else None."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if value == value and abs(value) != float("inf") else None


# ---- choice letters ------------------------------------------------------------------------------

# The whole answer is a letter: "B", "(B)", "[b]", "B.", "B:".
_BARE_CHOICE = re.compile(r"[(\[]?\s*([A-Za-z])\s*[)\]]?\s*[.:。]?")
# The answer opens with a letter: "(B) 140°", "B. 140°", "B) 140", "B: yes".
_LEADING_CHOICE = re.compile(r"[(\[]\s*([A-Z])\s*[)\]]|([A-Z])[.:)](?=\s|$)")
# The answer names its letter: "\boxed{B}", "the answer is (B)", "option C", "答案是B", "选B".
_NAMED_CHOICE = re.compile(
    r"\\boxed\{\s*\(?([A-Z])\)?\s*\}"
    r"|(?i:answer|option|choice)\s*(?:(?i:is)\s*)?[:：]?\s*[(\[]?([A-Z])[)\]]?(?![A-Za-z])"
    r"|(?:答案|选项|选择|选)\s*(?:是|为)?\s*[:：]?\s*[(\[（]?([A-Z])(?![A-Za-z])"
)
# VLM-R1's candidate rule, on the upper-cased text: a letter with no letter before it and
# punctuation (or the end) after it.
_CANDIDATE = re.compile(r"(?<![A-Z])([A-Z])(?=[.,?!:;]|$)")
# fmt: off
_KEYWORDS = (
    "答案", "选择", "正确", "是", "对", "ANSWER", "CORRECT", "CHOOSE", "SELECT", "RIGHT",
    "认为", "应该", "觉得", "THINK", "BELIEVE", "SHOULD",
)
# fmt: on


def extract_choice(text: str) -> str | None:
    """The choice letter (upper-case) a text gives, or None.

    In order: the whole text is a letter ("B", "(b)", "B."); it opens with one ("(B) 140°",
    "B. 140°"); it names one ("answer is B", "\\boxed{C}", "答案是B", the last such mention);
    else VLM-R1's heuristic: among letters followed by punctuation or the end of the text, the one
    with the most keywords within 20 characters, +2 in the last 30% of the text, +1 when followed
    by ``。.!！,，`` (ties: the first), each scored at its own position.
    """
    stripped = text.strip()
    m = _BARE_CHOICE.fullmatch(stripped)
    if m:
        return m.group(1).upper()
    m = _LEADING_CHOICE.match(stripped)
    if m:
        return next(g for g in m.groups() if g)
    named = [next(g for g in m.groups() if g) for m in _NAMED_CHOICE.finditer(stripped)]
    if named:
        return named[-1]
    upper = re.sub(r"\s+", " ", stripped.upper())
    candidates = list(_CANDIDATE.finditer(upper))
    if not candidates:
        return None
    best, best_score = None, -1
    for c in candidates:
        pos = c.start()
        context = upper[max(0, pos - 20) : pos + 20]
        score = sum(1 for k in _KEYWORDS if k in context)
        if pos > len(upper) * 0.7:
            score += 2
        if pos + 1 < len(upper) and upper[pos + 1] in "。.!！,，":
            score += 1
        if score > best_score:
            best, best_score = c.group(1), score
    return best


# ---- yes / no ------------------------------------------------------------------------------------

_YES_NO = re.compile(r"\b(yes|no)\b")


def extract_yes_no(text: str) -> str | None:
    """The first whole word "yes" or "no" (case-insensitive), or None: "not", "know", "none" and
    "nothing" are not "no"."""
    m = _YES_NO.search(text.lower())
    return m.group(1) if m else None


# ---- rewards -------------------------------------------------------------------------------------


def _golds(reward: str, completions: list[str], solution: Sequence[Any]) -> list[str]:
    check_completions(completions, reward)
    check_column(solution, "solution", len(completions), reward)
    return [gold_text(solution[i], where=f"{reward}: solution[{i}]") for i in range(len(completions))]


def mcq_reward(completions: list[str], *, solution: Sequence[Any], **_columns: Any) -> list[float]:
    """1.0 if the answer's choice letter (``extract_choice``) is the gold's, else 0.0.

    A gold without a choice letter raises (VLM-R1 compares against the raw gold string instead,
    which no letter can equal: every row scored 0).
    """
    return _same_extraction("mcq", extract_choice, "has no choice letter", completions, solution)


def yes_no_reward(completions: list[str], *, solution: Sequence[Any], **_columns: Any) -> list[float]:
    """1.0 if the answer's first whole-word "yes"/"no" is the gold's, else 0.0 (also when the
    answer has neither). A gold with neither raises (VLM-R1 scores it 1.0 against any answer that
    has neither, e.g. an empty one)."""
    return _same_extraction("yes_no", extract_yes_no, "says neither yes nor no", completions, solution)


def _same_extraction(name: str, extract: Callable[[str], Any], missing: str, completions: list[str],
                     solution: Sequence[Any]) -> list[float]:
    """1.0 where ``extract`` reads the same value from the answer block as from the gold, else 0.0; a gold
    it reads nothing from raises ValueError ("<name>: solution[i] <missing>")."""
    golds = _golds(name, completions, solution)
    scores = []
    for i, (completion, gold) in enumerate(zip(completions, golds)):
        expected = extract(gold)
        if expected is None:
            raise ValueError(f"{name}: solution[{i}] {missing}: {gold!r}")
        answer = answer_text(completion)
        scores.append(1.0 if answer is not None and extract(answer) == expected else 0.0)
    return scores


def all_match_reward(completions: list[str], *, solution: Sequence[Any], **_columns: Any) -> list[float]:
    """1.0 if the answer equals the gold after ``clean_text`` (case, surrounding space, newlines,
    trailing periods), else 0.0. VLM-R1 uses it for its GUI multi-image defect names."""
    golds = _golds("all_match", completions, solution)
    scores = []
    for completion, gold in zip(completions, golds):
        answer = answer_text(completion)
        scores.append(1.0 if answer is not None and clean_text(answer) == clean_text(gold) else 0.0)
    return scores


def score_default(answer: str, gold: str, verifier: MathVerifier) -> float:
    """VLM-R1's ``default`` cascade on one extracted answer, with the fixes of the module docstring.

    1. math_verify(gold, answer) says equal: 1.0.
    2. The gold contains a digit: 1.0 if both are equal plain numbers or the cleaned texts are
       equal, else 0.0 (no partial credit).
    3. The gold is a choice letter (``extract_choice``): 1.0 if the answer gives the same letter.
    4. Otherwise the fuzzy ratio of the cleaned texts, in [0, 1].
    """
    outcome = verifier.check(math_candidates(gold), math_candidates(answer))
    if outcome.correct:
        return 1.0
    if outcome.status in ("timeout", "error"):
        logger.warning("default reward: math_verify %s (%s); the text rules decide", outcome.status, outcome.detail)
    clean_answer, clean_gold = clean_text(answer), clean_text(gold)
    if any(ch.isdigit() for ch in gold):
        gold_value = as_number(clean_gold)
        if gold_value is not None and as_number(clean_answer) == gold_value:
            return 1.0
        return 1.0 if clean_answer == clean_gold else 0.0
    letter = extract_choice(gold)
    if letter is not None:
        return 1.0 if extract_choice(answer) == letter else 0.0
    return fuzzy_ratio(clean_answer, clean_gold)


def make_default_reward(verifier: MathVerifier | None = None) -> RewardFn:
    """A ``default`` reward bound to ``verifier`` (default: the process-wide math_verify worker)."""

    def default_reward(completions: list[str], *, solution: Sequence[Any], **_columns: Any) -> list[float]:
        """VLM-R1's ``default`` accuracy (``score_default``): math_verify, then exact numbers, then
        choice letters, then a fuzzy ratio in [0, 1]. No answer block: 0.0."""
        golds = _golds("default", completions, solution)
        v = verifier if verifier is not None else default_verifier()
        scores = []
        for completion, gold in zip(completions, golds):
            answer = answer_text(completion)
            scores.append(0.0 if answer is None else score_default(answer, gold, v))
        return scores

    return default_reward


default_reward = make_default_reward()
