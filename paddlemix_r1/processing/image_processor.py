"""Qwen2-VL / Qwen2.5-VL image processing (same numbers as transformers' Qwen2VLImageProcessorPil).

numpy + PIL only. One image goes through:

    load (EXIF orientation, RGB)  ->  smart_resize (PIL, BICUBIC)  ->  rescale  ->  normalize
    ->  duplicate in time to temporal_patch_size  ->  patchify

and comes out as ``grid_h * grid_w`` rows of ``C * T * P * P`` values, ordered so that every
``merge_size x merge_size`` block of neighbouring patches is contiguous (the vision merger
relies on that order).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

ImageInput = str | os.PathLike | Image.Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Defaults of the reference processor when a config leaves a field out.
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280


MAX_ASPECT_RATIO = 200
"""``smart_resize`` refuses an image whose long side is more than this many times its short side."""


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
) -> tuple[int, int]:
    """Return (h, w) divisible by ``factor``, with h*w in [min_pixels, max_pixels], aspect kept.

    ``factor`` is patch_size * merge_size (28 for both Qwen2-VL and Qwen2.5-VL).
    """
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got "
            f"{max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def load_image(image: ImageInput) -> Image.Image:
    """Open ``image`` (a path or a PIL image) upright and in RGB.

    The EXIF orientation tag is applied (a phone photo stored sideways comes out the way it was
    taken). Transparency is composited onto white, as the reference processor does for PIL inputs;
    other modes are converted with ``Image.convert("RGB")``.
    """
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image file not found: {os.fspath(image)}")
        with Image.open(image) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    elif isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
    else:
        raise TypeError(f"an image must be a file path or a PIL.Image.Image, got {type(image).__name__}")

    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def patchify(image: np.ndarray, patch_size: int, merge_size: int, temporal_patch_size: int) -> np.ndarray:
    """Cut a normalized (H, W, C) image into flat patches in the Qwen2-VL order.

    Returns ``(grid_h * grid_w, C * T * P * P)`` float32 with ``grid_h = H // P``, rows ordered
    (block_row, block_col, row_in_block, col_in_block) with blocks of merge_size x merge_size
    patches, and each row laid out as (C, T, P, P): the still image repeated T times.
    """
    height, width, channels = image.shape
    p, m, t = patch_size, merge_size, temporal_patch_size
    grid_h, grid_w = height // p, width // p
    if grid_h * p != height or grid_w * p != width or grid_h % m or grid_w % m:
        raise ValueError(f"image of {height}x{width} is not a whole number of {p * m}-pixel blocks")
    x = image.reshape(grid_h // m, m, p, grid_w // m, m, p, channels)  # (gh/m, m, P, gw/m, m, P, C)
    x = x.transpose(0, 3, 1, 4, 6, 2, 5)  # (gh/m, gw/m, m, m, C, P, P)
    x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], t, p, p))  # (gh/m, gw/m, m, m, C, T, P, P)
    return np.ascontiguousarray(x, dtype=np.float32).reshape(grid_h * grid_w, channels * t * p * p)


@dataclass
class ImageBatch:
    """What the image processor returns for a list of images.

    pixel_values:   (sum_i grid_h_i * grid_w_i, C * T * P * P) float32, images concatenated in order.
    image_grid_thw: (num_images, 3) int64, rows (1, grid_h, grid_w) in patches of patch_size.
    original_sizes: per image (width, height) after EXIF orientation, before resizing.
    resized_sizes:  per image (width, height) fed to the vision tower (multiples of 28).
    """

    pixel_values: np.ndarray
    image_grid_thw: np.ndarray
    original_sizes: list[tuple[int, int]]
    resized_sizes: list[tuple[int, int]]


class ImageProcessor:
    """The Qwen2-VL / Qwen2.5-VL image processor (both families share it).

    Build it with :meth:`from_pretrained` (reads ``preprocessor_config.json``) or directly.
    """

    def __init__(
        self,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        patch_size: int = 14,
        temporal_patch_size: int = 2,
        merge_size: int = 2,
        image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN,
        image_std: tuple[float, ...] = OPENAI_CLIP_STD,
        rescale_factor: float = 1 / 255,
        do_rescale: bool = True,
        do_normalize: bool = True,
        resample: int = Image.Resampling.BICUBIC,
    ) -> None:
        if not 0 < min_pixels <= max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got min_pixels={min_pixels}, max_pixels={max_pixels}")
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values (RGB), got {image_mean} and {image_std}")
        self.min_pixels = int(min_pixels)
        self.max_pixels = int(max_pixels)
        self.patch_size = int(patch_size)
        self.temporal_patch_size = int(temporal_patch_size)
        self.merge_size = int(merge_size)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.rescale_factor = float(rescale_factor)
        self.do_rescale = bool(do_rescale)
        self.do_normalize = bool(do_normalize)
        self.resample = Image.Resampling(int(resample))

    @property
    def factor(self) -> int:
        """Side of one merged token in pixels (28 for Qwen2-VL / Qwen2.5-VL)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "preprocessor config") -> ImageProcessor:
        """Build from a parsed ``preprocessor_config.json``.

        Pixel limits are read from the published keys ``min_pixels`` / ``max_pixels`` or from the
        transformers-5 ``size: {shortest_edge, longest_edge}``; the top-level keys win when both are
        present (as in the reference). Absent limits take the reference defaults (56*56, 28*28*1280).
        """
        for flag in ("do_resize", "do_convert_rgb"):
            if config.get(flag, True) is not True:
                raise ValueError(f"{source}: {flag}={config[flag]!r} is not supported (Qwen2-VL needs it true)")
        size = config.get("size") or {}
        if not isinstance(size, dict):
            raise TypeError(f"{source}: 'size' must be a mapping, got {size!r}")
        min_pixels = config.get("min_pixels", size.get("shortest_edge", size.get("min_pixels", DEFAULT_MIN_PIXELS)))
        max_pixels = config.get("max_pixels", size.get("longest_edge", size.get("max_pixels", DEFAULT_MAX_PIXELS)))
        return cls(
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            patch_size=config.get("patch_size", 14),
            temporal_patch_size=config.get("temporal_patch_size", 2),
            merge_size=config.get("merge_size", 2),
            image_mean=config.get("image_mean", OPENAI_CLIP_MEAN),
            image_std=config.get("image_std", OPENAI_CLIP_STD),
            rescale_factor=config.get("rescale_factor", 1 / 255),
            do_rescale=config.get("do_rescale", True),
            do_normalize=config.get("do_normalize", True),
            resample=config.get("resample", Image.Resampling.BICUBIC),
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> ImageProcessor:
        """Read ``<path>/preprocessor_config.json`` (or that file itself)."""
        path = os.fspath(path)
        file = os.path.join(path, "preprocessor_config.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no preprocessor_config.json at {path}")
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
        return cls.from_config(config, source=file)

    def to_config(self) -> dict[str, Any]:
        """The published ``preprocessor_config.json`` layout for these settings."""
        return {
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "rescale_factor": self.rescale_factor,
            "do_rescale": self.do_rescale,
            "do_normalize": self.do_normalize,
            "resample": int(self.resample),
            "image_processor_type": "Qwen2VLImageProcessor",
        }

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) an image of ``width x height`` is resized to."""
        h, w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return w, h

    def num_image_tokens(self, width: int, height: int) -> int:
        """Number of ``<|image_pad|>`` tokens (merged patches) for an image of ``width x height``."""
        w, h = self.resized_size(width, height)
        return (h // self.factor) * (w // self.factor)

    def preprocess_one(
        self, image: ImageInput
    ) -> tuple[np.ndarray, tuple[int, int, int], tuple[int, int], tuple[int, int]]:
        """Process one image: (patches, (t, grid_h, grid_w), original (W, H), resized (W, H))."""
        pil = load_image(image)
        width, height = pil.size
        new_w, new_h = self.resized_size(width, height)
        pil = pil.resize((new_w, new_h), resample=self.resample)
        pixels = np.asarray(pil)  # (H', W', 3) uint8
        if self.do_rescale:
            # float64 product then float32, exactly the reference's rounding
            pixels = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)  # (H', W', 3)
        else:
            pixels = pixels.astype(np.float32)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)  # (3,)
            std = np.asarray(self.image_std, dtype=np.float32)  # (3,)
            pixels = (pixels - mean) / std  # (H', W', 3)
        patches = patchify(pixels, self.patch_size, self.merge_size, self.temporal_patch_size)  # (gh*gw, C*T*P*P)
        grid = (1, new_h // self.patch_size, new_w // self.patch_size)
        return patches, grid, (width, height), (new_w, new_h)

    def __call__(self, images: list[ImageInput]) -> ImageBatch:
        """Process ``images`` (paths or PIL images) into one :class:`ImageBatch`."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        if len(images) == 0:
            raise ValueError("no images given")
        patches, grids, original_sizes, resized_sizes = [], [], [], []
        for image in images:
            p, grid, original, resized = self.preprocess_one(image)
            patches.append(p)
            grids.append(grid)
            original_sizes.append(original)
            resized_sizes.append(resized)
        return ImageBatch(
            pixel_values=np.concatenate(patches, axis=0),  # (N, C*T*P*P)
            image_grid_thw=np.asarray(grids, dtype=np.int64),  # (num_images, 3)
            original_sizes=original_sizes,
            resized_sizes=resized_sizes,
        )
