"""Box frame conversions, checked against smart_resize for several image sizes."""

import pytest

from paddlemix_r1.processing.image_processor import smart_resize
from paddlemix_r1.rewards.coords import (
    box_iou,
    model_box_to_original,
    normalized_to_original,
    original_box_to_model,
    original_to_normalized,
    original_to_resized,
    resized_to_original,
)
from paddlemix_r1.rewards.rec import rec_acc_reward, rec_iou_reward

# (width, height): landscape, portrait, tiny (upscaled to min_pixels), huge (downscaled to
# max_pixels), a very elongated one, and a size smart_resize leaves unchanged.
IMAGE_SIZES = [(640, 480), (480, 640), (30, 20), (4000, 3000), (2000, 60), (560, 420)]


def resized_wh(width, height, **kw):
    h, w = smart_resize(height, width, **kw)
    return (w, h)


def gold_for(size):
    w, h = size
    return (0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h)


def approx_box(a, b, rel=1e-9, abs=1e-9):
    return all(x == pytest.approx(y, rel=rel, abs=abs) for x, y in zip(a, b))


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_resized_round_trip_against_smart_resize(size):
    resized = resized_wh(*size)
    assert resized[0] % 28 == 0 and resized[1] % 28 == 0
    gold = gold_for(size)
    in_resized = original_to_resized(gold, size, resized)
    # each axis is scaled by its own factor (smart_resize does not keep the aspect ratio exactly)
    assert in_resized[0] == pytest.approx(gold[0] * resized[0] / size[0])
    assert in_resized[3] == pytest.approx(gold[3] * resized[1] / size[1])
    assert approx_box(resized_to_original(in_resized, resized, size), gold)


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_normalized_round_trip(size):
    gold = gold_for(size)
    normalized = original_to_normalized(gold, size)
    assert approx_box(normalized, (100.0, 200.0, 700.0, 900.0))
    assert approx_box(normalized_to_original(normalized, size), gold)


@pytest.mark.parametrize("size", IMAGE_SIZES)
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_family_dispatch_round_trip(size, family):
    resized = resized_wh(*size)
    gold = gold_for(size)
    model_box = original_box_to_model(gold, family, size, resized)
    assert approx_box(model_box_to_original(model_box, family, size, resized), gold)


@pytest.mark.parametrize("size", IMAGE_SIZES)
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_reward_scores_a_model_box_written_with_integers(size, family):
    """A model writes integers in its own frame; mapped back, the box still matches the gold."""
    resized = resized_wh(*size)
    gold = gold_for(size)
    written = [round(v) for v in original_box_to_model(gold, family, size, resized)]
    completion = f"<think>...</think><answer>[{written[0]}, {written[1]}, {written[2]}, {written[3]}]</answer>"
    cols = {"solution": [list(gold)], "image_size": [size], "resized_size": [resized], "model_family": [family]}
    iou = rec_iou_reward([completion], **cols)[0]
    assert iou > 0.8  # integer rounding only (the 30x20 image loses most to rounding)
    assert rec_acc_reward([completion], **cols) == [1.0]


@pytest.mark.parametrize("size", [(640, 480), (4000, 3000), (2000, 60), (30, 20)])
def test_skipping_the_resize_mapping_is_measurably_wrong(size):
    """The anchors' bug: reading a Qwen2.5-VL box (resized pixels) as original pixels."""
    resized = resized_wh(*size)
    assert resized != size
    gold = gold_for(size)
    in_resized = original_to_resized(gold, size, resized)
    right = box_iou(resized_to_original(in_resized, resized, size), gold)
    wrong = box_iou(in_resized, gold)
    assert right == pytest.approx(1.0)
    assert wrong < 0.99


def test_smart_resize_limits_are_honoured():
    resized = resized_wh(4000, 3000, min_pixels=256 * 28 * 28, max_pixels=512 * 28 * 28)
    assert resized[0] * resized[1] <= 512 * 28 * 28
    gold = gold_for((4000, 3000))
    back = resized_to_original(original_to_resized(gold, (4000, 3000), resized), resized, (4000, 3000))
    assert approx_box(back, gold)


def test_iou_has_no_plus_one():
    # Two 10x10 boxes overlapping on a 5x10 strip: 50 / (100 + 100 - 50) = 1/3 exactly.
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    # Identical boxes: 1.0 exactly (the +1 convention gives it too, but not the above).
    assert box_iou((1.5, 2.5, 3.5, 4.5), (1.5, 2.5, 3.5, 4.5)) == 1.0
    # Touching boxes share no area.
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    # Sub-pixel boxes are fine in a continuous frame.
    assert box_iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 1.0)) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [(10, 0, 10, 10), (0, 10, 10, 10), (10, 10, 0, 0), (5, 5, 4, 6)])
def test_degenerate_boxes_score_zero(bad):
    assert box_iou(bad, (0, 0, 10, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), bad) == 0.0


def test_conversion_errors_name_the_problem():
    with pytest.raises(ValueError, match="resized_size"):
        model_box_to_original((0, 0, 1, 1), "qwen2_5_vl", (10, 10), None)
    with pytest.raises(ValueError, match="model_family"):
        model_box_to_original((0, 0, 1, 1), "llava", (10, 10), (28, 28))
    with pytest.raises(ValueError, match="image_size"):
        normalized_to_original((0, 0, 1, 1), (0, 10))
