"""Fixtures: tiny processor checkpoints built once per session in a tmp dir."""

from __future__ import annotations

import pytest

from paddlemix_r1.processing.tiny import build_tiny_tokenizer

TEST_MIN_PIXELS = 56 * 56
TEST_MAX_PIXELS = 28 * 28 * 64


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(dir, ids) of a tiny Qwen2-VL processor checkpoint with small pixel limits."""
    path = tmp_path_factory.mktemp("tiny_qwen2_vl")
    ids = build_tiny_tokenizer(path, min_pixels=TEST_MIN_PIXELS, max_pixels=TEST_MAX_PIXELS)
    return path, ids


@pytest.fixture(scope="session")
def tiny_checkpoint_25(tmp_path_factory):
    """(dir, ids) of the same tiny checkpoint labelled as a Qwen2.5-VL processor."""
    path = tmp_path_factory.mktemp("tiny_qwen2_5_vl")
    ids = build_tiny_tokenizer(
        path, min_pixels=TEST_MIN_PIXELS, max_pixels=TEST_MAX_PIXELS, processor_class="Qwen2_5_VLProcessor"
    )
    return path, ids
