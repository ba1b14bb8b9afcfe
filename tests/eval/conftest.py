"""Tiny evaluation sets written into tmp_path: images with PIL, REC json, counting / GeoQA jsonl."""

import json

import pytest
from PIL import Image


def write_image(path, size, color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture
def rec_set(tmp_path):
    """Four REC rows: three good images of different sizes, one broken file, plus one missing image."""
    root = tmp_path / "images"
    write_image(root / "a.jpg", (640, 480))
    write_image(root / "b.png", (1000, 500))
    write_image(root / "sub" / "c.png", (300, 200))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    rows = [
        {"image": "a.jpg", "problem": "the red car", "normal_caption": "red car", "solution": [100, 100, 300, 200]},
        {"image": "b.png", "problem": "the dog", "normal_caption": "dog", "solution": [100, 100, 300, 200]},
        {"image": "sub/c.png", "problem": "a cup", "normal_caption": "cup", "solution": [30, 40, 150, 160]},
        {"image": "broken.jpg", "problem": "the cat", "normal_caption": "cat", "solution": [0, 0, 10, 10]},
        {"image": "missing.jpg", "problem": "the bird", "normal_caption": "bird", "solution": [0, 0, 10, 10]},
    ]
    data = tmp_path / "data"
    data.mkdir()
    (data / "tiny_rec.json").write_text(json.dumps(rows, indent=2))
    return data / "tiny_rec.json", root


@pytest.fixture
def counting_set(tmp_path):
    root = tmp_path / "clevr"
    lines = []
    for i, gt in enumerate([3, 5, 7]):
        write_image(root / "images" / f"{i}.png", (64, 48))
        lines.append(json.dumps({"image_path": f"./images/{i}.png", "question": "How many items?", "ground_truth": gt}))
    path = tmp_path / "superclevr_tiny.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, root


@pytest.fixture
def geoqa_set(tmp_path):
    root = tmp_path / "geo"
    gts = ["140°", "2√{3}", "\\frac{4}{3}cm"]
    lines = []
    for i, gt in enumerate(gts):
        write_image(root / f"{i}.png", (100, 80))
        lines.append(json.dumps({"image_path": f"./{i}.png", "question": f"Question {i}?", "ground_truth": gt}))
    path = tmp_path / "geoqa_tiny.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, root
