"""Deterministic synthetic tasks in the training row format, for the demo, tests and smoke runs.

A row is a dict:
    images   list of PIL images (or paths)
    problem  the question, without the answer-format template
    solution gold answer: int (counting), [x1, y1, x2, y2] in original pixels (rec), str (geoqa),
             "<answer>...</answer>" (Curr-ReFT's math rows: ``counting_curriculum_rows``)
    task     "counting" | "rec" | "geoqa" | "math"
    id       stable identifier

Every generator is a pure function of its arguments: the same seed gives the same rows and the
same image bytes. ``write_jsonl_dataset`` stores rows as PNGs plus a VLM-R1-style JSONL that
``readers.read_training_files`` reads back.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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
                  side: int = 28, shapes: tuple[str, ...] = SHAPES, colors: tuple[str, ...] | None = None) -> list[dict]:
    """Images with k in [1, max_count] shapes; question "How many shapes are in the image?".

    ``shapes`` / ``colors`` narrow the variety (e.g. red squares only: every 28-px cell, one merged
    vision token, is then either empty or full — the easiest counting there is, for the CPU demo).
    """
    rng = np.random.default_rng(seed)
    palette = list(COLORS.values()) if colors is None else [COLORS[c] for c in colors]
    rows = []
    for i in range(n):
        k = int(rng.integers(1, max_count + 1))
        img = Image.new("RGB", size, (255, 255, 255))
        d = ImageDraw.Draw(img)
        for box in _place(rng, k, size, side):
            _draw(d, shapes[int(rng.integers(len(shapes)))], box, palette[int(rng.integers(len(palette)))])
        rows.append({"id": f"counting/{seed}/{i}", "images": [img], "problem": "How many shapes are in the image?",
                     "solution": k, "task": "counting"})
    return rows


CURRICULUM_FORMS = ("judge", "choice", "open")
"""Curr-ReFT's answer formats by stage: yes/no judgement, a multiple-choice letter, the open answer."""
CHOICE_LETTERS = "ABCD"


def counting_curriculum_rows(n: int, form: str, seed: int = 0, max_count: int = 3, shuffle_options: bool = True,
                             **counting: Any) -> list[dict]:
    """Counting questions in one of Curr-ReFT's three answer formats, as its ``math`` rows (counting answers
    are numbers): ``{id, images, problem, solution: "<answer>...</answer>", task: "math"}``.

    judge   "Are there 2 shapes in the image?"; half the rows state the true count (gold "yes"), the others
            a different count in [1, max(max_count, 2)] (gold "no").
    choice  "How many shapes are in the image? Options: A. 3 B. 1 C. 4 D. 2": the counts 1..4 in a random order
            per row (max_count <= 4), or ascending ("A. 1 B. 2 C. 3 D. 4") with ``shuffle_options=False``;
            gold the letter of the true count.
    open    "How many shapes are in the image?"; gold the count.

    The images are ``counting_rows(n, seed, max_count, **counting)``'s, so the three forms of one seed show the
    same pictures.
    """
    if form not in CURRICULUM_FORMS:
        raise ValueError(f"form must be one of {CURRICULUM_FORMS}, got {form!r}")
    if form == "choice" and max_count > len(CHOICE_LETTERS):
        raise ValueError(f"choice rows offer {len(CHOICE_LETTERS)} options: max_count must be <= "
                         f"{len(CHOICE_LETTERS)}, got {max_count}")
    rng = np.random.default_rng([seed, CURRICULUM_FORMS.index(form)])
    rows = []
    for row in counting_rows(n, seed=seed, max_count=max_count, **counting):
        k = row["solution"]
        if form == "judge":
            claim = k if rng.integers(2) else int(rng.choice([c for c in range(1, max(max_count, 2) + 1) if c != k]))
            verb, noun = ("Is", "shape") if claim == 1 else ("Are", "shapes")
            problem, answer = f"{verb} there {claim} {noun} in the image?", "yes" if claim == k else "no"
        elif form == "choice":
            order = rng.permutation(len(CHOICE_LETTERS)) if shuffle_options else np.arange(len(CHOICE_LETTERS))
            values = [int(v) for v in order + 1]
            options = " ".join(f"{letter}. {v}" for letter, v in zip(CHOICE_LETTERS, values))
            problem, answer = f"{row['problem']} Options: {options}", CHOICE_LETTERS[values.index(k)]
        else:
            problem, answer = row["problem"], str(k)
        rows.append({**row, "id": f"counting_{form}/{seed}/{row['id'].rsplit('/', 1)[1]}", "problem": problem,
                     "solution": f"<answer>{answer}</answer>", "task": "math", "count": k})
    return rows


