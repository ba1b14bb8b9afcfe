"""The ``reasoner`` reward (RACRO): a caption is worth what a frozen text-only reasoner can answer from it.

For each completion (a caption of the row's image, written for the row's question) the reasoner gets
RACRO's training prompt (``reasoner_messages``; verl-main ``ray_trainer_caption.py``, the active code)::

    system  "You are a helpful assistant."
    user    "### The detailed caption of the provided image: {caption}\\n\\n### Question: {question}"
            " Please think step by step. The final answer MUST BE put in \\boxed{}."

with the VQA suffix "Please try to answer the question with short words or phrases if possible."
removed from the question, as RACRO does. The reasoner samples ``num_samples`` answers per caption;
each is graded by its LAST brace-balanced ``\\boxed{...}`` against the gold (an outer ``\\boxed{}`` of
the gold is stripped first: ViRL39K golds are written that way). The reward is the mean correctness
over the samples, in [0, 1]. RACRO samples one answer (n = 1) at temperature 1.0.

Grading (``grade_boxed``), in mathruler's order as RACRO's reward uses it: a choice-letter gold needs
the same letter; equal strings (spaces, ``$``, a final period and case aside) are correct; otherwise
math_verify (``rewards.math_answer``: the same normalisation and worker as the ``math`` reward) decides.
A gold math_verify cannot parse ("Yes", a word) is then only matched as a string: that is mathruler's
behaviour too, so it is not an error here.

The reasoner runs in-process (``InProcessReasoner``: our engine, batched across every completion of the
call, on a chosen device) or behind an OpenAI-compatible server (``HTTPReasoner``: ``{url}/chat/completions``
with ``n``, ``temperature``, ``top_p``, ``max_tokens``). The reward never raises on what the reasoner
returns: a failed request, a short or malformed reply, an answer without ``\\boxed{}`` each score 0 and
are counted (``Reasoner.stats()``: calls, failures, no_boxed, and the seconds spent generating, to be
logged apart from the policy's rollout time). A missing column or an empty gold raises, naming the row.

``set_default_reasoner`` installs the reasoner the registered ``reasoner`` reward uses (the training
set-up builds it from ``ReasonerConfig``); without one the reward raises RuntimeError (a broken set-up,
not a bad caption).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

from paddlemix_r1.rewards.columns import RewardFn, check_column, check_completions
from paddlemix_r1.rewards.math_answer import (
    MathVerifier,
    default_verifier,
    gold_choice,
    math_candidates,
    predicted_choice,
)

logger = logging.getLogger(__name__)

REASONER_SYSTEM = "You are a helpful assistant."
VQA_SUFFIX = "Please try to answer the question with short words or phrases if possible."
BOXED_INSTRUCTION = " Please think step by step. The final answer MUST BE put in \\boxed{}."
MAX_RESPONSE_BYTES = 16 << 20
# What a request can raise that means "this request failed" (as in llm_judge: OSError covers URLError,
# HTTPError, timeouts and refused connections; ValueError bad JSON; the lookups a body of the wrong shape).
_CALL_ERRORS = (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError)


def reasoner_messages(caption: str, question: str) -> list[dict[str, str]]:
    """RACRO's reasoner chat (training): caption + question, boxed-answer instruction."""
    user = ("### The detailed caption of the provided image: " + caption + "\n\n### Question: "
            + question.replace(VQA_SUFFIX, "") + BOXED_INSTRUCTION)
    return [{"role": "system", "content": REASONER_SYSTEM}, {"role": "user", "content": user}]


