"""``llm`` accuracy: an OpenAI-compatible chat endpoint judges whether the answer matches the gold.

The judge sends VLM-R1's two user messages (../shared/research/vlm_r1_and_racro.md §1.3) at
temperature 0 to ``POST {base_url}/chat/completions`` and reads the reply: "1", "1.0", "0" or "0.0"
(surrounding space aside) is the verdict. Anything else is a FAILURE: an unreachable endpoint, a
timeout, an HTTP error, a body that is not a chat completion, or a reply that is not one of those
verdicts. A failure scores 0.0 and is counted (``LLMJudge.failures``, per reason in
``LLMJudge.failure_reasons``) and logged; it never falls back to another rule. VLM-R1 falls back to
exact string equality, and parses any float the model replies ("0.7" became a reward), so its
reward silently changes meaning whenever the server is down.

Configuration (``JudgeConfig``): explicit, or ``JudgeConfig.from_env()``:

``OPENAI_BASE_URL`` or else ``OPENAI_API_BASE`` (VLM-R1's variable)   the endpoint base, e.g.
                                                                    ``http://127.0.0.1:8000/v1``
``OPENAI_API_KEY``              sent as ``Authorization: Bearer ...`` when set
``PADDLEMIX_R1_JUDGE_MODEL``    the model name, default VLM-R1's ``qwen2.5:7b``

The registered ``llm`` reward and the ``accuracy`` reward's ``llm`` method use ``default_judge()``:
the judge installed with ``set_default_judge``, else one built from the environment on first use
(no endpoint configured raises RuntimeError: that is a broken set-up, not a bad answer). Read its
counters there, e.g. ``default_judge().failures``.

Column ``solution``: the gold answer text (answer tags optional). The answer sent is the
completion's last closed ``<answer>`` block; a completion without one scores 0.0 without a call
(VLM-R1 sends the whole text). Verdicts are cached per (answer, gold) pair, so the ``length``
reward, which recomputes accuracy, does not ask twice; failures are not cached.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from paddlemix_r1.rewards.columns import RewardFn, check_column, check_completions
from paddlemix_r1.rewards.math_answer import gold_text
from paddlemix_r1.rewards.parsing import answer_text

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5:7b"
SYSTEM_TASK = (
    "You are a evaluation expert. First, analyze the student's response to identify and extract their final "
    "answer. Then, compare the extracted answer with the correct solution. Output ONLY '1.0' if the extracted "
    "answer matches the correct solution in meaning, or '0.0' if the student's response does not contain a clear "
    "or correct answer. No other output is allowed."
)
QUESTION = "Student's response: {answer}\nCorrect solution: {gold}\nOutput only 1.0 or 0.0:"
MAX_RESPONSE_BYTES = 1 << 20
CACHE_SIZE = 4096
_VERDICT = re.compile(r"([01])(?:\.0*)?")
# What a call can raise that means "this judgement failed" (OSError covers URLError, HTTPError,
# timeouts and refused connections; ValueError covers bad JSON and undecodable bytes; the lookups
# raise KeyError / IndexError / TypeError on a body that is JSON but not a chat completion).
_CALL_ERRORS = (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError)


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to ask the judge.

    base_url:    endpoint base; the request goes to ``{base_url}/chat/completions``.
    model:       model name sent in the request.
    api_key:     bearer token, or None for servers that need none.
    timeout_s:   per-request timeout (connect and read); past it the judgement fails.
    max_workers: concurrent requests per reward call.
    """

    base_url: str
    model: str = DEFAULT_MODEL
    api_key: str | None = None
    timeout_s: float = 30.0
    max_workers: int = 8

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.timeout_s > 0 or self.max_workers < 1:
            raise ValueError(
                f"judge timeout_s must be > 0 and max_workers >= 1, got {self.timeout_s}, {self.max_workers}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JudgeConfig:
        """The configuration in the environment (module docstring); RuntimeError without an endpoint."""
        env = os.environ if environ is None else environ
        base_url = env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_BASE")
        if not base_url:
            raise RuntimeError(
                "the llm reward needs a judge endpoint: set OPENAI_BASE_URL (or OPENAI_API_BASE), e.g. "
                "http://127.0.0.1:8000/v1, or install one with paddlemix_r1.rewards.llm_judge.set_default_judge"
            )
        return cls(
            base_url=base_url,
            model=env.get("PADDLEMIX_R1_JUDGE_MODEL") or DEFAULT_MODEL,
            api_key=env.get("OPENAI_API_KEY") or None,
        )


class LLMJudge:
    """Asks the endpoint for 1.0 / 0.0 verdicts; counts every failure (module docstring).

    Counters (cumulative, thread-safe): ``calls`` (requests sent), ``failures`` and
    ``failure_reasons`` (a Counter: "URLError", "HTTPError 500", "timeout", "bad reply", ...).
    """

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self.calls = 0
        self.failures = 0
        self.failure_reasons: Counter[str] = Counter()
        self._cache: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def stats(self) -> dict[str, int]:
        """``{"calls": n, "failures": n}`` for logging."""
        with self._lock:
            return {"calls": self.calls, "failures": self.failures}

    def _request(self, messages: list[dict[str, str]]) -> str:
        """The reply text of one chat completion at temperature 0; raises on any failure (_CALL_ERRORS)."""
        body = {"model": self.config.model, "messages": messages, "temperature": 0}
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        request = urllib.request.Request(
            self.config.base_url.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode("utf-8"),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
            payload = json.loads(response.read(MAX_RESPONSE_BYTES).decode("utf-8"))
        content = payload["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise TypeError(f"message content is {type(content).__name__}, not str")
        return content

    def _fail(self, reason: str, detail: str) -> float:
        with self._lock:
            self.failures += 1
            self.failure_reasons[reason] += 1
        logger.warning("llm judge failed (%s): %s; scored 0", reason, detail[:300])
        return 0.0

    def judge(self, answer: str, gold: str) -> float:
        """1.0 or 0.0 as the judge says; 0.0 on failure (counted)."""
        messages = [{"role": "user", "content": SYSTEM_TASK},
                    {"role": "user", "content": QUESTION.format(answer=answer, gold=gold)}]
        return self.ask((answer, gold), messages, _parse_verdict)

    def ask(self, key: tuple, messages: list[dict[str, str]], parse: Callable[[str], float | None]) -> float:
        """``parse(reply)`` of one request (cached under ``key``); 0.0 on a failure, counted: the request
        failed, or ``parse`` returned None (a reply that is not a verdict). Other judges (a 0-100 score,
        ``grpo.reject_sample``) reuse this client with their own messages and parser."""
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            self.calls += 1
        try:
            reply = self._request(messages)
        except urllib.error.HTTPError as e:
            return self._fail(f"HTTPError {e.code}", str(e))
        except TimeoutError as e:
            return self._fail("timeout", str(e))
        except urllib.error.URLError as e:
            reason = "timeout" if isinstance(e.reason, TimeoutError) else "URLError"
            return self._fail(reason, str(e))
        except _CALL_ERRORS as e:
            return self._fail(type(e).__name__, str(e))
        verdict = parse(reply)
        if verdict is None:
            return self._fail("bad reply", repr(reply))
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = verdict
        return verdict

    def judge_many(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """``judge`` over (answer, gold) pairs, ``max_workers`` at a time, in order."""
        if len(pairs) <= 1 or self.config.max_workers == 1:
            return [self.judge(a, g) for a, g in pairs]
        with ThreadPoolExecutor(max_workers=min(self.config.max_workers, len(pairs))) as pool:
            return list(pool.map(lambda pair: self.judge(*pair), pairs))


def _parse_verdict(reply: str) -> float | None:
    """1.0 / 0.0 for "1", "1.0", "0", "0.0" (surrounding space aside), else None."""
    m = _VERDICT.fullmatch(reply.strip())
    return None if m is None else float(m.group(1))


_default_judge: LLMJudge | None = None
_default_lock = threading.Lock()


def set_default_judge(judge: LLMJudge | None) -> None:
    """Install the judge the registered rewards use (None: rebuild from the environment on next use)."""
    global _default_judge
    with _default_lock:
        _default_judge = judge


def default_judge() -> LLMJudge:
    """The process-wide judge (``set_default_judge``'s, else ``JudgeConfig.from_env()``'s)."""
    global _default_judge
    with _default_lock:
        if _default_judge is None:
            _default_judge = LLMJudge(JudgeConfig.from_env())
        return _default_judge


def make_llm_reward(judge: LLMJudge | None = None) -> RewardFn:
    """An ``llm`` reward bound to ``judge`` (default: ``default_judge()`` at call time)."""

    def llm_reward(completions: list[str], *, solution: Sequence[Any], **_columns: Any) -> list[float]:
        """1.0 if the judge says the answer (last ``<answer>`` block) matches the gold, else 0.0;
        0.0 on a judge failure (counted) and without an answer block (no call)."""
        check_completions(completions, "llm")
        check_column(solution, "solution", len(completions), "llm")
        golds = [gold_text(solution[i], where=f"llm: solution[{i}]") for i in range(len(completions))]
        answers = [answer_text(c) for c in completions]
        asked = [i for i, a in enumerate(answers) if a is not None]
        scores = [0.0] * len(completions)
        if asked:
            j = judge if judge is not None else default_judge()
            verdicts = j.judge_many([(answers[i], golds[i]) for i in asked])  # type: ignore[misc]
            for i, v in zip(asked, verdicts):
                scores[i] = v
        return scores

    return llm_reward


llm_reward = make_llm_reward()
