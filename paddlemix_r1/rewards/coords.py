"""Box coordinate frames and the conversions between them.

Boxes are ``(x1, y1, x2, y2)`` with x to the right and y down. Three frames meet in REC:

* ORIGINAL pixels: the frame of the dataset's gold boxes, of the image as stored on disk
  (after EXIF orientation, as the image processor loads it); size ``image_size = (W, H)``.
* RESIZED pixels: the frame of the image the vision tower sees after ``smart_resize``
  (multiples of 28); size ``resized_size = (W', H')``. Qwen2.5-VL answers in this frame.
* NORMALIZED-1000: ``0..1000`` on both axes relative to the image, independent of its size.
  Qwen2-VL answers in this frame (``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``).

Every conversion scales each axis by its own factor (the resize does not keep the aspect ratio
exactly) and is a plain continuous scaling: no rounding, no clipping, no +1 pixel conventions.

Two more frames meet in focus-region reasoning (VisRL, ``paddlemix_r1.focus``):

* FOCUS: ``0..1`` on each axis relative to the ORIGINAL image (x / W, y / H), the box text of a
  trajectory's first turn, written the same way by both model families. VisRL's generator crops with
  exactly this convention (x * W, y * H), so its preference records are in this frame.
* VISCOT: ``0..1`` relative to the side ``S = max(W, H)`` of the image padded to a square with
  LLaVA's ``expand2square``, which pastes the image at the integer offset ``((S - W) // 2,
  (S - H) // 2)``. Visual-CoT's box annotations (its ``gpt`` turns) are in this frame; on a
  non-square image it differs from FOCUS (VisRL's crops mix the two).
Sizes are always ``(width, height)``, the PIL order; note that ``smart_resize`` takes and returns
``(height, width)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from paddlemix_r1.families import QWEN2_5_VL, QWEN2_VL, VISION_FAMILIES

Box = tuple[float, float, float, float]
Size = tuple[int, int]


NORMALIZED_RANGE = 1000.0


def _scale(box: Sequence[float], sx: float, sy: float) -> Box:
    x1, y1, x2, y2 = box
    return (float(x1) * sx, float(y1) * sy, float(x2) * sx, float(y2) * sy)


def _check_size(size: Sequence[float], name: str) -> tuple[float, float]:
    if len(size) != 2:
        raise ValueError(f"{name} must be (width, height), got {size!r}")
    w, h = float(size[0]), float(size[1])
    if not (w > 0 and h > 0):
        raise ValueError(f"{name} must be positive (width, height), got {size!r}")
    return w, h


def resized_to_original(box: Sequence[float], resized_size: Sequence[int], image_size: Sequence[int]) -> Box:
    """Absolute pixels of the resized image -> pixels of the original image (Qwen2.5-VL answers)."""
    rw, rh = _check_size(resized_size, "resized_size")
    ow, oh = _check_size(image_size, "image_size")
    return _scale(box, ow / rw, oh / rh)


def original_to_resized(box: Sequence[float], image_size: Sequence[int], resized_size: Sequence[int]) -> Box:
    """Pixels of the original image -> absolute pixels of the resized image (inverse of the above)."""
    ow, oh = _check_size(image_size, "image_size")
    rw, rh = _check_size(resized_size, "resized_size")
    return _scale(box, rw / ow, rh / oh)


def normalized_to_original(box: Sequence[float], image_size: Sequence[int]) -> Box:
    """0..1000 normalized coordinates -> pixels of the original image (Qwen2-VL answers)."""
    ow, oh = _check_size(image_size, "image_size")
    return _scale(box, ow / NORMALIZED_RANGE, oh / NORMALIZED_RANGE)


def original_to_normalized(box: Sequence[float], image_size: Sequence[int]) -> Box:
    """Pixels of the original image -> 0..1000 normalized coordinates (inverse of the above)."""
    ow, oh = _check_size(image_size, "image_size")
    return _scale(box, NORMALIZED_RANGE / ow, NORMALIZED_RANGE / oh)


def model_box_to_original(
    box: Sequence[float],
    model_family: str,
    image_size: Sequence[int],
    resized_size: Sequence[int] | None = None,
) -> Box:
    """A box as the model family writes it -> original pixels.

    ``qwen2_5_vl``: absolute pixels of the resized image, needs ``resized_size``.
    ``qwen2_vl``: 0..1000 normalized; ``resized_size`` is not used.
    """
    if model_family == QWEN2_5_VL:
        if resized_size is None:
            raise ValueError("qwen2_5_vl boxes are in resized-image pixels: resized_size is required")
        return resized_to_original(box, resized_size, image_size)
    if model_family == QWEN2_VL:
        return normalized_to_original(box, image_size)
    raise ValueError(f"unknown model_family {model_family!r}; expected one of {VISION_FAMILIES}")


def original_box_to_model(
    box: Sequence[float],
    model_family: str,
    image_size: Sequence[int],
    resized_size: Sequence[int] | None = None,
) -> Box:
    """Original pixels -> the frame the model family writes boxes in (inverse of the above)."""
    if model_family == QWEN2_5_VL:
        if resized_size is None:
            raise ValueError("qwen2_5_vl boxes are in resized-image pixels: resized_size is required")
        return original_to_resized(box, image_size, resized_size)
    if model_family == QWEN2_VL:
        return original_to_normalized(box, image_size)
    raise ValueError(f"unknown model_family {model_family!r}; expected one of {VISION_FAMILIES}")


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes in the same frame, continuous coordinates.

    Area is ``(x2 - x1) * (y2 - y1)`` with no +1: coordinates are positions on a continuous
    plane (the model writes floats and every frame conversion is a scaling), so the discrete
    "inclusive pixel" convention the anchors mixed in does not apply. A degenerate box
    (x2 <= x1 or y2 <= y1) has no area and scores 0.
    """
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    if not (ax2 > ax1 and ay2 > ay1 and bx2 > bx1 and by2 > by1):
        return 0.0
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if not union > 0:  # also catches NaN / inf arithmetic
        return 0.0
    iou = inter / union
    return iou if 0.0 <= iou <= 1.0 else 0.0


