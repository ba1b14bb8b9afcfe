"""Deterministic synthetic tasks in the training row format, for the demo, tests and smoke runs.

A row is a dict:
    images   list of PIL images (or paths)
    problem  the question, without the answer-format template
    solution gold answer: int (counting), [x1, y1, x2, y2] in original pixels (rec), str (geoqa)
    task     "counting" | "rec" | "geoqa"
    id       stable identifier
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 90, 220), "yellow": (230, 200, 40)}
SHAPES = ("square", "circle", "triangle")


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = box
    if shape == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=color)
    elif shape == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=color)
    else:
        draw.polygon([(x1, y2 - 1), ((x1 + x2) // 2, y1), (x2 - 1, y2 - 1)], fill=color)


def _place(rng: np.random.Generator, n: int, size: tuple[int, int], side: int) -> list[tuple[int, int, int, int]]:
    """n non-overlapping boxes of side ``side`` on a grid of cells (deterministic given rng)."""
    w, h = size
    cols, rows = w // side, h // side
    cells = rng.choice(cols * rows, size=n, replace=False)
    return [(int(c % cols) * side, int(c // cols) * side, int(c % cols) * side + side, int(c // cols) * side + side)
            for c in cells]


def counting_rows(n: int, seed: int = 0, max_count: int = 5, size: tuple[int, int] = (112, 112),
                  side: int = 28) -> list[dict]:
    """Images with k in [1, max_count] shapes; question "How many shapes are in the image?"."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(1, max_count + 1))
        img = Image.new("RGB", size, (255, 255, 255))
        d = ImageDraw.Draw(img)
        for box in _place(rng, k, size, side):
            _draw(d, SHAPES[int(rng.integers(len(SHAPES)))], box, list(COLORS.values())[int(rng.integers(len(COLORS)))])
        rows.append({"id": f"counting/{seed}/{i}", "images": [img], "problem": "How many shapes are in the image?",
                     "solution": k, "task": "counting"})
    return rows


def rec_rows(n: int, seed: int = 0, size: tuple[int, int] = (140, 112), side: int = 28) -> list[dict]:
    """One target shape described by colour and kind among up to two distractors; gold box in pixels."""
    rng = np.random.default_rng(seed)
    rows = []
    names = list(COLORS)
    for i in range(n):
        img = Image.new("RGB", size, (255, 255, 255))
        d = ImageDraw.Draw(img)
        boxes = _place(rng, int(rng.integers(1, 4)), size, side)
        target = (names[int(rng.integers(len(names)))], SHAPES[int(rng.integers(len(SHAPES)))])
        _draw(d, target[1], boxes[0], COLORS[target[0]])
        for box in boxes[1:]:  # distractors differ in colour
            other = names[(names.index(target[0]) + 1 + int(rng.integers(len(names) - 1))) % len(names)]
            _draw(d, SHAPES[int(rng.integers(len(SHAPES)))], box, COLORS[other])
        caption = f"the {target[0]} {target[1]}"
        rows.append({"id": f"rec/{seed}/{i}", "images": [img], "problem": f"Please provide the bounding box of {caption}.",
                     "normal_caption": caption, "solution": [float(v) for v in boxes[0]], "task": "rec"})
    return rows
