"""Open-vocabulary detection (OVD) rewards under VLM-R1's method names: ``od_ap``, ``od_ap50``,
``odLength``, ``weighted_sum``.

Golds and answers are VLM-R1's box lists, ``[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}, ...]``,
inside a ```` ```json ... ``` ```` fence (the last fence counts; an unfenced list is read too), or
``None`` when no target is in the image.

Columns (lists, one entry per completion):

``solution``      the gold: a string holding a fenced (or bare) JSON box list, optionally wrapped in
                  ``<answer>`` tags (VLM-R1 re-wraps solutions so), the string ``"None"``, Python
                  ``None``, or an already parsed list of ``{"bbox_2d", "label"}`` dicts. A gold that
                  is none of these, or has a malformed item or a box with no area, raises
                  ValueError naming the row.
``model_family``, ``image_size``, ``resized_size``
                  optional, as for the REC reward (``rec`` module). Coordinate frame: with
                  ``model_family`` given for a row, gold boxes are ORIGINAL image pixels (as
                  datasets store them) and each predicted box is mapped from the model's frame to
                  original pixels with ``coords.model_box_to_original`` (Qwen2.5-VL: resized-image
                  pixels, ``resized_size`` required; Qwen2-VL: 0..1000, DESIGN §4). Without the
                  column (or with None in it) both are compared exactly as written, i.e. the gold
                  must already be in the frame the model answers in (VLM-R1's assumption).

Labels are compared after ``strip().lower()``. The answer is the completion's last closed
``<answer>`` block; a completion without one scores 0 (VLM-R1 requires it too for the od_* methods).

Edge cases: gold and answer both "no objects" (``None``, case-insensitive, or an empty list) score
1.0; exactly one of them empty scores 0.0; an answer that is neither "None" nor a JSON list (text,
broken JSON) scores 0.0 whatever the gold. VLM-R1 parses such an answer as an empty list, so against
a ``None`` gold any garbage answer scored 1.0 (not copied; tested).

Hallucinated labels (a policy VLM-R1 lacks): COCO AP is averaged over the GOLD categories, so a
prediction whose label is absent from the gold set changes no category's AP and VLM-R1 drops it
silently: ``[cat, unicorn]`` scored as much as ``[cat]``. Here every predicted item that COCO cannot
score counts as a false positive through a label-precision factor

    usable / predicted

where ``predicted`` counts all items of the answer's list and ``usable`` those with a gold label and
a well-formed box of positive area (a malformed item or a degenerate box is unusable too). The AP
rewards multiply their AP by it, so ``[cat ✓, unicorn]`` against the gold ``[cat]`` scores 0.5 under
``od_ap``. ``odLength`` multiplies by VLM-R1's length guard ``min(1, gold / predicted)`` as well, in
which a hallucinated item is one more redundant box: against ``[cat, dog]``, ``[cat ✓, unicorn]``
scores 0.5 (AP) x 0.5 x 1 = 0.25 where ``[cat ✓]`` scores 0.5 (VLM-R1: 0.5 for both).
``weighted_sum`` needs no extra term: its matching is class-agnostic, so a hallucinated box either
takes a gold box's match with IoU credit 0 or stays unmatched as a false alarm.

AP is COCO's (``faster_coco_eval``: the COCO API evaluated in C++, equal to pycocotools' numbers to
1e-15 and about 2.5x faster per call here, and it logs instead of printing, so no stdout
redirection is needed around a reward), computed per completion as VLM-R1 does: one image, one
category per gold label, every prediction with score 1.0 (ties keep the answer's order),
AP@[.5:.95] (``od_ap``, ``odLength``) or AP@.5 (``od_ap50``), maxDets 100.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faster_coco_eval import COCO, COCOeval_faster

from paddlemix_r1.families import VISION_FAMILIES
from paddlemix_r1.rewards.columns import as_size, check_column, check_completions
from paddlemix_r1.rewards.coords import QWEN2_5_VL, Box, box_iou, model_box_to_original
from paddlemix_r1.rewards.parsing import answer_text, extract_answer

# COCO's "all" area range is [0, 1e5 ** 2]: a detection outside it is ignored rather than counted as
# a false positive, so such a box is treated as unusable before it reaches COCO.
MAX_AREA = 1e10
# VLM-R1's weighted_sum constants (detection_score): IoU threshold, position / label / completeness weights.
WS_IOU_THRESHOLD, WS_ALPHA, WS_BETA, WS_GAMMA = 0.5, 0.7, 0.0, 0.3

_FENCE = re.compile(r"```(?:json)?(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Detection:
    """One box with its label (stripped, lower-case)."""

    box: Box
    label: str


# ---- parsing ---------------------------------------------------------------------------------------


def _says_none(text: str) -> bool:
    return text.strip().rstrip(".").strip().lower() == "none"


def json_list(text: str) -> list[Any] | None:
    """The JSON list in ``text`` (its last fenced block, else the whole text), or None."""
    fences = _FENCE.findall(text)
    payload = fences[-1] if fences else text
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # malformed JSON, over-long integers, "[[[[..." nesting
        return None
    return data if isinstance(data, list) else None


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def detection_item(item: Any) -> Detection | None:
    """``{"bbox_2d": [4 finite numbers], "label": non-empty str}`` as a Detection, else None."""
    if not isinstance(item, dict):
        return None
    box, label = item.get("bbox_2d"), item.get("label")
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_real(v) for v in box)):
        return None
    if not isinstance(label, str) or not label.strip():
        return None
    return Detection(tuple(float(v) for v in box), label.strip().lower())  # type: ignore[arg-type]


def box_area(box: Box) -> float:
    """Area of an (x1, y1, x2, y2) box in its frame; 0 for an empty or inverted box."""
    x1, y1, x2, y2 = box
    return (x2 - x1) * (y2 - y1) if x2 > x1 and y2 > y1 else 0.0


def _usable_box(box: Box) -> bool:
    return 0.0 < box_area(box) < MAX_AREA


def gold_detections(solution: Any, where: str = "solution") -> list[Detection]:
    """The gold boxes of one row ([] for "no objects"); raises ValueError naming ``where`` if malformed."""
    if solution is None:
        return []
    if isinstance(solution, str):
        text = extract_answer(solution)
        if _says_none(text):
            return []
        items = json_list(text)
        if items is None:
            raise ValueError(f"{where}: gold must be a JSON box list (```json [...] ```) or None, got {solution!r}")
    elif isinstance(solution, (list, tuple)):
        items = list(solution)
    else:
        raise TypeError(f"{where}: gold must be a string, a list of boxes or None, got {type(solution).__name__}")
    golds = []
    for k, item in enumerate(items):
        det = detection_item(item)
        if det is None or not _usable_box(det.box):
            raise ValueError(
                f"{where}: gold item {k} must be {{'bbox_2d': [x1, y1, x2, y2] with x2 > x1, y2 > y1, "
                f"'label': str}}, got {item!r}"
            )
        golds.append(det)
    return golds


def predicted_detections(answer: str) -> list[Detection | None] | None:
    """The answer's box list: one entry per item (None for a malformed item), [] for "None" or an
    empty list, and None when the answer is not a box list at all (prose, broken JSON)."""
    if _says_none(answer):
        return []
    items = json_list(answer)
    if items is None:
        return None
    return [detection_item(item) for item in items]


# ---- frames ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxFrame:
    """How one row's predicted boxes reach the gold's frame (see the module docstring)."""

    model_family: str | None = None
    image_size: tuple[float, float] | None = None
    resized_size: tuple[float, float] | None = None

    def to_gold(self, box: Box) -> Box:
        if self.model_family is None:
            return box
        assert self.image_size is not None
        return model_box_to_original(box, self.model_family, self.image_size, self.resized_size)


def _frames(reward: str, n: int, columns: dict[str, Any]) -> list[BoxFrame]:
    family = columns.get("model_family")
    if family is None:
        return [BoxFrame()] * n
    check_column(family, "model_family", n, reward)
    if all(f is None for f in family):
        return [BoxFrame()] * n
    image_size = check_column(columns.get("image_size"), "image_size", n, reward)
    resized_size = columns.get("resized_size")
    if resized_size is not None:
        check_column(resized_size, "resized_size", n, reward)
    frames = []
    for i, f in enumerate(family):
        if f is None:
            frames.append(BoxFrame())
            continue
        if f not in VISION_FAMILIES:
            raise ValueError(f"{reward}: model_family[{i}] must be one of {VISION_FAMILIES} or None, got {f!r}")
        size = as_size(image_size[i], "image_size", i, reward)
        resized = None
        if f == QWEN2_5_VL:
            if resized_size is None or resized_size[i] is None:
                raise ValueError(f"{reward}: column 'resized_size' is required for model_family 'qwen2_5_vl' (row {i})")
            resized = as_size(resized_size[i], "resized_size", i, reward)
        frames.append(BoxFrame(f, size, resized))
    return frames


# ---- scores ----------------------------------------------------------------------------------------


def coco_ap(golds: Sequence[Detection], preds: Sequence[Detection]) -> tuple[float, float]:
    """(AP@[.5:.95], AP@.5) of ``preds`` (all score 1.0, in order) against ``golds`` on one image,
    one category per gold label. Every pred label must be a gold label; both lists non-empty."""
    return coco_map([(golds, preds)])


def coco_map(images: Sequence[tuple[Sequence[Detection], Sequence[Detection]]]) -> tuple[float, float]:
    """COCO (AP@[.5:.95], AP@.5) over a set of images: ``images[i] = (golds, preds)`` in one frame, every
    prediction scored 1.0 in the answer's order, one category per label among the set's golds.

    A prediction whose label no gold of the set has cannot enter COCO's per-category AP (COCO averages
    over categories with a gold; it would be dropped silently there): it is left out here and counted
    by ``greedy_precision_recall`` instead. No gold in the whole set: (0, 0)."""
    labels = sorted({g.label for golds, _ in images for g in golds})
    if not labels:
        return 0.0, 0.0
    categories = {label: k + 1 for k, label in enumerate(labels)}

    def xywh(box: Box) -> list[float]:
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]

    annotations, dets = [], []
    for image_id, (golds, preds) in enumerate(images, start=1):
        for g in golds:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": categories[g.label],
                                "bbox": xywh(g.box), "area": box_area(g.box), "iscrowd": 0})
        dets.extend({"image_id": image_id, "category_id": categories[p.label], "bbox": xywh(p.box), "score": 1.0}
                    for p in preds if p.label in categories)
    gt = {"images": [{"id": i, "width": 2048, "height": 2048} for i in range(1, len(images) + 1)],
          "categories": [{"id": cid, "name": label} for label, cid in categories.items()],
          "annotations": annotations}
    if not dets:
        return 0.0, 0.0
    coco_gt = COCO(gt)
    evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(dets), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    ap, ap50 = float(evaluator.stats[0]), float(evaluator.stats[1])
    return max(ap, 0.0), max(ap50, 0.0)  # COCO's -1 means "no gold": not possible once a label exists


def greedy_precision_recall(images: Sequence[tuple[Sequence[Detection], Sequence[Detection | None]]],
                            iou_threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) over a set of images, the greedy P/R@0.5 of VLM-R1's
    OVD reports: per image, each prediction in the answer's order takes the unmatched gold of its label
    with the highest IoU if that IoU >= ``iou_threshold`` (a true positive), else it is a false positive
    (so are malformed items, ``None``, and hallucinated labels); golds left unmatched are false negatives."""
    tp = fp = fn = 0
    for golds, preds in images:
        free = list(range(len(golds)))
        for p in preds:
            best, best_iou = None, iou_threshold
            for k in free if p is not None else ():
                if golds[k].label == p.label:
                    iou = box_iou(p.box, golds[k].box)
                    if iou >= best_iou and (best is None or iou > best_iou):
                        best, best_iou = k, iou
            if best is None:
                fp += 1
            else:
                free.remove(best)
                tp += 1
        fn += len(free)
    return tp, fp, fn


