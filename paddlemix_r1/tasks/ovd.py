"""Open-vocabulary detection (OVD): every box of the queried categories, as VLM-R1's JSON box list.

Row: ``problem`` (the question, naming the categories to detect: VLM-R1 keeps the OVD instruction in
the data), ``solution`` = VLM-R1's gold, ```` ```json [{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}] ``` ````
in ORIGINAL image pixels, or ``None`` / ``"None"`` when no queried object is in the image. Canonical
gold: the list of ``{"bbox_2d", "label"}`` dicts ([] for none).

Answer: the box list of the last ``<answer>`` block (``baseline``: of the whole text when there is no
block), in the model family's frame, mapped to original pixels (``rewards.coords``, DESIGN §4).

Metrics. Per row: ``score`` = F1 at IoU 0.5 of the image (1.0 when gold and answer are both empty),
``correct`` = every gold matched and no false positive. Over the set (``dataset_metrics``, what OVD
papers report): COCO mAP (AP@[.5:.95]) and AP50 of all images' boxes together, and greedy
precision / recall at IoU 0.5 (``rewards.detection.greedy_precision_recall``: malformed items and
labels no gold has count as false positives; a row with no answer or no image misses all its golds).
With ``num_samples`` k > 1 the set metrics use each row's recorded (best) sample.
Training rewards: ``odLength`` (AP with VLM-R1's length guard) and ``format``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from paddlemix_r1.families import VISION_FAMILIES
from paddlemix_r1.rewards.detection import (
    BoxFrame,
    Detection,
    coco_map,
    gold_detections,
    greedy_precision_recall,
    predicted_detections,
)
from paddlemix_r1.rewards.parsing import answer_text
from paddlemix_r1.tasks.base import SampleScore, ScoreContext, Task


def _as_items(dets: Sequence[Detection | None]) -> list[dict[str, Any] | None]:
    return [None if d is None else {"bbox_2d": list(d.box), "label": d.label} for d in dets]


def _as_detections(items: Sequence[dict[str, Any] | None]) -> list[Detection | None]:
    return [None if i is None else Detection(tuple(i["bbox_2d"]), i["label"]) for i in items]


class OvdTask(Task):
    name = "ovd"
    train_method = "r1"
    rewards = {"odLength": 1.0, "format": 1.0}
    max_new_tokens = 1024  # box lists are long; VLM-R1's OVD runs generate up to 1024-2048 tokens
    uses_boxes = True

    def parse_solution(self, value: Any, where: str = "solution") -> list[dict[str, Any]]:
        return _as_items(gold_detections(value, where))

    def parse_answer(self, completion: str, lenient: bool = False) -> list[Detection | None] | None:
        """The answer's box list in the model's frame (None items: malformed), or None if it is no list."""
        answer = answer_text(completion, lenient)
        return None if answer is None else predicted_detections(answer)

    def check_evaluation(self, model_family: str | None) -> None:
        if model_family not in VISION_FAMILIES:
            raise ValueError(f"ovd evaluation needs model_family in {VISION_FAMILIES}, got {model_family!r}")

    def score(self, completion: str, gold: Any, ctx: ScoreContext) -> SampleScore:
        self.check_box_context(ctx)
        golds = gold_detections(gold, ctx.where)
        predicted = self.parse_answer(completion, ctx.lenient)
        if predicted is None:
            return SampleScore(0.0, False, None)
        frame = BoxFrame(ctx.model_family, tuple(ctx.image_size),
                         None if ctx.resized_size is None else tuple(ctx.resized_size))
        preds = [None if d is None else Detection(frame.to_gold(d.box), d.label) for d in predicted]
        tp, fp, fn = greedy_precision_recall([(golds, preds)])
        f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        return SampleScore(f1, fp == 0 and fn == 0, {"detections": _as_items(preds)})

    def dataset_metrics(self, scored: Sequence[tuple[Any, Any]]) -> dict[str, float]:
        """mAP, AP50 and greedy P/R@0.5 over every row: ``scored[i] = (gold, parsed answer or None)``."""
        images = []
        for gold, parsed in scored:
            preds = [] if parsed is None else _as_detections(parsed["detections"])
            images.append((gold_detections(gold), preds))
        ap, ap50 = coco_map([(golds, [p for p in preds if p is not None]) for golds, preds in images])
        tp, fp, fn = greedy_precision_recall(images)
        return {"mAP": ap, "AP50": ap50, "precision@0.5": tp / (tp + fp) if tp + fp else 0.0,
                "recall@0.5": tp / (tp + fn) if tp + fn else 0.0}
