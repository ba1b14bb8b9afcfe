"""Geometry reasoning (GeoQA): a math answer ("140°", "2√{3}", "\\frac{4}{3}cm", a choice letter).

Row: ``problem``, ``solution`` = the gold answer text (answer tags removed). Answer: the last
``<answer>`` block's text. Metric: math_verify says it equals the gold (choice letters compared as
letters), in a worker process with a deadline: ``rewards.math_answer.score_math_completion``.
"""

from __future__ import annotations

from typing import Any

from paddlemix_r1.rewards.math_answer import default_verifier, gold_text, score_math_completion
from paddlemix_r1.rewards.parsing import answer_text
from paddlemix_r1.tasks.base import SampleScore, ScoreContext, Task


class GeoQATask(Task):
    name = "geoqa"
    train_method = "train"
    rewards = {"math": 1.0, "format": 1.0}
    max_new_tokens = 1024  # R1-V test_qwen2vl_geoqa.py: its reasoning chains are longer

    def parse_solution(self, value: Any, where: str = "solution") -> str:
        return gold_text(value, where=where)

    def parse_answer(self, completion: str, lenient: bool = False) -> str | None:
        return answer_text(completion, lenient)

    def score(self, completion: str, gold: Any, ctx: ScoreContext) -> SampleScore:
        verifier = ctx.verifier if ctx.verifier is not None else default_verifier()
        s = score_math_completion(completion, gold_text(gold, ctx.where), verifier, ctx.where, lenient=ctx.lenient)
        return SampleScore(float(s.correct), s.correct, s.parsed, s.status)
