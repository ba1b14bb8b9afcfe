"""The ``focus_vqa`` task and the focus-trajectory rewards, registered when ``paddlemix_r1.focus`` is imported.

Rows: ``id, images ([full image]), problem (the question), solution (the gold answer text), evidence
(optional FOCUS box of the region that holds the answer)``.

Rewards over a batch of trajectories: ``completions`` are the turn-2 answers ("" where the box was
unusable) and the column ``focus_status`` holds each trajectory's box status (``focus.boxes``), so a
trajectory whose box is unusable scores 0 in every term.

``focus_answer``     1.0 if the box was usable and the answer matches the gold (``judges.answer_correct``)
``focus_box_valid``  1.0 if the box was usable
``focus_crop``       the fraction of the row's ``evidence`` box inside the crop (rows need ``evidence``)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from paddlemix_r1.focus.boxes import coverage
from paddlemix_r1.focus.judges import answer_correct, normalize_answer
from paddlemix_r1.focus.trajectory import trajectory_prompt
from paddlemix_r1.rewards.registry import list_rewards, register_reward
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


def _statuses(columns: dict[str, Any], n: int, reward: str) -> Sequence[str]:
    status = columns.get("focus_status")
    if status is None or len(status) != n:
        raise ValueError(f"{reward}: needs the focus_status column (one box status per trajectory; "
                         "focus.online.FocusGRPOTrainer provides it)")
    return status


def focus_answer_reward(completions: list[str], *, solution: Sequence[Any], **columns: Any) -> list[float]:
    status = _statuses(columns, len(completions), "focus_answer")
    return [answer_correct(c, str(g)) if s == "ok" else 0.0 for c, g, s in zip(completions, solution, status)]


def focus_box_valid_reward(completions: list[str], **columns: Any) -> list[float]:
    return [1.0 if s == "ok" else 0.0 for s in _statuses(columns, len(completions), "focus_box_valid")]


def focus_crop_reward(completions: list[str], **columns: Any) -> list[float]:
    status = _statuses(columns, len(completions), "focus_crop")
    boxes, evidence = columns.get("focus_box"), columns.get("evidence")
    if evidence is None or any(e is None for e in evidence):
        raise ValueError("focus_crop: every row needs an 'evidence' FOCUS box")
    return [coverage(b, e) if s == "ok" else 0.0 for s, b, e in zip(status, boxes, evidence)]


if TASK not in list_tasks():
    register_task(FocusVQATask())
for _name, _fn in (("focus_answer", focus_answer_reward), ("focus_box_valid", focus_box_valid_reward),
                   ("focus_crop", focus_crop_reward)):
    if _name not in list_rewards():
        register_reward(_name, _fn)