@dataclass(frozen=True)
class OdScore:
    """One completion scored: the AP numbers and the two factors of the module docstring."""

    ap: float
    ap50: float
    label_precision: float  # usable / predicted
    length_factor: float  # min(1, gold / predicted)
    predicted: int  # items in the answer's list (-1: no list at all)

    def reward(self, metric: str) -> float:
        if metric == "od_ap":
            return self.ap * self.label_precision
        if metric == "od_ap50":
            return self.ap50 * self.label_precision
        if metric == "odLength":
            return self.ap * self.label_precision * self.length_factor
        raise ValueError(f"unknown OVD metric {metric!r}")


_NO_ANSWER = OdScore(0.0, 0.0, 0.0, 0.0, -1)


def score_od_completion(completion: str, golds: Sequence[Detection], frame: BoxFrame = BoxFrame()) -> OdScore:
    """AP terms of one completion against its gold boxes (gold frame; see the module docstring)."""
    answer = answer_text(completion)
    if answer is None:
        return _NO_ANSWER
    items = predicted_detections(answer)
    if items is None:
        return _NO_ANSWER
    n_pred, n_gold = len(items), len(golds)
    if n_pred == 0 or n_gold == 0:
        both_empty = float(n_pred == n_gold)
        return OdScore(both_empty, both_empty, both_empty, both_empty, n_pred)
    gold_labels = {g.label for g in golds}
    usable = []
    for item in items:
        if item is None or item.label not in gold_labels:
            continue
        box = frame.to_gold(item.box)
        if _usable_box(box):
            usable.append(Detection(box, item.label))
    ap, ap50 = coco_ap(golds, usable) if usable else (0.0, 0.0)
    return OdScore(ap, ap50, len(usable) / n_pred, min(1.0, n_gold / n_pred), n_pred)


