"""Processor: batch parity with transformers' Qwen2VLProcessor / Qwen2_5_VLProcessor, errors, sizes."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from PIL import Image
from processing.reference import random_image, reference_processor

from paddlemix_r1.processing import Processor


def user(*parts):
    content = [{"type": "image"} if p is None else {"type": "text", "text": p} for p in parts]
    return [{"role": "user", "content": content}]


IM_A = random_image(150, 100, seed=1)
IM_B = random_image(90, 300, seed=2)  # tall
IM_C = random_image(10, 12, seed=3)  # below min_pixels
IM_D = random_image(700, 500, seed=4)  # above the test max_pixels

# name -> (conversations, images per conversation)
CASES = {
    "text_only": ([[{"role": "user", "content": "How many apples are there?"}]], None),
    "one_image": ([user(None, "Locate the red cup.")], [[IM_A]]),
    "two_images_one_prompt": ([user("Compare ", None, " and ", None, ".")], [[IM_B, IM_D]]),
    "batch_left_padding": (
        [
            user(None, "How many?"),
            [
                {"role": "system", "content": "Think in <think> </think>."},
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": "Find angle ABC of the triangle."}],
                },
            ],
        ],
        [[IM_C], [IM_D]],
    ),
    "batch_mixed_text_and_images": (
        [[{"role": "user", "content": "Just text, a longer question about circles."}], user(None, "hi")],
        [None, [IM_A]],
    ),
}


def reference_batch(path, family, conversations, images, padding_side="left"):
    ref = reference_processor(path, family)
    texts = [ref.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
    flat = [im for sample in (images or []) for im in (sample or [])]
    return ref(
        text=texts,
        images=flat or None,
        padding=True,
        padding_side=padding_side,
        return_tensors="np",
    )


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("name", list(CASES))
def test_batch_matches_transformers(tiny_checkpoint, tiny_checkpoint_25, family, name):
    path = (tiny_checkpoint if family == "qwen2_vl" else tiny_checkpoint_25)[0]
    conversations, images = CASES[name]
    expected = reference_batch(path, family, conversations, images)
    batch = Processor.from_pretrained(path)(conversations, images)

    assert batch["input_ids"].dtype == paddle.int64 and batch["attention_mask"].dtype == paddle.int64
    np.testing.assert_array_equal(batch["input_ids"].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(batch["attention_mask"].numpy(), expected["attention_mask"])
    if images is None:
        assert batch["pixel_values"] is None and batch["image_grid_thw"] is None
        return
    assert batch["pixel_values"].dtype == paddle.float32 and batch["image_grid_thw"].dtype == paddle.int64
    np.testing.assert_array_equal(batch["image_grid_thw"].numpy(), expected["image_grid_thw"])
    np.testing.assert_allclose(batch["pixel_values"].numpy(), expected["pixel_values"], rtol=0, atol=1e-5)


def test_right_padding_matches_transformers(tiny_checkpoint):
    path = tiny_checkpoint[0]
    conversations, images = CASES["batch_left_padding"]
    expected = reference_batch(path, "qwen2_vl", conversations, images, padding_side="right")
    batch = Processor.from_pretrained(path)(conversations, images, padding_side="right", return_tensors="np")
    np.testing.assert_array_equal(batch["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(batch["attention_mask"], expected["attention_mask"])


def test_left_padding_layout_and_image_token_count(tiny_checkpoint):
    path, ids = tiny_checkpoint
    proc = Processor.from_pretrained(path)
    conversations, images = CASES["batch_left_padding"]
    batch = proc(conversations, images, return_tensors="np")
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    short = int(mask[0].sum())
    assert (input_ids[0, :-short] == ids["pad_token_id"]).all() and (mask[0, :-short] == 0).all()
    assert mask[1].all()
    grid = batch["image_grid_thw"]
    for row, (t, h, w) in enumerate(grid.tolist()):
        assert int((input_ids[row] == ids["image_token_id"]).sum()) == t * h * w // 4
    # generation starts right after the prompt: every row ends with "<|im_start|>assistant\n"
    assert proc.batch_decode(input_ids[:, -3:]) == ["<|im_start|>assistant\n"] * 2


def test_placeholder_count_mismatch_names_both_counts(tiny_checkpoint):
    proc = Processor.from_pretrained(tiny_checkpoint[0])
    conversations = [user(None, "one"), user(None, None, "two")]
    with pytest.raises(ValueError, match=r"conversation 1: .* 2 image placeholder\(s\) .* but 1 image\(s\)"):
        proc(conversations, [[IM_A], [IM_B]])
    with pytest.raises(ValueError, match=r"conversation 0: .* 1 image placeholder\(s\) .* but 0 image\(s\)"):
        proc(conversations[:1], None)
    with pytest.raises(ValueError, match=r"conversation 0: .* 0 image placeholder\(s\) .* but 1 image\(s\)"):
        proc([[{"role": "user", "content": "no image here"}]], [[IM_A]])
    with pytest.raises(ValueError, match="2 conversations but 1 image lists"):
        proc(conversations, [[IM_A]])
    with pytest.raises(TypeError, match=r"wrap a single image in \[\.\.\.\]"):
        proc(conversations[:1], [IM_A])
    with pytest.raises(TypeError, match="single list of messages"):
        proc(conversations[0], [[IM_A]])


def test_videos_are_rejected(tiny_checkpoint):
    proc = Processor.from_pretrained(tiny_checkpoint[0])
    with pytest.raises(ValueError, match="videos are not supported"):
        proc([[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}]])


def test_max_length_raises_instead_of_cutting(tiny_checkpoint):
    proc = Processor.from_pretrained(tiny_checkpoint[0])
    conversations, images = CASES["batch_left_padding"]
    lengths = proc(conversations, images, return_tensors="np")["attention_mask"].sum(axis=1).tolist()
    ok = proc(conversations, images, max_length=max(lengths), return_tensors="np")
    assert ok["input_ids"].shape == (2, max(lengths))
    limit = lengths[1] - 1
    message = (
        rf"conversation 1: the prompt is {lengths[1]} tokens "
        rf"\(\d+ of them image tokens\), longer than max_length={limit}"
    )
    with pytest.raises(ValueError, match=message):
        proc(conversations, images, max_length=limit)


def test_sizes_per_conversation(tiny_checkpoint):
    proc = Processor.from_pretrained(tiny_checkpoint[0])
    batch = proc(
        [user(None, None, "two"), [{"role": "user", "content": "none"}], user(None, "one")],
        [[IM_A, IM_C], None, [IM_D]],
        return_sizes=True,
    )
    assert batch["original_sizes"] == [[(150, 100), (10, 12)], [], [(700, 500)]]
    resized = batch["resized_sizes"]
    assert [len(s) for s in resized] == [2, 0, 1]
    grid = batch["image_grid_thw"].numpy().tolist()
    flat = [size for sample in resized for size in sample]
    assert [(w // 14, h // 14) for w, h in flat] == [(gw, gh) for _, gh, gw in grid]
    assert "original_sizes" not in proc([user(None, "x")], [[IM_A]])


def test_paths_and_exif_through_the_processor(tiny_checkpoint, tmp_path):
    proc = Processor.from_pretrained(tiny_checkpoint[0])
    IM_A.save(tmp_path / "a.png")
    from_path = proc([user(None, "x")], [[str(tmp_path / "a.png")]], return_tensors="np")
    from_pil = proc([user(None, "x")], [[IM_A]], return_tensors="np")
    np.testing.assert_array_equal(from_path["pixel_values"], from_pil["pixel_values"])
    np.testing.assert_array_equal(from_path["input_ids"], from_pil["input_ids"])

    sideways = random_image(64, 32, seed=9)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: 32 wide, 64 tall
    sideways.save(tmp_path / "r.jpg", format="JPEG", exif=exif.tobytes())
    batch = proc([user(None, "x")], [[tmp_path / "r.jpg"]], return_sizes=True)
    assert batch["original_sizes"] == [[(32, 64)]]
    ((w, h),) = batch["resized_sizes"][0]
    assert h > w


def test_prerendered_text_and_decode(tiny_checkpoint):
    path, ids = tiny_checkpoint
    proc = Processor.from_pretrained(path)
    conversation = user(None, "Locate the dog.")
    text = proc.apply_chat_template(conversation)
    a = proc([conversation], [[IM_A]], return_tensors="np")
    b = proc([text], [[IM_A]], return_tensors="np")
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    decoded = proc.decode(a["input_ids"][0], skip_special_tokens=True)
    assert decoded == "system\nYou are a helpful assistant.\nuser\nLocate the dog.\nassistant\n"
    assert proc.eos_token_id == ids["eos_token_id"] and proc.pad_token_id == ids["pad_token_id"]
    assert proc.tokenizer.eos_token_id == ids["eos_token_id"]
    assert proc.image_token_id == ids["image_token_id"]


def test_save_pretrained_round_trip(tiny_checkpoint, tmp_path):
    proc = Processor.from_pretrained(tiny_checkpoint[0])
    proc.save_pretrained(tmp_path / "copy")
    again = Processor.from_pretrained(tmp_path / "copy")
    conversations, images = CASES["batch_left_padding"]
    a = proc(conversations, images, return_tensors="np")
    b = again(conversations, images, return_tensors="np")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_pixel_limits_override_and_save(tiny_checkpoint, tmp_path):
    path = tiny_checkpoint[0]
    proc = Processor.from_pretrained(path, max_pixels=28 * 28 * 4)
    assert (proc.image_processor.min_pixels, proc.image_processor.max_pixels) == (56 * 56, 28 * 28 * 4)
    grid = proc([user(None, "x")], [[IM_D]], return_tensors="np")["image_grid_thw"]
    assert int(grid.prod()) // 4 <= 4
    proc.save_pretrained(tmp_path)
    again = Processor.from_pretrained(tmp_path)
    assert (again.image_processor.min_pixels, again.image_processor.max_pixels) == (56 * 56, 28 * 28 * 4)
