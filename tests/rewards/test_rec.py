"""rec_iou / rec_acc on literal completions, including the anchors' failure cases."""

import pytest

from paddlemix_r1.rewards import get_reward

GOLD = [352.14, 33.94, 639.59, 224.86]  # original pixels of a 640x480 image


def cols(n=1, family="qwen2_5_vl", size=(640, 480), resized=(640, 480), solution=GOLD):
    return {
        "solution": [solution] * n,
        "image_size": [size] * n,
        "resized_size": [resized] * n,
        "model_family": [family] * n,
    }


def test_float_boxes_score():
    """PaddleMIX's REC reward regex accepted integers only: this exact answer scored 0 there."""
    completion = "<think>the white bus</think>\n<answer>\n[352.14, 33.94, 639.59, 224.86]\n</answer>"
    assert get_reward("rec_iou")([completion], **cols()) == [pytest.approx(1.0)]
    assert get_reward("rec_acc")([completion], **cols()) == [1.0]


def test_iou_without_plus_one():
    # gold [0,0,10,10], prediction [5,0,15,10]: continuous IoU = 50 / 150 = 1/3;
    # the anchors' "+1 on the intersection only" mix gives 60 / 140 instead.
    c = cols(solution=[0, 0, 10, 10])
    assert get_reward("rec_iou")(["<answer>[5, 0, 15, 10]</answer>"], **c) == [pytest.approx(1 / 3)]


def test_qwen2_5_vl_box_is_rescaled_from_resized_to_original():
    # 1000x500 original seen by the model as 500x250: the model answers in the small frame.
    c = cols(size=(1000, 500), resized=(500, 250), solution=[100, 100, 300, 200])
    completion = "<answer>[50, 50, 150, 100]</answer>"
    assert get_reward("rec_iou")([completion], **c) == [pytest.approx(1.0)]
    # Without the rescale (resized == original) the same answer misses the gold entirely.
    c_no_rescale = cols(size=(1000, 500), resized=(1000, 500), solution=[100, 100, 300, 200])
    assert get_reward("rec_acc")([completion], **c_no_rescale) == [0.0]


def test_qwen2_vl_normalized_box_tokens():
    c = cols(family="qwen2_vl", size=(1000, 500), resized=None, solution=[100, 100, 300, 200])
    completion = "<think>..</think><answer><|box_start|>(100,200),(300,400)<|box_end|></answer>"
    assert get_reward("rec_iou")([completion], **c) == [pytest.approx(1.0)]
    # resized_size may be absent altogether for qwen2_vl
    c.pop("resized_size")
    assert get_reward("rec_acc")([completion], **c) == [1.0]


@pytest.mark.parametrize(
    "answer",
    [
        '{"bbox_2d": [352.14, 33.94, 639.59, 224.86], "label": "bus"}',
        '[{"bbox_2d": [352.14, 33.94, 639.59, 224.86], "label": "bus"}, {"bbox_2d": [0, 0, 5, 5]}]',
        '```json\n[\n\t{"bbox_2d": [352, 34, 640, 225], "label": "bus"}\n]\n```',
        "[352, 34, 640, 225]",
    ],
)
def test_box_forms_all_score(answer):
    assert get_reward("rec_acc")([f"<think>x</think><answer>{answer}</answer>"], **cols()) == [1.0]


@pytest.mark.parametrize(
    "completion",
    [
        "<answer>[639.59, 33.94, 352.14, 224.86]</answer>",  # x2 <= x1
        "<answer>[352, 224, 639, 33]</answer>",  # y2 <= y1
        "<answer>[352, 34, 352, 225]</answer>",  # zero width
        "<answer>the bus on the right</answer>",  # no box
        "<answer>[352, 34, 640]</answer>",  # three numbers
        "",
    ],
)
def test_degenerate_or_missing_box_scores_zero(completion):
    assert get_reward("rec_iou")([completion], **cols()) == [0.0]
    assert get_reward("rec_acc")([completion], **cols()) == [0.0]


