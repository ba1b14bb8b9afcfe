"""Focus boxes: the FOCUS and Visual-CoT frames, both model families, non-square images, parsing and crops."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from paddlemix_r1.families import VISION_FAMILIES
from paddlemix_r1.focus.boxes import (
    FocusBox,
    check_focus_box,
    crop_image,
    diverse_box,
    format_focus_box,
    parse_focus_box,
)
from paddlemix_r1.processing.image_processor import smart_resize
from paddlemix_r1.rewards import coords
from paddlemix_r1.rewards.coords import box_iou
from paddlemix_r1.rewards.focus import coverage

WIDE, TALL = (400, 200), (120, 300)


def close(a, b, tol=1e-9) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


@pytest.mark.parametrize("size", [WIDE, TALL, (256, 256), (301, 150)])
def test_focus_and_viscot_round_trips(size) -> None:
    box = (0.1, 0.2, 0.7, 0.9)
    assert close(coords.original_to_focus(coords.focus_to_original(box, size), size), box)
    assert close(coords.viscot_to_focus(coords.focus_to_viscot(box, size), size), box)
    pixels = coords.focus_to_original(box, size)
    assert close(coords.viscot_to_original(coords.original_to_viscot(pixels, size), size), pixels)


def test_viscot_frame_is_the_padded_square_with_integer_offsets() -> None:
    # 400 x 200: S = 400, the image pasted at (0, 100); 301 x 150: S = 301, dy = 151 // 2 = 75 (not 75.5).
    assert coords.square_pad_offset(WIDE) == (400, 0, 100)
    assert coords.square_pad_offset((301, 150)) == (301, 0, 75)
    assert coords.square_pad_offset(TALL) == (300, 90, 0)
    # The whole image in VisCoT's frame of a wide picture: y from 100/400 to 300/400.
    assert close(coords.original_to_viscot((0, 0, 400, 200), WIDE), (0.0, 0.25, 1.0, 0.75))
    assert close(coords.viscot_to_original((0.5, 0.25, 0.75, 0.5), WIDE), (200.0, 0.0, 300.0, 100.0))
    # Only on a square image do the two frames agree; VisRL's x*W, y*H crop of a VisCoT box is off elsewhere.
    assert close(coords.viscot_to_focus((0.1, 0.3, 0.4, 0.6), (256, 256)), (0.1, 0.3, 0.4, 0.6))
    visrl_crop = coords.focus_to_original((0.1, 0.3, 0.4, 0.6), WIDE)  # (40, 60, 160, 120)
    right = coords.viscot_to_original((0.1, 0.3, 0.4, 0.6), WIDE)  # (40, 20, 160, 140)
    assert close(right, (40.0, 20.0, 160.0, 140.0)) and not close(visrl_crop, right)


@pytest.mark.slow
def test_padded_square_offsets_match_llava_expand2square() -> None:
    """A red pixel at a VisCoT box corner lands where the conversion says, in expand2square's own output."""
    w, h = 301, 150
    img = Image.new("RGB", (w, h), (255, 255, 255))
    img.putpixel((37, 12), (255, 0, 0))
    side = max(w, h)
    square = Image.new("RGB", (side, side), (0, 0, 0))
    square.paste(img, ((side - w) // 2, (side - h) // 2))  # LLaVA's expand2square for a wide image
    ys, xs = np.nonzero(np.asarray(square)[:, :, 1] == 0)  # red and the black pad have no green
    red = [(x, y) for x, y in zip(xs, ys) if tuple(np.asarray(square)[y, x]) == (255, 0, 0)]
    vx, vy = red[0][0] / side, red[0][1] / side
    back = coords.viscot_to_original((vx, vy, vx, vy), (w, h))
    assert close(back[:2], (37.0, 12.0), 1e-6)


@pytest.mark.parametrize("family", VISION_FAMILIES)
def test_focus_box_in_both_families_frames(family: str) -> None:
    size = (500, 280)
    rh, rw = smart_resize(size[1], size[0])
    resized = (rw, rh)
    box = (0.2, 0.1, 0.6, 0.95)
    model_box = coords.focus_to_model(box, family, size, resized)
    if family == coords.QWEN2_VL:
        assert close(model_box, (200.0, 100.0, 600.0, 950.0), 1e-6)  # 0..1000 normalised
    else:
        assert close(model_box, (0.2 * rw, 0.1 * rh, 0.6 * rw, 0.95 * rh), 1e-6)  # resized-image pixels
    assert close(coords.model_to_focus(model_box, family, size, resized), box)


@pytest.mark.parametrize("text,status", [
    ("I cannot tell", "unparsable"),
    ("", "unparsable"),
    ("[0.5, 0.5, 0.5, 0.9]", "empty"),
    ("[0.6, 0.2, 0.3, 0.9]", "empty"),
    ("[-0.2, 0.1, 0.5, 0.5]", "out_of_range"),
    ("[0.1, 0.1, 1.3, 0.5]", "out_of_range"),
    ("[10, 20, 300, 400]", "out_of_range"),  # pixels are not the FOCUS frame
    ("[0.5, 0.5, 0.501, 0.9]", "too_small"),  # 0.4 px wide on a 400-px image
    ("[0.0, 0.0, 1.0, 0.004]", "too_small"),
    ("[0.1, 0.2, 0.4, 0.6]", "ok"),
    ("The region is [0.100, 0.200, 0.400, 0.600].", "ok"),
    ("[0.0, 0.0, 1.0004, 1.0]", "ok"),  # a rounding step past 1 is clipped
])
def test_parse_focus_box_statuses(text: str, status: str) -> None:
    assert parse_focus_box(text, WIDE).status == status


def test_too_thin_crop_is_refused_before_the_processor_would_raise() -> None:
    from paddlemix_r1.processing.image_processor import smart_resize

    assert check_focus_box((0.0, 0.0, 1.0, 0.1), (4000, 400)).status == "ok"  # 4000 x 40: aspect 100
    assert check_focus_box((0.0, 0.0, 1.0, 0.05), (8000, 400)).status == "too_thin"  # 8000 x 20: aspect 400
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(20, 8000)


def test_parse_never_raises_on_odd_text() -> None:
    for text in ["[nan, 0, 1, 1]", "[1e999, 0, 1, 1]", "[" * 10_000, "[0.1,0.2,0.3]", "\x00[0.1, 0.2, 0.3, 0.4]"]:
        assert isinstance(parse_focus_box(text, TALL), FocusBox)


@pytest.mark.parametrize("size", [WIDE, TALL])
def test_crop_is_cut_from_the_original_with_the_box_rounded_outwards(size) -> None:
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.arange(w)[None, :] % 256  # red = x, green = y
    arr[..., 1] = np.arange(h)[:, None] % 256
    img = Image.fromarray(arr)
    box = parse_focus_box("[0.1234, 0.25, 0.5, 0.7771]", size)
    assert box.ok
    left, top, right, bottom = box.pixels
    assert left <= 0.1234 * w < left + 1 and right - 1 < 0.5 * w <= right
    assert top <= 0.25 * h and bottom >= 0.7771 * h
    crop = np.asarray(crop_image(img, box))
    assert crop.shape == (bottom - top, right - left, 3)
    assert crop[0, 0, 0] == left % 256 and crop[0, 0, 1] == top % 256


def test_crop_follows_exif_orientation(tmp_path) -> None:
    """The crop comes from the image as the processor loads it (EXIF applied), not as stored."""
    stored = Image.new("RGB", (200, 100), (255, 255, 255))
    stored.putpixel((0, 0), (255, 0, 0))
    exif = stored.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=100)
    from paddlemix_r1.focus.boxes import image_size_of

    assert image_size_of(str(path)) == (100, 200)
    box = parse_focus_box("[0.0, 0.0, 1.0, 0.5]", (100, 200))
    assert crop_image(str(path), box).size == (100, 100)


def test_coverage_and_the_diversity_rule() -> None:
    assert coverage((0, 0, 0.5, 0.5), (0.1, 0.1, 0.2, 0.2)) == 1.0
    assert coverage((0.5, 0.5, 1, 1), (0.1, 0.1, 0.2, 0.2)) == 0.0
    assert coverage((0, 0, 0.15, 1), (0.1, 0.1, 0.2, 0.2)) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    first = (0.1, 0.1, 0.4, 0.5)
    for _ in range(50):
        box = diverse_box(first, rng)
        assert box is not None and box_iou(box, first) == 0.0
        assert 0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0
        assert 0.6 * 0.3 - 1e-9 <= box[2] - box[0] <= 1.4 * 0.3 + 1e-9
    assert diverse_box((0.0, 0.0, 1.0, 1.0), rng) is None  # nothing fits beside a full-image box: attempt dropped


def test_format_focus_box() -> None:
    assert format_focus_box((0.1234, 0.5, 1, 0)) == "[0.123, 0.500, 1.000, 0.000]"
    assert parse_focus_box(format_focus_box((0.1, 0.2, 0.3, 0.4), 1), WIDE).focus == (0.1, 0.2, 0.3, 0.4)