_BOXED = "\\boxed{"


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the one opened just before ``start``; None if it is never closed."""
    depth = 1
    for j in range(start, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def last_boxed(text: str) -> str | None:
    """Content of the LAST ``\\boxed{...}`` of ``text``, braces balanced, stripped; None if there is none or it
    is unclosed (RACRO's ``extract_boxed_content``). Linear in the text length; never raises."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    end = _closing_brace(text, start + len(_BOXED))
    return None if end is None else text[start + len(_BOXED):end].strip()


def strip_boxed(gold: str) -> str:
    """``gold`` without a ``\\boxed{...}`` that wraps all of it ("\\boxed{60}" -> "60"), stripped."""
    text = gold.strip()
    if text.startswith(_BOXED) and _closing_brace(text, len(_BOXED)) == len(text) - 1:
        return text[len(_BOXED):-1].strip()
    return text


_SPACES = re.compile(r"\s+")


def _plain(text: str) -> str:
    """String form for the exact-match step: no spaces or ``$``, no final period, lower case."""
    return _SPACES.sub("", text).strip("$").rstrip(".").lower()


def grade_boxed(answer: str | None, gold: str, verifier: MathVerifier) -> str:
    """Verdict on one boxed answer: "correct", "wrong", "no_boxed" (None answer), "timeout" or "error"
    (math_verify's worker; scored as wrong). ``gold`` is the stripped gold text."""
    if answer is None:
        return "no_boxed"
    letter = gold_choice(gold)
    if letter is not None:
        return "correct" if predicted_choice(answer) == letter or _plain(answer) == letter.lower() else "wrong"
    if _plain(answer) == _plain(gold):
        return "correct"
    outcome = verifier.check(math_candidates(gold), math_candidates(answer))
    if outcome.status in ("timeout", "error"):
        return outcome.status
    return "correct" if outcome.correct else "wrong"


# ---- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReasonerConfig:
    """The frozen reasoner: where it runs and how it samples.

    model_path:   text-only checkpoint (Qwen2ForCausalLM: R1-Distill-Qwen, Qwen2.5-Instruct) run in-process.
    url:          instead, an OpenAI-compatible server's base URL (``{url}/chat/completions``), e.g. vLLM's
                  ``http://127.0.0.1:8000/v1``. Exactly one of model_path and url.
    model_name:   model name sent to the server (None: model_path's last component, else "reasoner").
    num_samples:  answers sampled per caption; the reward is their mean correctness (RACRO: 1).
    temperature:  sampling temperature (RACRO: 1.0); 0 decodes greedily.
    top_p:        nucleus sampling (RACRO: 1.0).
    max_tokens:   generation budget per answer (RACRO: 8192).
    batch_size:   in-process: captions per generate call (each with num_samples rows).
    device:       in-process: "auto" (Paddle's current device, the policy's) or a Paddle device ("cpu",
                  "gpu:1") to load and run the reasoner on.
    dtype:        in-process weights: float32 (CPU) or bfloat16 (GPU).
    timeout_s:    server: per-request timeout.
    max_workers:  server: concurrent requests.
    seed:         in-process: sampling seed of the first call (later calls continue from it).
    """

    model_path: str | None = None
    url: str | None = None
    model_name: str | None = None
    num_samples: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 8192
    batch_size: int = 64
    device: str = "auto"
    dtype: str = "float32"
    timeout_s: float = 600.0
    max_workers: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.model_path is None) == (self.url is None):
            raise ValueError("the reasoner needs exactly one of model_path (in-process) and url (a server), got "
                             f"model_path={self.model_path!r}, url={self.url!r}")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"reasoner url must be an http(s) URL, got {self.url!r}")
        if self.num_samples < 1 or self.max_tokens < 1 or self.batch_size < 1 or self.max_workers < 1:
            raise ValueError("reasoner num_samples, max_tokens, batch_size and max_workers must be >= 1, got "
                             f"{self.num_samples}, {self.max_tokens}, {self.batch_size}, {self.max_workers}")
        if not self.temperature >= 0 or not 0 < self.top_p <= 1 or not self.timeout_s > 0:
            raise ValueError(f"reasoner temperature must be >= 0, top_p in (0, 1], timeout_s > 0; got "
                             f"{self.temperature}, {self.top_p}, {self.timeout_s}")

    @classmethod
    def from_fields(cls, source: Any, prefix: str = "reasoner_") -> ReasonerConfig:
        """The ``reasoner_*`` fields of a training config (attributes) or of a mapping, e.g.
        ``reasoner_model_path`` -> ``model_path``; fields it lacks keep their defaults."""
        values = {}
        for f in fields(cls):
            key = prefix + f.name
            present = key in source if isinstance(source, Mapping) else hasattr(source, key)
            if present:
                value = source[key] if isinstance(source, Mapping) else getattr(source, key)
                if value is not None:
                    values[f.name] = value
        return cls(**values)

    def build(self) -> Reasoner:
        """The reasoner this config describes (an in-process one loads its checkpoint now)."""
        return HTTPReasoner(self) if self.url is not None else InProcessReasoner.load(self)


# ---- reasoners ----------------------------------------------------------------------------------


