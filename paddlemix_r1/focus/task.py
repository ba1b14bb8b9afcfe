"""The ``focus_vqa`` task, registered when ``paddlemix_r1.focus`` is imported (its rewards, ``focus_*``, are
built-in rewards: ``rewards/focus.py``).

Rows: ``id, images ([full image]), problem (the question), solution (the gold answer text), evidence
(optional FOCUS box of the region that holds the answer)``.

Rewards over a batch of trajectories: ``completions`` are the turn-2 answers ("" where the box was
unusable) and the column ``focus_status`` holds each trajectory's box status (``focus.boxes``), so a
trajectory whose box is unusable scores 0 in every term.

``focus_answer``     1.0 if the box was usable and the answer matches the gold (``rewards.focus.answer_correct``)
``focus_box_valid``  1.0 if the box was usable
``focus_crop``       the fraction of the row's ``evidence`` box inside the crop (rows need ``evidence``)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from paddlemix_r1.focus.trajectory import trajectory_prompt
from paddlemix_r1.rewards.focus import answer_correct, normalize_answer
from paddlemix_r1.tasks import SampleScore, ScoreContext, Task, list_tasks, register_task
from paddlemix_r1.tasks.prompts import PromptTemplate

TASK = "focus_vqa"


class FocusVQATask(Task):
    """A question whose answer lies in a region of the image, answered through a focus trajectory."""

    name: ClassVar[str] = TASK
    train_method: ClassVar[str] = "visrl"
    rewards: ClassVar[Mapping[str, float]] = {"focus_answer": 1.0}
    max_new_tokens: ClassVar[int] = 64

    @property
    def methods(self) -> tuple[str, ...]:
        return ("visrl",)

    def template(self, method: str | None = None) -> PromptTemplate:
        raise ValueError("focus_vqa prompts are built per turn by paddlemix_r1.focus.trajectory, not from a template")

    def prompt(self, row: Mapping[str, Any], method: str | None = None, where: str = "row") -> str:
        return trajectory_prompt(str(row["problem"]))

    def parse_solution(self, value: Any, where: str = "solution") -> str:
        if not isinstance(value, (str, int, float)) or not str(value).strip():
            raise ValueError(f"{where}: a focus_vqa answer must be non-empty text, got {value!r}")
        return str(value).strip()

    def parse_answer(self, completion: str, lenient: bool = False) -> str | None:
        return normalize_answer(completion) or None

    def score(self, completion: str, gold: Any, ctx: ScoreContext) -> SampleScore:
        s = answer_correct(completion, str(gold))
        return SampleScore(s, s == 1.0, self.parse_answer(completion))


if TASK not in list_tasks():
    register_task(FocusVQATask())
