"""VLM-R1's own-data task: any question, a text gold answer, scored by the row's accuracy method.

Rows come from VLM-R1 JSONL files (``conversations`` or ``problem`` / ``solution``, one image or a
list) without a task of their own. ``solution`` is the gold answer text: the gpt turn's value with
its ``<answer>`` tags removed (the last block's content when it has one); a non-string value (a
box list, a JSON object) is written as JSON (VLM-R1 applies ``str()``, whose Python repr of a dict
is not JSON). ``accu_reward_method`` (the file's ``reward_method``, or the row's own) names the
VLM-R1 accuracy method that scores it: default, mcq, yes_no, math, all_match, od_ap, ...

Prompts: VLM-R1's ``--task_type`` templates (``default``, ``rec``, ``ic``, ``odLength``, ``gui``).
Metric: the ``accuracy`` reward (the registry's, dispatching on the method); correct when it is 1.
"""

from __future__ import annotations

import json
from typing import Any

from paddlemix_r1.rewards.parsing import answer_text, extract_answer
from paddlemix_r1.rewards.registry import get_reward
from paddlemix_r1.tasks.base import SampleScore, ScoreContext, Task

ACCURACY_REWARD = "accuracy"


class GeneralTask(Task):
    name = "general"
    train_method = "default"
    rewards = {ACCURACY_REWARD: 1.0, "format": 1.0}  # VLM-R1's --reward_funcs default: accuracy format
    max_new_tokens = 2048  # VLM-R1's run scripts: --max_completion_length 2048

    def parse_solution(self, value: Any, where: str = "solution") -> str:
        if value is None or isinstance(value, bool):
            raise TypeError(f"{where}: gold answer must be text or a JSON value, got {value!r}")
        text = extract_answer(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if not text.strip():
            raise ValueError(f"{where}: gold answer is empty")
        return text

    def parse_answer(self, completion: str, lenient: bool = False) -> str | None:
        return answer_text(completion, lenient)

    def score(self, completion: str, gold: Any, ctx: ScoreContext) -> SampleScore:
        if not isinstance(ctx.accu_reward_method, str) or not ctx.accu_reward_method:
            raise ValueError(f"{ctx.where}: general rows are scored by their accu_reward_method, got "
                             f"{ctx.accu_reward_method!r}")
        value = float(get_reward(ACCURACY_REWARD)([completion], solution=[gold],
                                                  accu_reward_method=[ctx.accu_reward_method])[0])
        return SampleScore(value, value >= 1.0, self.parse_answer(completion, ctx.lenient))
