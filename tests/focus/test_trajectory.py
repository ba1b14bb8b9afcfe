"""Two-turn trajectories on a tiny model: batching, unusable boxes, per-turn log-probs, the merged GRPO batch."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from PIL import Image

from paddlemix_r1.focus import trajectory
from paddlemix_r1.focus.boxes import FocusBox, check_focus_box
from paddlemix_r1.focus.trajectory import answer_conversation, merge_turns, rollout_trajectories
from paddlemix_r1.grpo.logprobs import completion_logprobs


def _images():
    return [Image.new("RGB", (300, 200), (255, 255, 255)), Image.new("RGB", (180, 240), (0, 0, 255))]


@pytest.fixture
def scripted_boxes(monkeypatch):
    """Trajectories 0, 2 and 3 get a usable box, the others an unparsable one (a random tiny model writes none)."""
    usable = {0: (0.0, 0.0, 0.5, 0.5), 2: (0.25, 0.25, 1.0, 1.0), 3: (0.5, 0.0, 1.0, 0.6)}
    counter = iter(range(10_000))

    def parse(text, size, min_side):
        i = next(counter)
        return check_focus_box(usable[i], size, min_side) if i in usable else FocusBox("unparsable")

    monkeypatch.setattr(trajectory, "parse_focus_box", parse)
    return usable


def test_unusable_boxes_end_the_trajectory_without_a_second_turn(tiny_focus_model, scripted_boxes) -> None:
    model, proc, _ = tiny_focus_model
    tr = rollout_trajectories(model, proc, ["q one", "q two"], _images(), num_generations=3, max_box_tokens=6,
                              max_answer_tokens=4, seed=0)
    assert [b.status for b in tr.boxes] == ["ok", "unparsable", "ok", "ok", "unparsable", "unparsable"]
    assert tr.answer_rows == [0, 2, 3] and [a is None for a in tr.answers] == [False, True, False, False, True, True]
    assert tr.box_turn.completion_mask.shape[0] == 6 and tr.answer_turn.completion_mask.shape[0] == 3
    # Each crop comes from its own prompt's original image: trajectory 3 is prompt 1's (180 x 240, blue).
    assert tr.crops[0].size == (150, 100) and tr.crops[3].size == (90, 144)
    assert tr.crops[3].getpixel((0, 0)) == (0, 0, 255)
    assert tr.generated_tokens == tr.box_turn.num_tokens + tr.answer_turn.num_tokens


def test_merged_batch_gives_each_turns_log_probs(tiny_focus_model, scripted_boxes) -> None:
    """The merged 2BG-row batch (online GRPO) scores every token exactly as each turn's own pass does."""
    model, proc, _ = tiny_focus_model
    tr = rollout_trajectories(model, proc, ["q one", "q two"], _images(), num_generations=3, max_box_tokens=6,
                              max_answer_tokens=4, seed=1)
    inputs, mask, owner = merge_turns(tr, proc.pad_token_id)
    assert owner == [0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5]
    with paddle.no_grad():
        merged = completion_logprobs(model, inputs, 1.0).numpy()  # (12, T)
        box = completion_logprobs(model, tr.box_turn.inputs, 1.0).numpy()  # (6, T1)
        answer = completion_logprobs(model, tr.answer_turn.inputs, 1.0).numpy()  # (3, T2)
    m = mask.numpy()
    box_rows = [0, 1, 2, 6, 7, 8]
    t1 = box.shape[1]
    bm = tr.box_turn.completion_mask.numpy()
    np.testing.assert_allclose(merged[box_rows, :t1] * bm, box * bm, atol=2e-5)
    np.testing.assert_array_equal(m[box_rows, :t1], bm)
    answer_rows = {0: 3, 2: 5, 3: 9}  # trajectory -> its turn-2 row in the merged batch
    am = tr.answer_turn.completion_mask.numpy()
    t2 = answer.shape[1]
    for k, traj in enumerate(tr.answer_rows):
        r = answer_rows[traj]
        np.testing.assert_allclose(merged[r, :t2] * am[k], answer[k] * am[k], atol=2e-5)
        np.testing.assert_array_equal(m[r, :t2], am[k])
    for placeholder in (4, 10, 11):  # trajectories 1, 4, 5: no turn 2, no loss tokens
        assert m[placeholder].sum() == 0


@pytest.mark.parametrize("layout", ["visrl", "multi_turn"])
def test_answer_prompt_layouts(tiny_focus_model, layout: str) -> None:
    _, proc, _ = tiny_focus_model
    conv = answer_conversation("What colour?", "[0.1, 0.2, 0.3, 0.4]", layout)
    text = proc.apply_chat_template(conv)
    assert text.count("<|image_pad|>") == 2
    assert ("[0.1, 0.2, 0.3, 0.4]" in text) == (layout == "multi_turn")
    batch = proc([conv], [[Image.new("RGB", (300, 200)), Image.new("RGB", (40, 30))]])
    assert batch["image_grid_thw"].shape[0] == 2
    with pytest.raises(ValueError, match="layout must be one of"):
        answer_conversation("q", "b", "other")
