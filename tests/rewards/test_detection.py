"""od_ap / od_ap50 / odLength / weighted_sum on literal completions: COCO AP values worked out by
hand, coordinate frames, the hallucinated-label policy and the VLM-R1 bugs we do not copy."""

import json

import pytest

from paddlemix_r1.rewards import get_reward
from paddlemix_r1.rewards.detection import coco_ap, gold_detections, predicted_detections

CAT = {"bbox_2d": [10, 10, 50, 50], "label": "cat"}
CAT2 = {"bbox_2d": [200, 10, 260, 70], "label": "cat"}
DOG = {"bbox_2d": [100, 100, 200, 180], "label": "dog"}
UNICORN = {"bbox_2d": [300, 300, 400, 400], "label": "unicorn"}
OD = ("od_ap", "od_ap50", "odLength")


def fence(items):
    return "```json\n" + json.dumps(items) + "\n```"


def A(text):
    return f"<think>...</think><answer>{text}</answer>"


def score(name, answer, gold, **columns):
    return get_reward(name)([A(answer)], solution=[gold], **{k: [v] for k, v in columns.items()})[0]


# ---- AP values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OD + ("weighted_sum",))
def test_exact_answer_scores_one(name):
    assert score(name, fence([CAT, DOG]), fence([CAT, DOG])) == pytest.approx(1.0)
    assert score(name, fence([DOG, CAT]), "<answer>" + fence([CAT, DOG]) + "</answer>") == pytest.approx(1.0)


def test_ap_values_by_hand():
    # one of two categories found: mean of per-category AP (1, 0)
    assert score("od_ap", fence([CAT]), fence([CAT, DOG])) == pytest.approx(0.5)
    # one of two cats found: precision 1 up to recall 0.5 -> 51 of COCO's 101 recall points
    assert score("od_ap", fence([CAT]), fence([CAT, CAT2])) == pytest.approx(51 / 101)
    # IoU 0.62 matches at the thresholds .5, .55, .6 of the ten: AP 0.3, AP50 1
    loose = {"bbox_2d": [0, 0, 100, 62], "label": "cat"}
    gold = fence([{"bbox_2d": [0, 0, 100, 100], "label": "cat"}])
    assert score("od_ap", fence([loose]), gold) == pytest.approx(0.3)
    assert score("od_ap50", fence([loose]), gold) == pytest.approx(1.0)


def test_coco_ap_direct():
    golds = gold_detections(fence([CAT, DOG]))
    preds = [d for d in predicted_detections(fence([CAT])) if d is not None]
    assert coco_ap(golds, preds) == (pytest.approx(0.5), pytest.approx(0.5))


def test_labels_compare_case_insensitively():
    assert score("od_ap", fence([{**CAT, "label": " Cat "}]), fence([CAT])) == pytest.approx(1.0)


def test_float_boxes_and_bare_json_list():
    floaty = {"bbox_2d": [10.0, 10.0, 50.0, 50.0], "label": "cat"}
    assert score("od_ap", json.dumps([floaty]), fence([CAT])) == pytest.approx(1.0)


# ---- hallucinated labels and redundant boxes -----------------------------------------------------


def test_hallucinated_label_is_penalised():
    """VLM-R1 drops a predicted label absent from the gold set (KeyError swallowed): [cat, unicorn]
    scored like [cat]. Here it is a false positive: the AP is scaled by usable / predicted."""
    assert score("od_ap", fence([CAT]), fence([CAT])) == pytest.approx(1.0)
    assert score("od_ap", fence([CAT, UNICORN]), fence([CAT])) == pytest.approx(0.5)
    assert score("od_ap50", fence([CAT, UNICORN]), fence([CAT])) == pytest.approx(0.5)
    assert score("od_ap", fence([UNICORN]), fence([CAT])) == 0.0


def test_hallucinated_label_in_odlength_is_also_a_redundant_box():
    gold = fence([CAT, DOG])
    assert score("odLength", fence([CAT]), gold) == pytest.approx(0.5)  # AP 0.5, nothing redundant
    # VLM-R1: AP 0.5 (unicorn dropped) x guard min(1, 2/2) = 0.5, the same as [cat]
    assert score("odLength", fence([CAT, UNICORN]), gold) == pytest.approx(0.25)
    # with one gold box, the unicorn is both a false positive and a redundant box
    assert score("odLength", fence([CAT, UNICORN]), fence([CAT])) == pytest.approx(0.25)


def test_odlength_guard_against_redundant_boxes():
    # a duplicate does not lower COCO AP (the first match is at precision 1); the guard halves it
    assert score("od_ap", fence([CAT, CAT]), fence([CAT])) == pytest.approx(1.0)
    assert score("odLength", fence([CAT, CAT]), fence([CAT])) == pytest.approx(0.5)
    assert score("odLength", fence([CAT, CAT, CAT, CAT]), fence([CAT])) == pytest.approx(0.25)


