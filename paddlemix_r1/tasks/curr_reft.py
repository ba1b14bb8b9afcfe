"""Curr-ReFT's tasks: ``detection``, ``classify``, ``math``, each asked in three answer formats by stage.

Rows (Curr-ReFT's, research file Part 1 §1.1): ``{problem, solution, task, image}`` with ``task`` one
of the three names and the gold in ``solution`` as ``<answer>GT</answer>`` (stages 1-2) or
``<thinking>...</thinking><answer>GT</answer>`` (stage 3); a bare GT (SuperCLEVR's ``solution: 4``,
a box list) is read too. Canonical gold: the answer text, stripped (``rewards.curr_reft.curr_gold``;
the ``<thinking>`` part is not kept). What the gold text is decides the format it is scored in
(``gold_kind``): a yes/no word (stage 1, judge), only option letters (stage 2, choice), anything
else (stage 3, open: a box for detection, class names for classify, a math answer for math).

Prompt methods (``tasks/prompts.py``): ``judge``, ``choice`` (classify: select all that apply),
``open`` (the three stages' training strings) and ``r1`` / ``baseline`` (Curr-ReFT's evaluation
string). Training rewards: the stage's accuracy reward (registry ``judge`` / ``choice`` / ``open``)
plus ``curr_format``; ``rewards`` below lists the open stage's, the curriculum recipe picks per stage.

Metric, by the gold's kind: judge and choice 1 if the reward is; open detection IoU (correct iff
> 0.5, in original pixels, the box mapped from the model family's frame); open classify token-set
Jaccard (correct iff 1: the same set of class words; Curr-ReFT's evaluation also accepts any answer
that contains the gold classes, so listing every class passed); open math math_verify.
"""

from __future__ import annotations

from typing import Any

from paddlemix_r1.families import VISION_FAMILIES
from paddlemix_r1.rewards.curr_reft import (
    DETECTION_IOU_THRESHOLD,
    curr_gold,
    detection_iou,
    gold_box_of,
    gold_kind,
    judgement,
    option_letters,
    score_choice,
    score_classify,
    score_judge,
    score_math,
)
from paddlemix_r1.rewards.math_answer import default_verifier
from paddlemix_r1.rewards.parsing import answer_text
from paddlemix_r1.rewards.rec import check_gold_box
from paddlemix_r1.tasks.base import SampleScore, ScoreContext, Task

STAGE_METHODS = ("judge", "choice", "open")
"""Curr-ReFT's curriculum stages, in order; each is a prompt method of every Curr-ReFT task and the
registry name of its accuracy reward."""
FORMAT_REWARD = "curr_format"


class CurrReftTask(Task):
    """What the three tasks share: the gold forms, the stage prompts, judge and choice scoring."""

    train_method = "open"
    rewards = {"open": 1.0, FORMAT_REWARD: 1.0}  # Curr-ReFT: accuracy + format, unweighted
    max_new_tokens = 256  # Curr-ReFT eval/muti_process_eval.py

    def parse_solution(self, value: Any, where: str = "solution") -> str:
        gold = curr_gold(value, where)
        kind = gold_kind(gold)
        if kind == "judge" and judgement(gold) is None:
            raise ValueError(f"{where}: gold answer {gold!r} says neither yes nor no")
        if kind == "choice" and not option_letters(gold):
            raise ValueError(f"{where}: gold answer {gold!r} names no option letter")
        if kind == "open":
            self.check_open_gold(gold, where)
        return gold

    def check_open_gold(self, gold: str, where: str) -> None:
        """Raise ValueError naming ``where`` if ``gold`` is no open answer of this task."""

    def parse_answer(self, completion: str, lenient: bool = False) -> str | None:
        return answer_text(completion, lenient)

    def score(self, completion: str, gold: Any, ctx: ScoreContext) -> SampleScore:
        kind = gold_kind(gold)
        parsed = self.parse_answer(completion, ctx.lenient)
        if kind == "judge":
            value = score_judge(completion, gold, ctx.where, ctx.lenient)
        elif kind == "choice":
            value = score_choice(completion, gold, ctx.where, ctx.lenient)
        else:
            return self.score_open(completion, gold, ctx, parsed)
        return SampleScore(value, value >= 1.0, parsed)

    def score_open(self, completion: str, gold: str, ctx: ScoreContext, parsed: str | None) -> SampleScore:
        raise NotImplementedError


class DetectionTask(CurrReftTask):
    name = "detection"
    uses_boxes = True

    def check_open_gold(self, gold: str, where: str) -> None:
        check_gold_box(gold_box_of(gold, where), where, gold)

    def check_evaluation(self, model_family: str | None) -> None:
        if model_family not in VISION_FAMILIES:
            raise ValueError(f"detection evaluation needs model_family in {VISION_FAMILIES}, got {model_family!r}")

    def score_open(self, completion: str, gold: str, ctx: ScoreContext, parsed: str | None) -> SampleScore:
        self.check_box_context(ctx)
        iou = detection_iou(completion, gold, ctx.model_family, ctx.image_size, ctx.resized_size, ctx.where,
                            ctx.lenient)
        return SampleScore(iou, iou > DETECTION_IOU_THRESHOLD, parsed)


class ClassifyTask(CurrReftTask):
    name = "classify"

    def score_open(self, completion: str, gold: str, ctx: ScoreContext, parsed: str | None) -> SampleScore:
        value = score_classify(completion, gold, ctx.where, ctx.lenient)
        return SampleScore(value, value >= 1.0, parsed)


class MathTask(CurrReftTask):
    name = "math"

    def score_open(self, completion: str, gold: str, ctx: ScoreContext, parsed: str | None) -> SampleScore:
        verifier = ctx.verifier if ctx.verifier is not None else default_verifier()
        value = score_math(completion, gold, verifier, ctx.where, ctx.lenient)
        return SampleScore(value, value >= 1.0, parsed)