def write_curr_reft_jsonl(rows: Sequence[dict], out_dir: str, name: str) -> str:
    """Save ``rows`` as PNGs under ``out_dir/images/<name>/`` and Curr-ReFT's JSONL ``out_dir/<name>.jsonl``:
    one ``{"id", "image": path relative to out_dir, "problem", "solution", "task"}`` per line (plus the rows'
    other JSON fields). Read it back with ``read_training_files([path], out_dir, "math")``. Returns the path."""
    from paddlemix_r1.processing.image_processor import load_image

    image_dir = os.path.join(out_dir, "images", name)
    os.makedirs(image_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            if len(row["images"]) != 1:
                raise ValueError(f"row {row.get('id')}: Curr-ReFT rows hold one image, got {len(row['images'])}")
            rel = os.path.join("images", name, f"{i:06d}.png")
            load_image(row["images"][0]).save(os.path.join(out_dir, rel), format="PNG")
            extras = {k: v for k, v in row.items() if k not in ("id", "images", "problem", "solution", "task")}
            f.write(json.dumps({"id": str(row["id"]), "image": rel, "problem": row["problem"],
                                "solution": row["solution"], "task": row["task"], **extras}, ensure_ascii=False) + "\n")
    return path


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


# Integer right triangles (leg, leg, hypotenuse); scaled copies are drawn from these.
PYTHAGOREAN_TRIPLES = ((3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29))
GEOMETRY_KINDS = ("angle", "hypotenuse")


def _fit(points: list[tuple[float, float]], size: tuple[int, int], margin: int) -> list[tuple[float, float]]:
    """Scale and centre math-frame points (y up) into image pixels (y down), aspect kept."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    w, h = size
    scale = min((w - 2 * margin) / (max(xs) - min(xs)), (h - 2 * margin) / (max(ys) - min(ys)))
    ox = (w - scale * (max(xs) - min(xs))) / 2 - scale * min(xs)
    oy = (h - scale * (max(ys) - min(ys))) / 2 + scale * max(ys)
    return [(ox + scale * x, oy - scale * y) for x, y in points]


def _label(draw: ImageDraw.ImageDraw, at: tuple[float, float], text: str, font: ImageFont.ImageFont) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text((at[0] - (right - left) / 2, at[1] - (bottom - top) / 2 - top), text, fill=(0, 0, 0), font=font)


def _outward(vertex: tuple[float, float], centre: tuple[float, float], dist: float) -> tuple[float, float]:
    dx, dy = vertex[0] - centre[0], vertex[1] - centre[1]
    norm = math.hypot(dx, dy) or 1.0
    return vertex[0] + dist * dx / norm, vertex[1] + dist * dy / norm


def _toward(vertex: tuple[float, float], centre: tuple[float, float], dist: float) -> tuple[float, float]:
    return _outward(vertex, centre, -dist)


def _angle_figure(a: int, b: int, size: tuple[int, int]) -> Image.Image:
    """Triangle ABC with base AB, angles A = a and B = b (degrees) drawn to scale and marked."""
    c = 180 - a - b
    ac = math.sin(math.radians(b)) / math.sin(math.radians(c))  # law of sines with AB = 1
    pts = _fit([(0.0, 0.0), (1.0, 0.0), (ac * math.cos(math.radians(a)), ac * math.sin(math.radians(a)))], size, 18)
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.polygon(pts, outline=(0, 0, 0))
    centre = (sum(p[0] for p in pts) / 3, sum(p[1] for p in pts) / 3)
    r = 12
    ax, ay = pts[0]
    bx, by = pts[1]
    # PIL arcs run clockwise from the +x axis with y down: the interior angle at A spans [-a, 0], at B [180, 180+b].
    draw.arc([ax - r, ay - r, ax + r, ay + r], -a, 0, fill=(200, 30, 30))
    draw.arc([bx - r, by - r, bx + r, by + r], 180, 180 + b, fill=(200, 30, 30))
    for name, p in zip("ABC", pts):
        _label(draw, _outward(p, centre, 8), name, font)
    _label(draw, _toward(pts[0], centre, 22), f"{a}°", font)
    _label(draw, _toward(pts[1], centre, 22), f"{b}°", font)
    return img


def _right_figure(p: int, q: int, size: tuple[int, int]) -> Image.Image:
    """Right triangle with the right angle at C, legs CA = p (horizontal) and CB = q, lengths marked."""
    pts = _fit([(float(p), 0.0), (0.0, float(q)), (0.0, 0.0)], size, 18)  # A, B, C
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.polygon(pts, outline=(0, 0, 0))
    cx, cy = pts[2]
    draw.line([(cx + 7, cy), (cx + 7, cy - 7), (cx, cy - 7)], fill=(0, 0, 0))  # right-angle mark
    centre = (sum(x for x, _ in pts) / 3, sum(y for _, y in pts) / 3)
    for name, pt in zip("ABC", pts):
        _label(draw, _outward(pt, centre, 8), name, font)
    _label(draw, ((pts[0][0] + cx) / 2, cy + 8), str(p), font)
    _label(draw, (cx - 9, (pts[1][1] + cy) / 2), str(q), font)
    return img


def geometry_rows(n: int, seed: int = 0, size: tuple[int, int] = (168, 140),
                  kinds: Sequence[str] = GEOMETRY_KINDS) -> list[dict]:
    """Rendered triangles with a GeoQA-style question and a math_verify-checkable answer.

    kinds: "angle" -- two marked angles of a triangle, asks for the third (answer "70°");
           "hypotenuse" -- a right triangle with two marked legs from a Pythagorean triple, asks
           for the hypotenuse (answer "13").
    The question states the values, as GeoQA's do; the figure is drawn to scale and labelled.
    """
    unknown = sorted(set(kinds) - set(GEOMETRY_KINDS))
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {GEOMETRY_KINDS}, got {list(kinds)}")
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "angle":
            a = 5 * int(rng.integers(5, 21))  # 25..100 degrees
            b = 5 * int(rng.integers(5, (150 - a) // 5 + 1))  # leaves C >= 30 degrees
            image = _angle_figure(a, b, size)
            problem = (f"As shown in the figure, in triangle ABC, angle A = {a}° and angle B = {b}°. "
                       "What is the measure of angle C?")
            solution = f"{180 - a - b}°"
        else:
            legs = PYTHAGOREAN_TRIPLES[int(rng.integers(len(PYTHAGOREAN_TRIPLES)))]
            k = int(rng.integers(1, 30 // legs[2] + 1))
            p, q, hyp = (k * v for v in legs)
            if rng.integers(2):
                p, q = q, p
            image = _right_figure(p, q, size)
            problem = (f"As shown in the figure, in right triangle ABC, angle C = 90°, AC = {p} and BC = {q}. "
                       "What is the length of AB?")
            solution = str(hyp)
        rows.append({"id": f"geoqa/{seed}/{i}", "images": [image], "problem": problem, "solution": solution,
                     "task": "geoqa"})
    return rows


def write_jsonl_dataset(rows: Sequence[dict], out_dir: str, name: str) -> str:
    """Save ``rows`` as PNGs under ``out_dir/images/<name>/`` and a VLM-R1 JSONL ``out_dir/<name>.jsonl``.

    Each line is ``{"id", "image": path or [paths] relative to out_dir, "conversations": [human
    "<image>...question", gpt solution]}`` plus the rows' extra fields (which must be JSON values).
    Read it back with ``read_training_files([path], out_dir, task)``. Returns the JSONL path.
    """
    from paddlemix_r1.processing.image_processor import load_image

    image_dir = os.path.join(out_dir, "images", name)
    os.makedirs(image_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            relative = []
            for k, image in enumerate(row["images"]):
                rel = os.path.join("images", name, f"{i:06d}_{k}.png")
                load_image(image).save(os.path.join(out_dir, rel), format="PNG")
                relative.append(rel)
            solution = row["solution"]
            answer = solution if isinstance(solution, str) else json.dumps(solution)
            extras = {k: v for k, v in row.items() if k not in ("id", "images", "problem", "solution", "task")}
            record = {"id": str(row["id"]), "image": relative[0] if len(relative) == 1 else relative,
                      "conversations": [{"from": "human", "value": "<image>" * len(relative) + row["problem"]},
                                        {"from": "gpt", "value": answer}], **extras}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
