"""What a task is: a row schema, prompt templates by method, training rewards, an answer parser, a metric.

A row (the data readers' and the synthetic generators' format, see ``paddlemix_r1.data.readers``)::

    id, images (paths or PIL images), problem, solution, task, accu_reward_method, ...extras

``task`` names the Task that owns the row, so one dataset can mix tasks: each row is prompted,
parsed and scored by its own task. ``solution`` is the gold answer in the task's canonical form
(``Task.parse_solution``), checked (``Task.check_gold``) when the row is read and when it is evaluated.

Training, evaluation and the demo use the same pieces: ``Task.prompt`` (the one template table,
``tasks/prompts.py``), ``build_conversation``, ``Task.parse_answer`` (through the reward modules'
parsers) and ``Task.score`` (the evaluation metric, computed with the training rewards' code so the
two cannot disagree about what an answer says).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from paddlemix_r1.rewards.coords import QWEN2_5_VL
from paddlemix_r1.rewards.math_answer import MathVerifier
from paddlemix_r1.rewards.registry import get_reward
from paddlemix_r1.tasks.prompts import PromptTemplate, get_prompt, methods_of


def image_count(row: Mapping[str, Any]) -> int:
    """How many images ``row["images"]`` holds (a single image that is not in a list counts as one)."""
    images = row["images"]
    return len(images) if isinstance(images, (list, tuple)) else 1


def build_conversation(prompt: str, num_images: int = 1) -> list[dict[str, Any]]:
    """One user turn: ``num_images`` images, then the prompt text (the Processor's message format)."""
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    return [{"role": "user", "content": [{"type": "image"}] * num_images + [{"type": "text", "text": prompt}]}]


@dataclass(frozen=True)
class SampleScore:
    """One completion scored: ``score`` (IoU for rec, else 0/1 or the accuracy reward), ``correct``,
    the parsed answer, and a scorer status (math_verify's verdict: "timeout", "error", ...)."""

    score: float
    correct: bool
    parsed: Any
    status: str | None = None


@dataclass(frozen=True)
class ScoreContext:
    """What scoring one completion may need besides the gold answer (each task reads its own fields).

    model_family:        rec: the frame the model writes boxes in (``families.VISION_FAMILIES``).
    image_size:          rec: (W, H) of the original image (the gold box's frame).
    resized_size:        rec with qwen2_5_vl: (W', H') of the image the model saw.
    verifier:            geoqa: the math_verify worker (None: the process-wide one).
    lenient:             read an answer without ``<answer>`` tags from the whole text (``baseline``
                         evaluation only; training rewards always require the block).
    accu_reward_method:  general: the row's VLM-R1 accuracy method.
    where:               the row's "<file>:<line>", for messages about a malformed gold answer.
    """

    model_family: str | None = None
    image_size: Sequence[float] | None = None
    resized_size: Sequence[float] | None = None
    verifier: MathVerifier | None = None
    lenient: bool = False
    accu_reward_method: str | None = None
    where: str = "solution"


class Task:
    """One task. Subclasses set the class attributes and implement the three methods that raise here."""

    name: ClassVar[str]
    train_method: ClassVar[str]
    """The prompt method training uses unless ``GRPOConfig.task_type`` names another."""
    rewards: ClassVar[Mapping[str, float]]
    """The rewards (registry names) and weights this task trains with in the shipped recipes."""
    max_new_tokens: ClassVar[int]
    """Generation budget of the reference evaluation script."""
    uses_boxes: ClassVar[bool] = False
    """Scoring maps boxes between frames: evaluation needs the model family and the resized image size."""

    @property
    def methods(self) -> tuple[str, ...]:
        return methods_of(self.name)

    def template(self, method: str | None = None) -> PromptTemplate:
        """The template of ``method`` (None: ``train_method``) in the one prompt table."""
        return get_prompt(self.name, method or self.train_method)

    def prompt(self, row: Mapping[str, Any], method: str | None = None, where: str = "row") -> str:
        """The question text of ``row`` under ``method`` (None: ``train_method``)."""
        return self.template(method).format(row, where)

    def conversation(self, row: Mapping[str, Any], method: str | None = None, where: str = "row") -> list[dict]:
        """The chat the model is given for ``row``: one user turn with its images then its prompt. A task
        with a system turn or images placed inside the text (the captioner) overrides this."""
        return build_conversation(self.prompt(row, method, where), image_count(row))

    def parse_solution(self, value: Any, where: str = "solution") -> Any:
        """The gold answer in this task's canonical form; ValueError / TypeError naming ``where`` if malformed."""
        raise NotImplementedError

    def check_gold(self, gold: Any, where: str = "solution") -> None:
        """Raise ValueError / TypeError naming ``where`` if the canonical ``gold`` cannot be scored.

        The one gold check of training and evaluation: the readers call it on every row (a bad gold is
        a bad row: raised with ``<file>:<line>``, or skipped and counted with ``skip_bad``) and
        ``eval.evaluate`` on every row it is given (a bad gold is counted as that row's error). A
        canonical gold parses to itself, so by default ``parse_solution`` must accept it again; the
        checks of what a gold may hold live there (rec: finite box with x2 > x1 and y2 > y1;
        counting: integer >= 0; ...). A gold that can only be judged by scoring (geoqa: whether
        math_verify reads it) raises ``rewards.math_answer.GoldUnparsedError`` from ``score``."""
        self.parse_solution(gold, where)

    def check_fields(self, extras: Mapping[str, Any], where: str) -> None:
        """Raise ValueError naming ``where`` if a field this task reads (besides the core ones) is malformed."""

    def parse_answer(self, completion: str, lenient: bool = False) -> Any:
        """What ``completion`` answers (None if nothing readable); never raises on any text."""
        raise NotImplementedError

    def check_evaluation(self, model_family: str | None) -> None:
        """Raise ValueError, before any generation, if an evaluation with these settings cannot be scored."""

    def score(self, completion: str, gold: Any, ctx: ScoreContext) -> SampleScore:
        """The evaluation metric of one completion against the canonical ``gold``."""
        raise NotImplementedError

    def check_box_context(self, ctx: ScoreContext) -> None:
        """For tasks that score boxes (``uses_boxes``): the model family and the frames its boxes map through
        (ValueError naming the row otherwise)."""
        self.check_evaluation(ctx.model_family)
        if ctx.image_size is None or (ctx.model_family == QWEN2_5_VL and ctx.resized_size is None):
            raise ValueError(f"{ctx.where}: {self.name} scoring of {ctx.model_family} needs image_size"
                             + (" and resized_size" if ctx.model_family == QWEN2_5_VL else ""))

    def dataset_metrics(self, scored: Sequence[tuple[Any, Any]]) -> dict[str, float]:
        """Metrics of the whole set beyond accuracy (e.g. ovd's COCO mAP), from every row's
        ``(gold, parsed answer of its recorded sample or None)``. None by default."""
        return {}

    def reward(self, completions: list[str], **columns: Any) -> list[float]:
        """The weighted sum of this task's training rewards (``rewards``), one float per completion."""
        total = [0.0] * len(completions)
        for name, weight in self.rewards.items():
            scores = get_reward(name)(completions, **columns)
            total = [t + weight * float(s) for t, s in zip(total, scores)]
        return total

    def __repr__(self) -> str:
        return f"<Task {self.name}: methods {list(self.methods)}, rewards {dict(self.rewards)}>"
