"""Worker process for math_verify, run as a script by ``math_answer.MathVerifier``.

Why a separate process: math_verify bounds its own work with ``signal.alarm``, which only works
in the main thread of the main interpreter (anywhere else it raises ValueError), has whole-second
granularity, bounds each parse/comparison separately rather than a whole answer, and cannot stop
a computation that is stuck inside C code or eating memory. Here math_verify runs in the worker's
main thread, so its alarms work as a first, cheap line of defence; the parent process enforces a
hard wall-clock deadline per answer by killing this worker, and an address-space limit turns a
runaway allocation into a MemoryError instead of a machine-wide out-of-memory.

Protocol: one JSON object per line on stdin, one per line on stdout.
  ready line  -> {"ready": true}  (or {"ready": false, "detail": ...} and exit 1)
  request     -> {"id": int, "gold": [str, ...], "pred": [str, ...]}
  response    -> {"id": int, "status": str, "gold": str|null, "pred": str|null, "detail": str}
``gold`` / ``pred`` are candidate texts in order of preference (the delimited reading of the answer,
then the bare text); the FIRST candidate in which math_verify finds anything decides. A later one is
read only when an earlier one holds nothing math_verify recognises at all: when the preferred reading
times out or raises, the verdict is "timeout" / "error", never the bare text's. In bare text
math_verify searches for any expression, so a failed ``$\frac{1}{2}+...+1$`` (or a number too long to
convert) would otherwise be credited with the "\frac{1}{2}" fragment it contains -- and whether the
preferred reading timed out would depend on the machine's load. status is one of "correct",
"wrong", "no_answer" (prediction unparsable), "gold_unparsed" (the gold's reading found nothing or
raised), "timeout", "error".

This file imports nothing from the package (it is started by path, with its own directory removed
from sys.path so the sibling modules cannot shadow anything).
"""

from __future__ import annotations

import os  # os and sys are loaded at interpreter start-up, so no sibling file can shadow them
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import json
import logging
from itertools import product
from typing import Any

SHOWN_CHARS = 200
GOLD_CACHE_SIZE = 4096


def _shown(parsed: list[Any]) -> str | None:
    """A short printable form of a parse result: math_verify's matched text when it has one.

    ``str()`` of a huge sympy object can itself take forever, so the matched string is preferred.
    """
    if not parsed:
        return None
    text = parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0])
    return text[:SHOWN_CHARS]


class Worker:
    def __init__(self, op_timeout: int | None) -> None:
        from math_verify import parse, verify
        from math_verify.errors import TimeoutException

        self._parse = parse
        self._verify = verify
        self._timeout_exc = TimeoutException
        self.op_timeout = op_timeout
        # A group's G completions share one gold; parse it once. Timeouts are not cached (they
        # may be transient).
        self._gold_cache: dict[tuple[str, ...], list[Any]] = {}

    def gold_parse(self, candidates: tuple[str, ...]) -> tuple[list[Any], str | None]:
        if candidates in self._gold_cache:
            return self._gold_cache[candidates], None
        parsed, failure = self._parse_candidates(candidates)
        if failure != "timeout":
            if len(self._gold_cache) >= GOLD_CACHE_SIZE:
                self._gold_cache.clear()
            self._gold_cache[candidates] = parsed
        return parsed, failure

    def _parse_candidates(self, candidates: tuple[str, ...]) -> tuple[list[Any], str | None]:
        """(parse result of the first candidate with one, None) or ([], "timeout" / "error: <type>").

        ([], None) when no candidate holds anything math_verify recognises."""
        for text in candidates:
            try:
                parsed = self._parse(text, parsing_timeout=self.op_timeout, raise_on_error=True)
            except self._timeout_exc:
                return [], "timeout"
            except Exception as e:  # noqa: BLE001 - math_verify's errors: this reading failed, no fallback
                return [], f"error: {type(e).__name__}"
            if parsed:
                return parsed, None
        return [], None

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        gold, failure = self.gold_parse(tuple(request["gold"]))
        if not gold:
            status = "timeout" if failure == "timeout" else "gold_unparsed"
            return {"status": status, "gold": None, "pred": None, "detail": failure or ""}
        pred, failure = self._parse_candidates(tuple(request["pred"]))
        if not pred:
            status = "no_answer" if failure is None else failure.partition(":")[0]
            return {"status": status, "gold": _shown(gold), "pred": None, "detail": failure or ""}
        # Pair by pair so that one comparison raising or timing out does not hide another that
        # succeeds (verify() with raise_on_error=False would also hide the timeout itself).
        timed_out = False
        errors = []
        for g, p in product(gold, pred):
            try:
                if self._verify(g, p, timeout_seconds=self.op_timeout, raise_on_error=True):
                    return {"status": "correct", "gold": _shown(gold), "pred": _shown(pred), "detail": ""}
            except self._timeout_exc:
                timed_out = True
            except Exception as e:  # noqa: BLE001 - this pair is not comparable; the others may be
                errors.append(type(e).__name__)
        status = "timeout" if timed_out else "wrong"
        detail = f"comparison errors: {', '.join(errors)}" if errors else ""
        return {"status": status, "gold": _shown(gold), "pred": _shown(pred), "detail": detail}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--op-timeout", type=int, default=1, help="math_verify's per-operation alarm, seconds (0: off)")
    ap.add_argument("--memory-mb", type=int, default=0, help="address-space limit in MiB (0: none)")
    args = ap.parse_args()

    # Keep the protocol channel clean: anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    def send(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    try:
        worker = Worker(args.op_timeout if args.op_timeout > 0 else None)
        # Warm up the parser (its first call builds regexes and the LaTeX grammar).
        worker.handle({"gold": ["$1$"], "pred": ["1"]})
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
        send({"ready": False, "detail": f"{type(e).__name__}: {e}"})
        return 1
    if args.memory_mb > 0:
        import resource

        limit = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    send({"ready": True})

    for line in sys.stdin:
        if not line.strip():
            continue
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            response = worker.handle(request)
        except MemoryError:
            response = {"status": "error", "gold": None, "pred": None, "detail": "MemoryError"}
        except Exception as e:  # noqa: BLE001 - one bad request must not end the worker
            response = {"status": "error", "gold": None, "pred": None, "detail": f"{type(e).__name__}: {e}"[:500]}
        response["id"] = request.get("id") if isinstance(request, dict) else None
        send(response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
