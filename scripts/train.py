#!/usr/bin/env python
"""GRPO training entry for ``paddle.distributed.launch`` (one process per device), also usable alone.

    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 scripts/train.py \\
        --config configs/rec_qwen2_5_vl_3b.yaml model_name_or_path=/path/to/Qwen2.5-VL-3B-Instruct

Same arguments as ``paddlemix-r1 train``. The run is wrapped in ``run_guarded``: an error on any
rank is reported to the other ranks (which stop at their next sync point with that error) and the
process exits non-zero at once, so the launcher ends the whole job (docs/distributed.md).
"""

from __future__ import annotations

import os
import sys

# Runnable as a file path (the launcher's usual form) from a source checkout without installation.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddlemix_r1.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