def detection_score(preds: Sequence[Detection | None], golds: Sequence[Detection]) -> float:
    """VLM-R1's ``detection_score`` (weighted_sum), with the continuous IoU of ``coords.box_iou``.

    Greedy class-agnostic matching: repeatedly the pair of unmatched (prediction, gold) with the
    highest IoU (ties: first prediction, then first gold), until it is below 0.5; a matched pair
    whose labels differ is consumed but credited IoU 0. With G golds and P predictions (malformed
    items count in P and never match):
    ``position = sum(matched IoU) / G``, ``label = correct labels / G``,
    ``completeness = 1 - (unmatched golds / G + unmatched predictions / P) / 2``,
    score = (0.7 position + 0.0 label + 0.3 completeness) / 1.0.
    Both empty: 1.0; exactly one empty: 0.0.
    """
    if not golds:
        return 1.0 if not preds else 0.0
    if not preds:
        return 0.0
    pairs = []
    for p, pred in enumerate(preds):
        if pred is None:
            continue
        for g, gold in enumerate(golds):
            iou = box_iou(pred.box, gold.box)
            if iou >= WS_IOU_THRESHOLD:
                pairs.append((-iou, p, g))
    pairs.sort()  # highest IoU first; ties by prediction, then gold index (the greedy scan's order)
    used_p, used_g = set(), set()
    position = label_correct = 0.0
    for neg_iou, p, g in pairs:
        if p in used_p or g in used_g:
            continue
        used_p.add(p)
        used_g.add(g)
        if preds[p].label == golds[g].label:  # type: ignore[union-attr]
            position += -neg_iou
            label_correct += 1
    n_gold, n_pred = len(golds), len(preds)
    completeness = 1.0 - ((n_gold - len(used_g)) / n_gold + (n_pred - len(used_p)) / n_pred) / 2.0
    score = WS_ALPHA * position / n_gold + WS_BETA * label_correct / n_gold + WS_GAMMA * completeness
    return score / (WS_ALPHA + WS_BETA + WS_GAMMA)