class Reasoner:
    """Answers chats: ``answer(chats)`` -> per chat a list of ``num_samples`` reply texts (None where a reply
    could not be had: a failed request, counted). Counters are cumulative and thread-safe."""

    def __init__(self, config: ReasonerConfig) -> None:
        self.config = config
        self.calls = 0
        self.failures = 0
        self.failure_reasons: Counter[str] = Counter()
        self.no_boxed = 0
        self.generation_seconds = 0.0
        self._lock = threading.Lock()

    def stats(self) -> dict[str, float]:
        """Counters for logging: requests / generate calls, failed replies, answers without ``\\boxed{}``, and the
        seconds spent generating (kept apart from the policy's rollout time)."""
        with self._lock:
            return {"calls": self.calls, "failures": self.failures, "no_boxed": self.no_boxed,
                    "generation_seconds": self.generation_seconds}

    def _fail(self, reason: str, detail: str, count: int = 1) -> None:
        with self._lock:
            self.failures += count
            self.failure_reasons[reason] += count
        logger.warning("reasoner request failed (%s): %s; %d answer(s) scored 0", reason, detail[:300], count)

    def answer(self, chats: Sequence[list[dict[str, str]]]) -> list[list[str | None]]:
        t0 = time.perf_counter()
        try:
            return self._answer(chats)
        finally:
            with self._lock:
                self.generation_seconds += time.perf_counter() - t0

    def _answer(self, chats: Sequence[list[dict[str, str]]]) -> list[list[str | None]]:
        raise NotImplementedError


@contextlib.contextmanager
def _device(device: str) -> Iterator[None]:
    """Paddle's current device set to ``device`` for the block ("auto": left as it is)."""
    if device == "auto":
        yield
        return
    import paddle

    previous = paddle.get_device()
    paddle.set_device(device)
    try:
        yield
    finally:
        paddle.set_device(previous)


class InProcessReasoner(Reasoner):
    """Our engine (``generation.generate_chat``) on a text-only checkpoint, frozen, in this process."""

    def __init__(self, config: ReasonerConfig, model: Any, processor: Any) -> None:
        super().__init__(config)
        self.model, self.processor = model, processor
        self._seed = config.seed

    @classmethod
    def load(cls, config: ReasonerConfig) -> InProcessReasoner:
        from paddlemix_r1.models import from_pretrained
        from paddlemix_r1.processing.processor import load_processor

        with _device(config.device):
            model = from_pretrained(config.model_path, dtype=config.dtype)
        for p in model.parameters():
            p.stop_gradient = True
        return cls(config, model, load_processor(config.model_path))

    def _answer(self, chats: Sequence[list[dict[str, str]]]) -> list[list[str | None]]:
        from paddlemix_r1.generation.text import SamplingSettings, generate_chat

        c = self.config
        settings = SamplingSettings(max_new_tokens=c.max_tokens, do_sample=c.temperature > 0,
                                    temperature=c.temperature if c.temperature > 0 else 1.0,
                                    top_p=c.top_p, num_samples=c.num_samples)
        with self._lock:
            self.calls += 1
            seed, self._seed = self._seed, self._seed + 1_000_003  # a fresh stream per call, reproducible per run
        with _device(c.device):
            return generate_chat(self.model, self.processor, chats, settings, batch_size=c.batch_size, seed=seed)


class HTTPReasoner(Reasoner):
    """An OpenAI-compatible chat-completions server: one request per chat asks for ``n`` samples."""

    def __init__(self, config: ReasonerConfig) -> None:
        super().__init__(config)
        url = config.url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else url + "/chat/completions"
        name = config.model_name or (config.model_path.rstrip("/").split("/")[-1] if config.model_path else None)
        self.model_name = name or "reasoner"

    def _request(self, messages: list[dict[str, str]]) -> list[str]:
        """The reply texts of one request; raises on any failure (_CALL_ERRORS)."""
        c = self.config
        body = {"model": self.model_name, "messages": messages, "n": c.num_samples, "temperature": c.temperature,
                "top_p": c.top_p, "max_tokens": c.max_tokens}
        request = urllib.request.Request(self.endpoint, data=json.dumps(body).encode("utf-8"),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=c.timeout_s) as response:
            payload = json.loads(response.read(MAX_RESPONSE_BYTES).decode("utf-8"))
        texts = [choice["message"]["content"] for choice in payload["choices"]]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("a choice's message content is not a string")
        return texts

    def _one(self, messages: list[dict[str, str]]) -> list[str | None]:
        n = self.config.num_samples
        with self._lock:
            self.calls += 1
        try:
            texts: list[str | None] = list(self._request(messages))
        except urllib.error.HTTPError as e:
            self._fail(f"HTTPError {e.code}", str(e), n)
            return [None] * n
        except TimeoutError as e:
            self._fail("timeout", str(e), n)
            return [None] * n
        except urllib.error.URLError as e:
            self._fail("timeout" if isinstance(e.reason, TimeoutError) else "URLError", str(e), n)
            return [None] * n
        except _CALL_ERRORS as e:
            self._fail(type(e).__name__, str(e), n)
            return [None] * n
        if len(texts) < n:
            self._fail("short reply", f"{len(texts)} of {n} choices", n - len(texts))
        return (texts + [None] * n)[:n]

    def _answer(self, chats: Sequence[list[dict[str, str]]]) -> list[list[str | None]]:
        if len(chats) <= 1 or self.config.max_workers == 1:
            return [self._one(m) for m in chats]
        with ThreadPoolExecutor(max_workers=min(self.config.max_workers, len(chats))) as pool:
            return list(pool.map(self._one, chats))


