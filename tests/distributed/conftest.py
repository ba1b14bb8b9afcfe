"""The distributed tests' helpers (launching.py) made importable; their tiny checkpoint is ``tiny_ckpt`` of
tests/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

