"""Test helpers: random images, and transformers' Qwen2-VL processors built offline from a checkpoint dir."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


def random_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    return Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8), mode=mode)


def reference_image_processor(config: dict):
    """transformers' Qwen2VLImageProcessorPil configured from a parsed preprocessor_config.json."""
    pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    kwargs = {k: v for k, v in config.items() if k not in ("image_processor_type", "processor_class")}
    return Qwen2VLImageProcessorPil(**kwargs)


def reference_processor(path, family: str = "qwen2_vl"):
    """transformers' Qwen2VLProcessor / Qwen2_5_VLProcessor built offline from a checkpoint dir.

    Without torchvision transformers 5 cannot build the video processor these classes require,
    so a subclass drops that argument; image and text handling are the library's own.
    """
    transformers = pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    base = transformers.Qwen2VLProcessor if family == "qwen2_vl" else transformers.Qwen2_5_VLProcessor

    class ImageOnlyProcessor(base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(
                image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs
            )

    with open(path / "preprocessor_config.json") as f:
        image_processor = reference_image_processor(json.load(f))
    with open(path / "chat_template.json") as f:
        chat_template = json.load(f)["chat_template"]
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return ImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)
