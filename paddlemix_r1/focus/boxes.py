"""Focus boxes: the first turn's text -> a checked box -> the crop the second turn sees.

The box a trajectory's first turn writes is ``[x1, y1, x2, y2]`` in the FOCUS frame of
``rewards.coords`` (0..1 on each axis of the ORIGINAL image, both model families alike; VisRL's own
box text, 3 decimals). ``parse_focus_box`` never raises on any text: it returns a ``FocusBox`` whose
``status`` says why a box cannot be used, and the trajectory then ends with reward 0.

Statuses: ``ok``; ``unparsable`` (no 4-number box in the text); ``empty`` (x2 <= x1 or y2 <= y1);
``out_of_range`` (a coordinate outside [0, 1] by more than ``RANGE_TOLERANCE``); ``too_small`` (the
crop is under ``min_side`` pixels on a side); ``too_thin`` (the crop's aspect ratio reaches the image
processor's limit of 200, where ``smart_resize`` raises).

Crops are cut from the ORIGINAL image as the processor loads it (``processing.image_processor.
load_image``: EXIF orientation, RGB) with the box rounded outwards to whole pixels, so the region the
box names is always inside the crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from paddlemix_r1.processing.image_processor import MAX_ASPECT_RATIO, ImageInput, load_image
from paddlemix_r1.rewards.coords import Box, box_iou, focus_to_original
from paddlemix_r1.rewards.parsing import parse_box

RANGE_TOLERANCE = 1e-3
"""Coordinates a rounding step past 0 or 1 (e.g. 1.0004) are clipped, not refused."""
MIN_CROP_SIDE = 4
"""Default smallest crop side in original pixels (the processor upsamples it to min_pixels)."""
STATUSES = ("ok", "unparsable", "empty", "out_of_range", "too_small", "too_thin")


@dataclass(frozen=True)
class FocusBox:
    """A parsed first turn: ``focus`` as written (clipped to [0, 1]), ``pixels`` the crop rectangle in
    original pixels (whole pixels, rounded outwards); both None unless ``status == "ok"``."""

    status: str
    focus: Box | None = None
    pixels: tuple[int, int, int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def format_focus_box(box: Sequence[float], decimals: int = 3) -> str:
    """The box text of a first turn: ``[0.123, 0.456, 0.789, 0.900]`` (VisRL writes 3 decimals)."""
    return "[" + ", ".join(f"{float(v):.{decimals}f}" for v in box) + "]"


def check_focus_box(box: Sequence[float], image_size: Sequence[int], min_side: int = MIN_CROP_SIDE) -> FocusBox:
    """Validate a FOCUS box for an image of ``image_size`` (W, H); see the module docstring."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return FocusBox("unparsable")
    if not (x2 > x1 and y2 > y1):
        return FocusBox("empty")
    if min(x1, y1) < -RANGE_TOLERANCE or max(x2, y2) > 1.0 + RANGE_TOLERANCE:
        return FocusBox("out_of_range")
    focus = (max(0.0, x1), max(0.0, y1), min(1.0, x2), min(1.0, y2))
    w, h = int(image_size[0]), int(image_size[1])
    px1, py1, px2, py2 = focus_to_original(focus, (w, h))
    left, top = max(0, math.floor(px1)), max(0, math.floor(py1))
    right, bottom = min(w, math.ceil(px2)), min(h, math.ceil(py2))
    cw, ch = right - left, bottom - top
    if cw < min_side or ch < min_side:
        return FocusBox("too_small")
    if max(cw, ch) / min(cw, ch) >= MAX_ASPECT_RATIO:
        return FocusBox("too_thin")
    return FocusBox("ok", focus, (left, top, right, bottom))


def parse_focus_box(text: str, image_size: Sequence[int], min_side: int = MIN_CROP_SIDE) -> FocusBox:
    """The first box written in ``text`` (``rewards.parsing.parse_box``), checked; never raises on text."""
    box = parse_box(text)
    if box is None:
        return FocusBox("unparsable")
    return check_focus_box(box, image_size, min_side)


def crop_image(image: ImageInput, box: FocusBox) -> Image.Image:
    """The region of a usable ``box`` cut from the original ``image`` (a path or PIL image)."""
    if not box.ok or box.pixels is None:
        raise ValueError(f"crop_image needs a usable box, got status {box.status!r}")
    return load_image(image).crop(box.pixels)


def image_size_of(image: ImageInput) -> tuple[int, int]:
    """(W, H) of the image as the processor loads it (after EXIF orientation)."""
    if isinstance(image, Image.Image):
        return load_image(image).size
    with Image.open(image) as opened:
        orientation = opened.getexif().get(0x0112, 1)
        w, h = opened.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def diverse_box(first: Box, rng: np.random.Generator, max_tries: int = 100) -> Box | None:
    """VisRL's diversity controller: a random FOCUS box of about ``first``'s size that does not overlap it.

    Width and height are drawn uniformly in [(1 - d) w1, (1 + d) w1] (and h1); d starts at 0.3 and grows by
    0.1 at every 20th try, try 0 included (so 0.4 from the start, as VisRL's loop does); x1 ~ U(0, 1 - w),
    y1 ~ U(0, 1 - h). None after ``max_tries`` (VisRL then drops the attempt)."""
    w1, h1 = first[2] - first[0], first[3] - first[1]
    d = 0.3
    for attempt in range(max_tries):
        if attempt % 20 == 0:
            d += 0.1
        w = float(rng.uniform((1 - d) * w1, (1 + d) * w1))
        h = float(rng.uniform((1 - d) * h1, (1 + d) * h1))
        if not (0 < w < 1 and 0 < h < 1):
            continue
        x = float(rng.uniform(0, 1 - w))
        y = float(rng.uniform(0, 1 - h))
        box = (x, y, x + w, y + h)
        if box_iou(box, first) == 0.0:
            return box
    return None