# ---- the reward ---------------------------------------------------------------------------------


def score_captions(reasoner: Reasoner, captions: Sequence[str], questions: Sequence[str], golds: Sequence[str],
                   verifier: MathVerifier) -> list[float]:
    """Mean correctness of the reasoner's answers per caption (module docstring); never raises on replies."""
    replies = reasoner.answer([reasoner_messages(c.strip(), q) for c, q in zip(captions, questions)])
    scores = []
    for samples, gold in zip(replies, golds):
        verdicts = []
        for text in samples:
            if text is None:  # a failed request, already counted
                verdicts.append("failed")
                continue
            verdict = grade_boxed(last_boxed(text), gold, verifier)
            if verdict == "no_boxed":
                with reasoner._lock:
                    reasoner.no_boxed += 1
            elif verdict in ("timeout", "error"):
                logger.warning("reasoner reward: math_verify %s on %r; scored 0", verdict, text[-200:])
            verdicts.append(verdict)
        scores.append(sum(v == "correct" for v in verdicts) / len(verdicts))
    return scores


_default_reasoner: Reasoner | None = None
_default_lock = threading.Lock()


def set_default_reasoner(reasoner: Reasoner | None) -> None:
    """Install the reasoner the registered ``reasoner`` reward uses (None: remove it)."""
    global _default_reasoner
    with _default_lock:
        _default_reasoner = reasoner


def default_reasoner() -> Reasoner:
    """The installed reasoner; RuntimeError if none (the training set-up installs one from its config)."""
    with _default_lock:
        if _default_reasoner is None:
            raise RuntimeError(
                "the reasoner reward has no reasoner: set reasoner_model_path (in-process) or reasoner_url (an "
                "OpenAI-compatible server) in the training config, or install one with "
                "paddlemix_r1.rewards.reasoner.set_default_reasoner(ReasonerConfig(...).build())")
        return _default_reasoner


def make_reasoner_reward(reasoner: Reasoner | None = None, verifier: MathVerifier | None = None) -> RewardFn:
    """A ``reasoner`` reward bound to ``reasoner`` (default: ``default_reasoner()`` at call time)."""

    def reasoner_reward(completions: list[str], *, problem: Sequence[Any], solution: Sequence[Any],
                        question: Sequence[Any] | None = None, **_columns: Any) -> list[float]:
        """Mean correctness of the frozen reasoner's boxed answers given each caption (the whole completion),
        against ``solution``. The question is the row's ``question`` (RACRO's text, "<image>" tags kept) where
        the rows have one, else its ``problem``."""
        check_completions(completions, "reasoner")
        check_column(problem, "problem", len(completions), "reasoner")
        check_column(solution, "solution", len(completions), "reasoner")
        if question is not None:
            check_column(question, "question", len(completions), "reasoner")
            problem = [q if isinstance(q, str) and q.strip() else p for q, p in zip(question, problem)]
        golds = []
        for i, value in enumerate(solution):
            if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not strip_boxed(str(value)):
                raise ValueError(f"reasoner: solution[{i}] must be a non-empty string or number, got {value!r}")
            golds.append(strip_boxed(str(value)))
        for i, q in enumerate(problem):
            if not isinstance(q, str):
                raise TypeError(f"reasoner: problem[{i}] must be a string, got {type(q).__name__}")
        r = reasoner if reasoner is not None else default_reasoner()
        return score_captions(r, completions, list(problem), golds, verifier if verifier is not None else
                              default_verifier())

    return reasoner_reward


reasoner_reward = make_reasoner_reward()
