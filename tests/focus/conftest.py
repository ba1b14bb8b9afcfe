"""A tiny Qwen2.5-VL and Visual-CoT-style pictures for the focus tests."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw


@pytest.fixture(scope="session")
def tiny_focus_model(tmp_path_factory):
    """(model, processor, path): a tiny random checkpoint that sees every image at 56 x 56."""
    from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained
    from paddlemix_r1.processing import Processor

    path = str(tmp_path_factory.mktemp("focus") / "tiny")
    build_tiny_checkpoint(path, family="qwen2_5_vl", seed=0, max_pixels=56 * 56)
    return from_pretrained(path), Processor.from_pretrained(path), path


@pytest.fixture
def viscot_file(tmp_path):
    """Six Visual-CoT rows on non-square pictures (pixel box after ###, padded-square gpt box)."""
    rows = []
    for i in range(6):
        w, h = (300, 200) if i % 2 else (180, 240)
        img = Image.new("RGB", (w, h), (255, 255, 255))
        ImageDraw.Draw(img).rectangle([20 + i, 30, 90, 110], fill=(200, 30, 30))
        name = f"img{i}.png"
        img.save(tmp_path / name)
        rows.append({
            "question_id": f"q{i}",
            "image": [name, f"{name}###[{20 + i}, 30, 91, 111]"],
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is the square? Please provide the bounding box "
                                           "coordinate of the region that can help you answer the question better."},
                {"from": "gpt", "value": "[0.100, 0.200, 0.300, 0.400]"},
                {"from": "human", "value": "<image>"},
                {"from": "gpt", "value": "red"},
            ],
            "dataset": "synthetic",
        })
    path = tmp_path / "viscot.json"
    path.write_text(json.dumps(rows))
    return str(path), str(tmp_path)
