"""Fixtures of the distributed tests (helpers in launching.py, made importable here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    from paddlemix_r1.models import build_tiny_checkpoint

    return build_tiny_checkpoint(str(tmp_path_factory.mktemp("dist_tiny")), family="qwen2_5_vl", seed=1)
