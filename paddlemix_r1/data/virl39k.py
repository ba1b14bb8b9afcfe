"""ViRL39K (``39Krelease.parquet``) as RACRO prepares it, read into captioner rows.

RACRO's preprocessing (verl-main ``examples/data_preprocess/virl39k_pre.py`` and ``virl39k.py``), step by step:

1. rows with ``source == "DeepScaleR"`` are dropped (text-only math);
2. ``image`` (a list of paths relative to the parquet's directory) becomes absolute paths;
3. a question whose ``<image>`` tag count differs from its image count gets ``"<image>"`` prepended ("some
   problems with only 1 image does not contain the <image> tag"); a row still off after that is bad;
4. images are resized so their area lies in [512², 2048²] (verl ``rl_dataset.process_image``: scale by
   sqrt(limit / area), sides truncated to int), then RGB. Images already in range are used as they are;
   the others are resized once into ``cache_dir`` and the row points at the copy.

Rows (the captioner task's, ``tasks/captioner.py``)::

    id        qid (else "<file>:row <N>")
    images    absolute paths
    problem   the question without "<image>" tags
    question  the question with its tags (fixed as in step 3): RACRO's text for both prompts
    solution  the gold answer, an outer \\boxed{} stripped
    task      "captioner"
    category, source, qid, PassRate_32BTrained, PassRate_7BBase   (kept as they are)

A bad row (missing or non-string question / answer, images not a list of paths, a missing or unreadable
image, tags that still do not match) raises ValueError naming ``<file>:row <N>`` (0-based, as
``dataset[N]``), or with ``skip_bad=True`` is skipped and listed in ``Virl39kRows.skipped``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from paddlemix_r1.tasks.captioner import IMAGE_TAG, CaptionerTask

DROPPED_SOURCE = "DeepScaleR"
MIN_PIXELS = 512 * 512
MAX_PIXELS = 2048 * 2048
_CORE = ("question", "answer", "image")


@dataclass
class Virl39kRows:
    """What a read gave: the rows, the bad rows skipped (``"<file>:row <N>: reason"``), the DeepScaleR rows
    dropped and the rows whose question got an ``<image>`` tag prepended."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped: int = 0
    tags_added: int = 0


def resized_size(width: int, height: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
                 ) -> tuple[int, int]:
    """(W, H) after verl's ``process_image``: down to max_pixels, then up to min_pixels, sides truncated."""
    if width * height > max_pixels:
        f = math.sqrt(max_pixels / (width * height))
        width, height = int(width * f), int(height * f)
    if width * height < min_pixels:
        f = math.sqrt(min_pixels / (width * height))
        width, height = int(width * f), int(height * f)
    return width, height


def resize_area(image: Image.Image, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``image`` with its area brought into [min_pixels, max_pixels] as RACRO's data loader does, in RGB."""
    size = resized_size(image.width, image.height, min_pixels, max_pixels)
    if size != image.size:
        image = image.resize(size)  # PIL's default filter, as verl calls it
    return image if image.mode == "RGB" else image.convert("RGB")


def fix_image_tags(question: str, n_images: int) -> tuple[str, bool]:
    """RACRO's tag fix: prepend "<image>" when the tag count is not the image count; returns (text, added)."""
    if question.count(IMAGE_TAG) != n_images:
        return IMAGE_TAG + question, True
    return question, False


def _image_in_range(path: str, cache_dir: str | None, where: str) -> str:
    """The path to use for ``path``: itself when its area is in range, else a resized copy in ``cache_dir``."""
    try:
        with Image.open(path) as im:
            size = im.size  # header only: no decode for the common in-range case
            if resized_size(*size) == size:
                return path
            if cache_dir is None:
                raise ValueError(f"{where}: image {path} ({size[0]}x{size[1]}) needs resizing into "
                                 f"[512^2, 2048^2] pixels; pass cache_dir for the resized copies")
            key = hashlib.sha1(f"{os.path.abspath(path)}:{os.path.getmtime(path)}".encode()).hexdigest()[:20]
            target = os.path.join(cache_dir, f"{key}.png")
            if not os.path.exists(target):
                im.load()
                os.makedirs(cache_dir, exist_ok=True)
                tmp = f"{target}.tmp-{os.getpid()}"
                resize_area(im).save(tmp, format="PNG")
                os.replace(tmp, target)  # whole or absent: a killed read never leaves half a file
            return target
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{where}: image {path} cannot be read: {e}") from None


def _iter_parquet(path: str) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [c for c in _CORE if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a ViRL39K parquet: missing column(s) {missing} (has {table.column_names})")
    for batch in table.to_batches(max_chunksize=1024):
        yield from batch.to_pylist()


def _row(obj: dict[str, Any], where: str, root: str, cache_dir: str | None, task: CaptionerTask
         ) -> tuple[dict[str, Any], bool]:
    question, answer, images = obj.get("question"), obj.get("answer"), obj.get("image")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: field 'question' must be a non-empty string, got {question!r}")
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
        raise ValueError(f"{where}: field 'image' must be a non-empty list of image paths, got {images!r}")
    solution = task.parse_solution(answer, f"{where}: field 'answer'") if answer is not None else None
    if solution is None:
        raise ValueError(f"{where}: field 'answer' is missing")
    question, added = fix_image_tags(question, len(images))
    if question.count(IMAGE_TAG) != len(images):
        raise ValueError(f"{where}: the question has {question.count(IMAGE_TAG)} {IMAGE_TAG} tags for "
                         f"{len(images)} images, even after RACRO's fix")
    paths = []
    for p in images:
        full = p if os.path.isabs(p) else os.path.join(root, p)
        if not os.path.isfile(full):
            raise ValueError(f"{where}: image file not found: {full}")
        paths.append(_image_in_range(full, cache_dir, where))
    extras = {k: v for k, v in obj.items() if k not in _CORE}
    qid = obj.get("qid")
    row = {**extras, "id": str(qid) if qid not in (None, "") else where, "images": paths,
           "problem": question.replace(IMAGE_TAG, "").strip(), "question": question, "solution": solution,
           "task": task.name}
    return row, added


def read_virl39k(path: str, image_root: str | None = None, cache_dir: str | None = None, skip_bad: bool = False,
                 limit: int | None = None) -> Virl39kRows:
    """Captioner rows of a ViRL39K parquet (module docstring). ``image_root``: what image paths are relative to
    (default: the parquet's directory, as RACRO); ``cache_dir``: where resized copies go (default:
    ``<parquet dir>/.virl39k_resized``); ``limit``: stop after this many kept rows."""
    root = image_root if image_root is not None else os.path.dirname(os.path.abspath(path))
    cache = cache_dir if cache_dir is not None else os.path.join(os.path.dirname(os.path.abspath(path)),
                                                                 ".virl39k_resized")
    task = CaptionerTask()
    out = Virl39kRows()
    for i, obj in enumerate(_iter_parquet(path)):
        if obj.get("source") == DROPPED_SOURCE:
            out.dropped += 1
            continue
        where = f"{path}:row {i}"
        try:
            row, added = _row(obj, where, root, cache, task)
        except (ValueError, TypeError) as e:
            if not skip_bad:
                raise
            out.skipped.append(str(e))
            continue
        out.rows.append(row)
        out.tags_added += added
        if limit is not None and len(out.rows) >= limit:
            break
    return out
