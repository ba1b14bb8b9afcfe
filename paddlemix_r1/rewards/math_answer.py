"""Math / geometry reward: math_verify on the extracted answer against the gold answer.

Column ``solution``: the gold answer per completion -- "140°", "<answer> 140° </answer>", LaTeX
("\\frac{4}{3}", "$2\\sqrt{3}$"), GeoQA's forms with units and unicode ("2√{15}米", "4πcm"), or a
choice letter ("B", "(B)"). A gold answer math_verify cannot parse raises ValueError naming the
row: it is a data error, and a reward that is silently always 0 trains nothing.

Scoring one completion:

1. The answer is the last closed ``<answer>`` block; a completion without one scores 0 (the
   whole-text fallback is ``lenient=True``, for ``baseline`` evaluation only).
2. Gold is a choice letter A-E: the prediction's choice letter ("B", "(B)", "B. 140°",
   "answer is B", "\\boxed{B}") must be the same letter. No math_verify.
3. Otherwise both texts are normalized (``normalize_math_text``: degree signs and trailing units
   dropped, "√{3}"/"√3" -> "\\sqrt{3}", "π" -> "\\pi", and the plain-text spellings models use,
   "2sqrt(3)" -> "2\\sqrt{3}", "9pi" -> "9\\pi"), bare LaTeX is wrapped in ``$...$``
   (math_verify only reads LaTeX inside delimiters: bare "2\\sqrt{3}" parses as 2), and
   math_verify's ``verify(gold, prediction)`` decides.
4. Each side is read from its candidate texts (``math_candidates``: the focused, delimited reading,
   then the whole text) by the first candidate in which math_verify finds anything. A reading that
   times out or raises is final: the check scores 0 with status "timeout" / "error" instead of
   falling back to the bare text, where math_verify would search for any expression and credit a
   fragment ("\\frac{1}{2}+" * 1000 + "1" holds "\\frac{1}{2}"), and the score would depend on
   whether the machine was loaded enough for the first reading to time out.
5. math_verify runs in a worker process (``MathVerifier``) with a hard wall-clock deadline per
   answer; a timeout, a worker crash or any math_verify error scores 0.

Why our own worker rather than ``pebble.ProcessPool`` or ``concurrent.futures``: a
``ProcessPoolExecutor`` cannot stop a task that is running (``Future.cancel`` only drops queued ones,
and killing a worker breaks the whole pool), so it cannot enforce a deadline. ``pebble`` can, but it
starts workers through ``multiprocessing``: with "fork" it copies a training process that holds
Paddle's threads (a child forked while another thread holds the allocator's lock can deadlock), and
with "spawn" / "forkserver" each worker re-imports the parent's ``__main__`` module and this package
(Paddle included) before it can answer. ``_math_worker.py`` is started by path and imports only
math_verify, so a restart after a timeout costs about a second; the protocol, the deadline, the
restart and the address-space limit are the ~150 lines below, tested in tests/rewards/test_math.py
(inner alarm, hard deadline, worker thread, forked child).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paddlemix_r1.rewards.columns import RewardFn, check_column, check_completions
from paddlemix_r1.rewards.parsing import answer_text, extract_answer

if TYPE_CHECKING:
    from typing import Self  # annotations only: the package supports Python 3.10

logger = logging.getLogger(__name__)

_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_math_worker.py")

DEFAULT_TIMEOUT_S = 3.0
DEFAULT_OP_TIMEOUT_S = 1
DEFAULT_MEMORY_LIMIT_MB = 4096
STARTUP_TIMEOUT_S = 120.0


# ---- text preparation ---------------------------------------------------------------------------

# Longest first, so "平方米" is removed whole rather than leaving "平方".
# fmt: off
_UNIT_NAMES = sorted(
    [
        "平方厘米", "平方分米", "平方千米", "平方米", "立方厘米", "立方米", "厘米", "毫米", "分米", "千米", "公里", "海里",
        "小时", "分钟", "米", "秒", "度", "cm", "mm", "dm", "km", "m", "degrees", "degree", "units", "unit",
    ],
    key=len,
    reverse=True,
)
# fmt: on
_UNIT_ALT = "|".join(map(re.escape, _UNIT_NAMES))
_POWER = r"(?:\^(?:\{[23]\}|[23])\^?|[²³])?"
# A unit at the very end, bare ("12cm", "9米", "27cm^{2}") or wrapped ("12\text{cm}"). The
# look-behind keeps the "m" of a command such as "\sum" or of a word from being read as metres.
_TRAILING_UNIT = re.compile(
    r"(?:\\(?:text|mathrm|mbox|rm)\s*\{\s*(?:" + _UNIT_ALT + r")" + _POWER + r"\s*\}"
    r"|(?<![A-Za-z\\])(?:" + _UNIT_ALT + r")" + _POWER + r")\s*(?:[.。]\s*)?$"
)
_DEGREE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°")
# Plain-text spellings (D1, R1-V's GeoQA logs: "2sqrt(3)", "4 * pi", "9pi"). The look-behind keeps
# LaTeX commands ("\\sqrt", "\\pi") and words ("pixel", "api", "pine") out; "(...)" must not nest.
_SQRT_PAREN = re.compile(r"(?:√|\\sqrt|(?<![A-Za-z\\])sqrt)\s*\(([^()]*)\)")
_SQRT_WORD_BRACED = re.compile(r"(?<![A-Za-z\\])sqrt\s*\{")
_SQRT_WORD_ATOM = re.compile(r"(?<![A-Za-z\\])sqrt\s*(\d+(?:\.\d+)?|[A-Za-z](?![A-Za-z]))")
_PI_WORD = re.compile(r"(?<![A-Za-z\\])pi(?![A-Za-z])")
_SQRT_BRACED = re.compile(r"√\s*\{")
_SQRT_ATOM = re.compile(r"√\s*(\d+(?:\.\d+)?|[A-Za-z])")
_REPLACEMENTS = (
    ("π", r"\pi "),
    ("×", r"\times "),
    ("·", r"\cdot "),
    ("÷", r"\div "),
    ("−", "-"),
    ("（", "("),
    ("）", ")"),
    ("，", ","),
    ("：", ":"),
)
_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_PROSE = re.compile(r"[A-Za-z]{2,}|[\u4e00-\u9fff]")
_LAST_ASSIGNMENT = re.compile(r"(?:\bis\b|\bequals\b|=|:)")


def normalize_math_text(text: str) -> str:
    """Rewrite an answer into something math_verify reads: no degree signs or trailing units,
    "√" and "π" (and "sqrt(3)", "sqrt3", "pi") as LaTeX. Idempotent; never raises."""
    text = _DEGREE.sub("", text)
    text = _SQRT_PAREN.sub(r"\\sqrt{\1}", text)
    text = _SQRT_WORD_BRACED.sub(r"\\sqrt{", text)
    text = _SQRT_WORD_ATOM.sub(r"\\sqrt{\1}", text)
    text = _PI_WORD.sub(r"\\pi ", text)
    text = _SQRT_BRACED.sub(r"\\sqrt{", text)
    text = _SQRT_ATOM.sub(r"\\sqrt{\1}", text)
    text = text.replace("√", r"\sqrt")
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = text.strip()
    for _ in range(3):  # "16π平方米." and "cm^2^" style stacks; three passes cover them
        stripped = _TRAILING_UNIT.sub("", text).strip()
        if stripped == text or not stripped:
            break
        text = stripped
    return text


def _is_expression(text: str) -> bool:
    """No words outside LaTeX commands: "2\\sqrt{3}", "x=5", "\\frac{4}{3}" but not prose."""
    return _PROSE.search(_COMMAND.sub("", text)) is None


def _wrap_latex(text: str) -> str:
    if "\\" in text and not _DELIMITED.search(text):
        return f"${text}$"
    return text


def math_candidates(answer: str) -> list[str]:
    """Texts to hand math_verify for one answer, in order of preference (see the worker).

    First the normalized answer -- or, for prose, what follows its last "is" / "=" / ":" --
    with bare LaTeX wrapped in ``$...$``; then the normalized answer as a whole.
    """
    text = normalize_math_text(answer)
    focus = text
    if not _is_expression(text):
        tail = None
        for m in _LAST_ASSIGNMENT.finditer(text):
            tail = text[m.end() :].strip()
        if tail and _is_expression(tail):
            focus = tail
    candidates = [_wrap_latex(focus)]
    if text not in candidates:
        candidates.append(text)
    return candidates


_GOLD_CHOICE = re.compile(r"\(?([A-E])\)?[.:]?")
_PRED_CHOICE_PATTERNS = (
    # leading "(B) ...", or "B" alone / followed by "." ":" ")"
    re.compile(r"^\s*(?:\(([A-E])\)|([A-E])\s*(?:[.:)]|$))"),
    re.compile(r"\\boxed\{\s*\(?([A-E])\)?\s*\}"),
    re.compile(r"(?i:answer|option|choice)\s*(?:(?i:is)\b\s*)?(?::\s*)?\(?([A-E])\)?(?![A-Za-z])"),
)


def gold_choice(gold: str) -> str | None:
    """The choice letter if the gold answer is one ("B", "(B)", "B."), else None."""
    m = _GOLD_CHOICE.fullmatch(gold.strip())
    return m.group(1) if m else None


def predicted_choice(answer: str) -> str | None:
    """The choice letter an answer gives: leading "B" / "(B)" / "B." / "B:", "\\boxed{B}", or
    "answer is B" / "option (B)"; None if none. "A triangle ..." is not a choice."""
    for pattern in _PRED_CHOICE_PATTERNS:
        m = pattern.search(answer)
        if m:
            return next(g for g in m.groups() if g)
    return None


# ---- the worker ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MathOutcome:
    """math_verify's verdict on one (gold, prediction) pair.

    status: "correct", "wrong", "no_answer" (nothing parsable in the prediction), "gold_unparsed",
    "timeout" (past the deadline, or math_verify's own alarm while reading or comparing), "error"
    (math_verify raised while reading the prediction, or the worker died). ``gold`` / ``pred`` are short printable forms of what was parsed.
    """

    status: str
    gold: str | None = None
    pred: str | None = None
    detail: str = ""

    @property
    def correct(self) -> bool:
        return self.status == "correct"


class MathVerifier:
    """Runs math_verify in a worker process with a hard deadline per answer.

    timeout_s: wall-clock budget for one (gold, prediction) check, measured from the request;
        past it the worker is killed (and restarted on the next call) and the check is a timeout.
    op_timeout_s: math_verify's own per-parse / per-comparison alarm inside the worker (whole
        seconds; None or 0 disables it). It stops pure-Python hangs without a restart.
    memory_limit_mb: address-space limit of the worker (None: no limit).

    Thread-safe (one check at a time); usable from any thread, unlike math_verify's own timeout.
    A worker that cannot start (math_verify not importable, ...) raises RuntimeError: that is a
    broken environment, not a bad answer.
    """

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        op_timeout_s: int | None = DEFAULT_OP_TIMEOUT_S,
        memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB,
        python: str = sys.executable,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.op_timeout_s = int(op_timeout_s or 0)
        self.memory_limit_mb = int(memory_limit_mb or 0)
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()
        self._buffer = b""
        self._next_id = 0
        self._lock = threading.Lock()
        self.restarts = 0  # how many times a worker had to be replaced (timeouts, crashes)

    # -- process management

    def _start(self) -> None:
        self._owner_pid = os.getpid()
        cmd = [
            self.python,
            _WORKER_SCRIPT,
            "--op-timeout",
            str(self.op_timeout_s),
            "--memory-mb",
            str(self.memory_limit_mb),
        ]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, bufsize=0)
        self._buffer = b""
        line = self._read_line(time.monotonic() + STARTUP_TIMEOUT_S)
        if line is None:
            self._kill()
            raise RuntimeError(f"math_verify worker did not start within {STARTUP_TIMEOUT_S:.0f} s: {' '.join(cmd)}")
        ready = json.loads(line)
        if not ready.get("ready"):
            self._kill()
            raise RuntimeError(f"math_verify worker failed to start: {ready.get('detail', line)}")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        """Stop the worker (a later check starts a new one)."""
        with self._lock:
            self._kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_line(self, deadline: float) -> bytes | None:
        """One line from the worker, or None at the deadline or when the worker has exited."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        # selectors (epoll/poll), not select.select: a training process can hold > 1024 fds.
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:  # EOF: the worker died
                    return None
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _write(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        view = memoryview(data)
        while view:  # an unbuffered pipe write may be partial
            view = view[self._proc.stdin.write(view) :]

    # -- checks

    def check(self, gold: Sequence[str], pred: Sequence[str]) -> MathOutcome:
        """Verify prediction candidates against gold candidates (each in order of preference)."""
        with self._lock:
            if self._owner_pid != os.getpid():
                # A forked copy (e.g. a data-loader worker) must not talk on its parent's pipes.
                self._proc, self._buffer, self._owner_pid = None, b"", os.getpid()
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self.restarts += 1
                    self._kill()
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            self._next_id += 1
            request = {"id": self._next_id, "gold": list(gold), "pred": list(pred)}
            deadline = time.monotonic() + self.timeout_s
            try:
                self._write((json.dumps(request) + "\n").encode("utf-8"))
            except (BrokenPipeError, OSError) as e:
                self._kill()
                return MathOutcome("error", detail=f"math_verify worker pipe closed: {e}")
            line = self._read_line(deadline)
            if line is None:
                exited = self._proc.poll() is not None
                self.restarts += 1
                self._kill()
                if exited:
                    return MathOutcome("error", detail="math_verify worker exited during the check")
                return MathOutcome("timeout", detail=f"no verdict within {self.timeout_s:g} s; worker restarted")
            response = json.loads(line)
            if response.get("id") != request["id"]:
                self._kill()
                return MathOutcome("error", detail=f"math_verify worker answered out of order: {line[:200]!r}")
            return MathOutcome(
                response["status"], response.get("gold"), response.get("pred"), response.get("detail", "")
            )


_default_verifier: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide verifier the registered ``math`` reward uses (started on first use)."""
    global _default_verifier
    with _default_lock:
        if _default_verifier is None:
            _default_verifier = MathVerifier()
            atexit.register(_default_verifier.close)
        return _default_verifier


# ---- scoring ------------------------------------------------------------------------------------


class GoldUnparsedError(ValueError):
    """math_verify finds nothing it can read in a gold answer (a data error; the message names the row)."""


@dataclass(frozen=True)
class MathScore:
    """One completion scored: correct or not, what was read as its answer, and how it went."""

    correct: bool
    parsed: str | None
    status: str
    detail: str = ""


def gold_text(solution: Any, where: str = "solution") -> str:
    """The gold answer text of one row (answer tags removed)."""
    if isinstance(solution, bool) or not isinstance(solution, (str, int, float)):
        raise TypeError(f"{where}: gold answer must be a string or a number, got {solution!r}")
    text = extract_answer(str(solution))
    if not text:
        raise ValueError(f"{where}: gold answer is empty")
    return text


def score_math_completion(
    completion: str, gold: str, verifier: MathVerifier, where: str = "solution", lenient: bool = False
) -> MathScore:
    """Score one completion against one gold answer text (see the module docstring).

    ``lenient``: without an answer block, read the whole completion (``baseline`` evaluation
    only; training requires the block).
    """
    answer = answer_text(completion, lenient)
    if answer is None:
        return MathScore(False, None, "no_answer")
    letter = gold_choice(gold)
    if letter is not None:
        predicted = predicted_choice(answer)
        if predicted is None:
            return MathScore(False, None, "no_answer")
        return MathScore(predicted == letter, predicted, "correct" if predicted == letter else "wrong")
    outcome = verifier.check(math_candidates(gold), math_candidates(answer))
    if outcome.status == "gold_unparsed":
        detail = f" ({outcome.detail})" if outcome.detail else ""
        raise GoldUnparsedError(f"{where}: math_verify cannot parse the gold answer {gold[:200]!r}{detail}")
    return MathScore(outcome.correct, outcome.pred, outcome.status, outcome.detail)


def make_math_reward(verifier: MathVerifier | None = None) -> RewardFn:
    """A ``math`` reward bound to ``verifier`` (default: the process-wide one)."""

    def math_reward(completions: list[str], *, solution: Sequence[Any], **_columns: Any) -> list[float]:
        """1.0 if math_verify finds the answer (last ``<answer>`` block) equal to the gold
        ``solution``, else 0.0 (also without an answer block, on timeout or math_verify error)."""
        check_completions(completions, "math")
        check_column(solution, "solution", len(completions), "math")
        v = verifier if verifier is not None else default_verifier()
        scores = []
        for i, completion in enumerate(completions):
            where = f"math: solution[{i}]"
            score = score_math_completion(completion, gold_text(solution[i], where), v, where)
            if score.status in ("timeout", "error"):
                logger.warning("math reward: completion %d scored 0 (%s: %s)", i, score.status, score.detail)
            scores.append(1.0 if score.correct else 0.0)
        return scores

    return math_reward


math_reward = make_math_reward()