def test_threshold_is_inclusive_at_half():
    # gold [0,0,10,10], prediction [0,0,10,20]: IoU = 100 / 200 = 0.5 exactly -> accurate
    c = cols(solution=[0, 0, 10, 10])
    assert get_reward("rec_iou")(["<answer>[0, 0, 10, 20]</answer>"], **c) == [0.5]
    assert get_reward("rec_acc")(["<answer>[0, 0, 10, 20]</answer>"], **c) == [1.0]


def test_last_answer_block_and_first_box():
    completion = "<answer>[0, 0, 1, 1]</answer> wait <answer>[352, 34, 640, 225] or [0, 0, 1, 1]</answer>"
    assert get_reward("rec_acc")([completion], **cols()) == [1.0]


def test_string_gold_and_batch():
    c = {
        "solution": ["[0, 0, 10, 10]", "<answer>[0, 0, 10, 10]</answer>"],
        "image_size": [(100, 100), (100, 100)],
        "resized_size": [(100, 100), (100, 100)],
        "model_family": ["qwen2_5_vl", "qwen2_5_vl"],
        "problem": ["ignored", "ignored"],
    }
    completions = ["<answer>[0, 0, 10, 10]</answer>", "<answer>[0, 0, 5, 10]</answer>"]
    assert get_reward("rec_iou")(completions, **c) == [1.0, 0.5]


@pytest.mark.parametrize(
    "completion",
    [
        "<think>the bus is at [352.14, 33.94, 639.59, 224.86]</think>",  # box only in the thinking
        "<think>the bus</think><answer>[352.14, 33.94, 639.59, 224.86]",  # unclosed answer
        "[352.14, 33.94, 639.59, 224.86]",  # no tags at all
        "<think>[352.14, 33.94, 639.59, 224.86]</think><answer>the bus</answer>",
    ],
)
def test_d3_training_requires_the_answer_block(completion):
    """D3 (R1-V eval logs): the whole-text fallback gave each of these IoU 1 in training."""
    assert get_reward("rec_iou")([completion], **cols()) == [0.0]
    assert get_reward("rec_acc")([completion], **cols()) == [0.0]


def test_lenient_scoring_keeps_the_fallback_for_baseline_evaluation():
    from paddlemix_r1.rewards.rec import score_rec_completion

    completion = "The bus: [352.14, 33.94, 639.59, 224.86]"
    strict = score_rec_completion(completion, tuple(GOLD), "qwen2_5_vl", (640, 480), (640, 480))
    lenient = score_rec_completion(completion, tuple(GOLD), "qwen2_5_vl", (640, 480), (640, 480), lenient=True)
    assert (strict.iou, lenient.iou) == (0.0, pytest.approx(1.0))


def test_missing_required_column_names_it():
    c = cols()
    del c["image_size"]
    with pytest.raises(TypeError, match="image_size"):
        get_reward("rec_iou")(["[1, 2, 3, 4]"], **c)
    c = cols()
    del c["model_family"]
    with pytest.raises(TypeError, match="model_family"):
        get_reward("rec_acc")(["[1, 2, 3, 4]"], **c)


def test_resized_size_required_for_qwen2_5_vl():
    c = cols()
    del c["resized_size"]
    with pytest.raises(ValueError, match="resized_size"):
        get_reward("rec_iou")(["[1, 2, 3, 4]"], **c)


@pytest.mark.parametrize(
    "override, match",
    [
        ({"model_family": ["qwen3"]}, "model_family"),
        ({"image_size": [(0, 480)]}, "image_size"),
        ({"solution": [[1, 2, 3]]}, "solution"),
        ({"solution": ["no box here"]}, "solution"),
        ({"solution": [GOLD, GOLD]}, "solution"),  # wrong length
        ({"model_family": "qwen2_5_vl"}, "model_family"),  # a scalar, not a column
    ],
)
def test_bad_columns_fail_loudly(override, match):
    c = cols()
    c.update(override)
    with pytest.raises((ValueError, TypeError), match=match):
        get_reward("rec_iou")(["[1, 2, 3, 4]"], **c)
