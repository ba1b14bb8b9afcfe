"""Scoring trajectories for preference data: an answer judge and a crop-relevance judge, each 0..1.

``RuleJudge``: where the answer is checkable. Answer: 1.0 if the answer equals the gold after
normalisation (``normalize_answer``), else 0.0. Crop: the fraction of the item's evidence box (the
Visual-CoT ``###`` box, converted to the FOCUS frame) inside the crop; an item without one cannot be
crop-judged by rule (ValueError naming it).

``EndpointJudge``: an OpenAI-compatible chat endpoint asked with VisRL's two prompts at temperature 0
(the answer judge sees the full image, the crop judge the crop only), through the HTTP client of
``rewards.llm_judge`` (``LLMJudge.ask``). The reply is read as VisRL reads it: JSON ``{"score": x}``,
the same inside a fenced ```json block, or a bare number; a score outside [0, 1], any other reply and
any failed request give None (counted in ``LLMJudge.failures``), and the filter drops that trajectory
(never a silent 0).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from paddlemix_r1.rewards.focus import answer_correct, coverage
from paddlemix_r1.rewards.llm_judge import JudgeConfig, LLMJudge

ANSWER_PROMPT = (
    "You are responsible for proofreading the answers, you need to give the score to the model's answer by "
    "referring to the standard answer, based on the given question and image. The full score is 1 point and the "
    "minimum score is 0 points. Please directly provide the score in JSON format, for example, {{\"score\": 0.8}}, "
    "without showing the intermediate process. The evaluation criteria require that the closer the model's answer "
    "is to the standard answer, the higher the score.\n\nQuestion: {question}\nStandard answer: {gold}\n"
    "Model's answer: {answer}"
)
CROP_PROMPT = (
    "You are responsible for verifying the relevance of the image based on the provided question and standard "
    "answer, you need to assess whether the image aligns with the standard answer. The full score is 1 point and "
    "the minimum score is 0 points. Please directly provide the score in JSON format, for example, "
    "{{\"score\": 0.8}}, without showing the intermediate process. The evaluation criteria is that, the higher "
    "score will be if the image effectively encompasses the information provided in the standard answer based on "
    "question.\n\nQuestion: {question}\nStandard answer: {gold}"
)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


@dataclass(frozen=True)
class AnswerCase:
    question: str
    gold: str
    answer: str
    image: Image.Image
    box: tuple[float, float, float, float] | None = None
    """The trajectory's FOCUS box (not shown to VisRL's answer judge; for scripted judges and logs)."""


@dataclass(frozen=True)
class CropCase:
    question: str
    gold: str
    crop: Image.Image
    box: tuple[float, float, float, float]
    """The crop's FOCUS box."""
    evidence: tuple[float, float, float, float] | None
    """The item's evidence box (FOCUS frame), if the data has one."""
    where: str = "item"


class Judge(Protocol):
    def score_answers(self, cases: Sequence[AnswerCase]) -> list[float | None]: ...
    def score_crops(self, cases: Sequence[CropCase]) -> list[float | None]: ...


class RuleJudge:
    """Exact-match answers, evidence-box coverage crops (module docstring)."""

    def score_answers(self, cases: Sequence[AnswerCase]) -> list[float | None]:
        return [answer_correct(c.answer, c.gold) for c in cases]

    def score_crops(self, cases: Sequence[CropCase]) -> list[float | None]:
        out: list[float | None] = []
        for c in cases:
            if c.evidence is None:
                raise ValueError(f"{c.where}: the rule-based crop judge needs the item's evidence box (Visual-CoT's "
                                 "'path###[x1, y1, x2, y2]' image entry); use the endpoint judge for data without one")
            out.append(coverage(c.box, c.evidence))
        return out


def parse_score(reply: str) -> float | None:
    """VisRL's reading of a judge reply: {"score": x}, fenced JSON, or a bare number; None otherwise or outside [0, 1]."""
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict):
        value = value.get("score")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None


def image_url(image: Image.Image) -> str:
    """A PNG data URL (the OpenAI chat format's image_url part)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class EndpointJudge:
    """VisRL's judge prompts sent to an OpenAI-compatible endpoint (module docstring)."""

    def __init__(self, config: JudgeConfig) -> None:
        self.client = LLMJudge(config)
        self._ids = itertools.count()

    def _ask(self, prompt: str, image: Image.Image) -> float | None:
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url(image)}},
                                                 {"type": "text", "text": prompt}]}]
        parsed: list[float] = []

        def parse(reply: str) -> float | None:
            score = parse_score(reply)
            if score is not None:
                parsed.append(score)
            return score

        # A fresh key per call: no cache hits, so "parse ran and succeeded" is exactly "the judgement worked".
        self.client.ask(("visrl", next(self._ids)), messages, parse)
        return parsed[0] if parsed else None

    def score_answers(self, cases: Sequence[AnswerCase]) -> list[float | None]:
        return [self._ask(ANSWER_PROMPT.format(question=c.question, gold=c.gold, answer=c.answer), c.image)
                for c in cases]

    def score_crops(self, cases: Sequence[CropCase]) -> list[float | None]:
        return [self._ask(CROP_PROMPT.format(question=c.question, gold=c.gold), c.crop) for c in cases]
