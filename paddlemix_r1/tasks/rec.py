"""Referring expression comprehension: one box for the phrase, scored by IoU in original pixels.

Row: ``problem`` (the referring question), ``solution`` = gold ``[x1, y1, x2, y2]`` in ORIGINAL
image pixels (4 finite floats), optionally ``normal_caption`` (the bare phrase; the ``baseline``
prompt uses it). Answer: the first box of the last ``<answer>`` block, in the model family's frame
(Qwen2.5-VL: pixels of the resized image; Qwen2-VL: 0..1000). Metric: IoU >= 0.5 after mapping the
box to original pixels (PaddleMIX / VLM-R1 REC accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from paddlemix_r1.families import VISION_FAMILIES
from paddlemix_r1.rewards.coords import Box
from paddlemix_r1.rewards.parsing import parse_answer_box
from paddlemix_r1.rewards.rec import IOU_THRESHOLD, gold_box, score_rec_completion
from paddlemix_r1.tasks.base import SampleScore, ScoreContext, Task


class RecTask(Task):
    name = "rec"
    train_method = "r1"
    rewards = {"rec_iou": 1.0, "rec_format": 1.0}
    max_new_tokens = 256  # VLM-R1 / PaddleMIX test_rec
    uses_boxes = True

    def parse_solution(self, value: Any, where: str = "solution") -> list[float]:
        box = [float(v) for v in gold_box(value, where=where)]
        if not all(math.isfinite(v) for v in box):
            raise ValueError(f"{where}: gold box must be finite, got {value!r}")
        return box

    def check_fields(self, extras: Mapping[str, Any], where: str) -> None:
        caption = extras.get("normal_caption")
        if caption is not None and not isinstance(caption, str):
            raise ValueError(f"{where}: field 'normal_caption' must be a string, got {caption!r}")

    def parse_answer(self, completion: str, lenient: bool = False) -> Box | None:
        return parse_answer_box(completion, lenient)

    def check_evaluation(self, model_family: str | None) -> None:
        if model_family not in VISION_FAMILIES:
            raise ValueError(f"rec evaluation needs model_family in {VISION_FAMILIES}, got {model_family!r}")

    def score(self, completion: str, gold: Any, ctx: ScoreContext) -> SampleScore:
        self.check_box_context(ctx)
        s = score_rec_completion(completion, gold_box(gold, ctx.where), ctx.model_family, ctx.image_size,
                                 ctx.resized_size, lenient=ctx.lenient)
        parsed = None if s.predicted_box is None else {"box": list(s.predicted_box),
                                                       "box_original": list(s.original_box)}
        return SampleScore(s.iou, s.iou >= IOU_THRESHOLD, parsed)