def focus_to_original(box: Sequence[float], image_size: Sequence[int]) -> Box:
    """FOCUS (0..1 per axis of the original image) -> original pixels."""
    ow, oh = _check_size(image_size, "image_size")
    return _scale(box, ow, oh)


def original_to_focus(box: Sequence[float], image_size: Sequence[int]) -> Box:
    """Original pixels -> FOCUS (inverse of the above)."""
    ow, oh = _check_size(image_size, "image_size")
    return _scale(box, 1.0 / ow, 1.0 / oh)


def square_pad_offset(image_size: Sequence[int]) -> tuple[int, int, int]:
    """``(S, dx, dy)`` of LLaVA's ``expand2square``: the square's side and where the image is pasted.

    ``expand2square`` pastes at ``((S - W) // 2, 0)`` or ``(0, (S - H) // 2)``: integer division, so on an
    odd difference the image sits half a pixel left of / above the centre."""
    ow, oh = _check_size(image_size, "image_size")
    w, h = int(ow), int(oh)
    if (w, h) != (ow, oh):
        raise ValueError(f"image_size must be whole pixels for the padded-square frame, got {image_size!r}")
    side = max(w, h)
    return side, (side - w) // 2, (side - h) // 2


def viscot_to_original(box: Sequence[float], image_size: Sequence[int]) -> Box:
    """VISCOT (0..1 of the padded square) -> original pixels: ``v * S - offset`` on each axis.

    A box reaching into the padding comes out partly outside the image (negative or > W / H): the caller
    decides whether to clip (``focus.boxes`` treats it as out of range)."""
    side, dx, dy = square_pad_offset(image_size)
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 * side - dx, y1 * side - dy, x2 * side - dx, y2 * side - dy)


def original_to_viscot(box: Sequence[float], image_size: Sequence[int]) -> Box:
    """Original pixels -> VISCOT (inverse of the above)."""
    side, dx, dy = square_pad_offset(image_size)
    x1, y1, x2, y2 = (float(v) for v in box)
    return ((x1 + dx) / side, (y1 + dy) / side, (x2 + dx) / side, (y2 + dy) / side)


def viscot_to_focus(box: Sequence[float], image_size: Sequence[int]) -> Box:
    """VISCOT -> FOCUS, through original pixels (the conversion VisRL's crops leave out)."""
    return original_to_focus(viscot_to_original(box, image_size), image_size)


def focus_to_viscot(box: Sequence[float], image_size: Sequence[int]) -> Box:
    """FOCUS -> VISCOT (inverse of the above)."""
    return original_to_viscot(focus_to_original(box, image_size), image_size)


def focus_to_model(
    box: Sequence[float], model_family: str, image_size: Sequence[int], resized_size: Sequence[int] | None = None
) -> Box:
    """FOCUS -> the frame the model family writes REC boxes in (``original_box_to_model``)."""
    return original_box_to_model(focus_to_original(box, image_size), model_family, image_size, resized_size)


def model_to_focus(
    box: Sequence[float], model_family: str, image_size: Sequence[int], resized_size: Sequence[int] | None = None
) -> Box:
    """A box in the model family's REC frame -> FOCUS (inverse of the above)."""
    return original_to_focus(model_box_to_original(box, model_family, image_size, resized_size), image_size)
