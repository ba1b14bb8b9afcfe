"""Item counting (CLEVR / SuperCLEVR): an integer, exact match.

Row: ``problem``, ``solution`` = the gold count as an int (an answer-tagged string such as
"<answer> 3 </answer>" is read as its count). Answer: ``rewards.parsing.parse_count`` (the last
``<answer>`` block, every number in it the same value; digits or English number words). Metric:
the answered integer equals the gold count.
"""

from __future__ import annotations

from typing import Any

from paddlemix_r1.rewards.counting import gold_count
from paddlemix_r1.rewards.parsing import parse_count
from paddlemix_r1.tasks.base import SampleScore, ScoreContext, Task


class CountingTask(Task):
    name = "counting"
    train_method = "train"
    rewards = {"counting": 1.0, "format": 1.0}
    max_new_tokens = 256  # R1-V test_qwen2vl_counting_superclevr.py

    def parse_solution(self, value: Any, where: str = "solution") -> int:
        return gold_count(value, where=where)

    def parse_answer(self, completion: str, lenient: bool = False) -> int | None:
        return parse_count(completion, lenient)

    def score(self, completion: str, gold: Any, ctx: ScoreContext) -> SampleScore:
        predicted = self.parse_answer(completion, ctx.lenient)
        correct = predicted is not None and predicted == gold_count(gold, ctx.where)
        return SampleScore(float(correct), correct, predicted)