def test_hallucinated_label_in_weighted_sum():
    # unmatched unicorn: a false alarm. position 1, completeness 1 - (0 + 1/2) / 2 = 0.75
    assert score("weighted_sum", fence([CAT, UNICORN]), fence([CAT])) == pytest.approx(0.7 + 0.3 * 0.75)
    # a unicorn on the cat's box: matched with the wrong label, IoU credit 0
    assert score("weighted_sum", fence([{**CAT, "label": "unicorn"}]), fence([CAT])) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "bad",
    [
        {"bbox_2d": [1, 2, 3], "label": "cat"},  # three numbers
        {"bbox_2d": [50, 50, 10, 10], "label": "cat"},  # no area
        {"bbox_2d": [10, 10, 50, 50]},  # no label
        "cat",
        {"bbox_2d": [0, 0, 1e6, 1e6], "label": "cat"},  # beyond COCO's area range: would be ignored, not an FP
    ],
)
def test_malformed_items_count_as_false_positives(bad):
    assert score("od_ap", fence([CAT, bad]), fence([CAT])) == pytest.approx(0.5)


# ---- weighted_sum --------------------------------------------------------------------------------


def test_weighted_sum_by_hand():
    loose_dog = {"bbox_2d": [100, 100, 200, 149.6], "label": "dog"}  # IoU 49.6 / 80 = 0.62
    gold = fence([CAT, DOG])
    assert score("weighted_sum", fence([CAT, loose_dog]), gold) == pytest.approx(0.7 * (1 + 0.62) / 2 + 0.3)
    # one gold missed: position 1/2, completeness 1 - (1/2 + 0) / 2
    assert score("weighted_sum", fence([CAT]), gold) == pytest.approx(0.7 * 0.5 + 0.3 * 0.75)


# ---- None golds and garbage answers --------------------------------------------------------------


@pytest.mark.parametrize("name", OD + ("weighted_sum",))
@pytest.mark.parametrize("gold", [None, "None", "<answer> None </answer>", fence([]), []])
def test_no_objects(name, gold):
    assert score(name, "None", gold) == 1.0
    assert score(name, fence([]), gold) == 1.0
    assert score(name, fence([CAT]), gold) == 0.0


@pytest.mark.parametrize("name", OD + ("weighted_sum",))
@pytest.mark.parametrize("answer", ["I see no such object", "```json\n[{broken\n```", '{"bbox_2d": [1, 2, 3, 4]}'])
def test_garbage_answer_scores_zero_even_against_a_none_gold(name, answer):
    """VLM-R1 parses an answer without a valid JSON list as [] and scores [] vs [] as 1.0: against a
    None gold any garbage answer earned full reward."""
    assert score(name, answer, None) == 0.0
    assert score(name, answer, fence([CAT])) == 0.0


@pytest.mark.parametrize("name", OD + ("weighted_sum",))
def test_none_answer_against_objects_scores_zero(name):
    assert score(name, "None", fence([CAT])) == 0.0


@pytest.mark.parametrize("name", OD + ("weighted_sum",))
def test_training_requires_the_answer_block(name):
    for completion in (fence([CAT]), "<think>" + fence([CAT]) + "</think>", "<answer>" + fence([CAT])):
        assert get_reward(name)([completion], solution=[fence([CAT])]) == [0.0]


# ---- coordinate frames ---------------------------------------------------------------------------


def test_qwen2_5_vl_boxes_are_mapped_from_the_resized_image():
    gold = fence([{"bbox_2d": [100, 100, 300, 200], "label": "car"}])  # original pixels of 1000x500
    answer = fence([{"bbox_2d": [50, 50, 150, 100], "label": "car"}])  # pixels of the 500x250 input
    frame = {"model_family": "qwen2_5_vl", "image_size": (1000, 500), "resized_size": (500, 250)}
    for name in OD + ("weighted_sum",):
        assert score(name, answer, gold, **frame) == pytest.approx(1.0)
        assert score(name, answer, gold) == 0.0  # no frame columns: compared as written


def test_qwen2_vl_boxes_are_normalised():
    gold = fence([{"bbox_2d": [100, 100, 300, 200], "label": "car"}])
    answer = fence([{"bbox_2d": [100, 200, 300, 400], "label": "car"}])  # 0..1000 of 1000x500
    assert score("od_ap", answer, gold, model_family="qwen2_vl", image_size=(1000, 500)) == pytest.approx(1.0)


def test_qwen2_5_vl_needs_resized_size():
    with pytest.raises(ValueError, match="resized_size"):
        score("od_ap", fence([CAT]), fence([CAT]), model_family="qwen2_5_vl", image_size=(100, 100))


# ---- bad golds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gold",
    [
        "a cat on the left",
        fence([{"bbox_2d": [1, 2, 3], "label": "cat"}]),
        fence([{"bbox_2d": [5, 5, 1, 1], "label": "cat"}]),
        [{"bbox_2d": [1, 2, 3, 4]}],
        42,
    ],
)
@pytest.mark.parametrize("name", OD + ("weighted_sum",))
def test_malformed_gold_fails_loudly(name, gold):
    with pytest.raises((ValueError, TypeError), match=rf"{name}: solution\[0\]"):
        get_reward(name)([A("None")], solution=[gold])