def score_weighted_sum_completion(completion: str, golds: Sequence[Detection], frame: BoxFrame = BoxFrame()) -> float:
    """``detection_score`` of one completion (gold frame), 0.0 without an answer block or box list."""
    answer = answer_text(completion)
    if answer is None:
        return 0.0
    items = predicted_detections(answer)
    if items is None:
        return 0.0
    preds = [None if item is None else Detection(frame.to_gold(item.box), item.label) for item in items]
    return detection_score(preds, golds)


# ---- rewards ---------------------------------------------------------------------------------------


def _score_all(reward: str, completions: list[str], solution: Sequence[Any], columns: dict[str, Any]) -> list[float]:
    check_completions(completions, reward)
    n = len(completions)
    check_column(solution, "solution", n, reward)
    frames = _frames(reward, n, columns)
    scores = []
    for i, completion in enumerate(completions):
        golds = gold_detections(solution[i], where=f"{reward}: solution[{i}]")
        if reward == "weighted_sum":
            scores.append(score_weighted_sum_completion(completion, golds, frames[i]))
        else:
            scores.append(score_od_completion(completion, golds, frames[i]).reward(reward))
    return scores


def od_ap_reward(completions: list[str], *, solution: Sequence[Any], **columns: Any) -> list[float]:
    """COCO AP@[.5:.95] of the answered boxes x the label-precision factor (module docstring)."""
    return _score_all("od_ap", completions, solution, columns)


def od_ap50_reward(completions: list[str], *, solution: Sequence[Any], **columns: Any) -> list[float]:
    """COCO AP@.5 of the answered boxes x the label-precision factor (module docstring)."""
    return _score_all("od_ap50", completions, solution, columns)


def od_length_reward(completions: list[str], *, solution: Sequence[Any], **columns: Any) -> list[float]:
    """``od_ap`` x VLM-R1's guard against redundant boxes, ``min(1, gold / predicted)``, in which
    hallucinated and malformed items count as predicted boxes (module docstring)."""
    return _score_all("odLength", completions, solution, columns)


def weighted_sum_reward(completions: list[str], *, solution: Sequence[Any], **columns: Any) -> list[float]:
    """VLM-R1's weighted_sum (``detection_score``): 0.7 matched IoU + 0.3 completeness, in [0, 1]."""
    return _score_all("weighted_sum", completions, solution, columns)
