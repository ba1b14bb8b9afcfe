#!/usr/bin/env python
"""Curriculum GRPO entry for ``paddle.distributed.launch`` (one process per device), also usable alone.

    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 scripts/curriculum.py \\
        --config configs/curr_reft_qwen2_5_vl_3b.yaml model_name_or_path=/path/to/Qwen2.5-VL-3B-Instruct

Same arguments as ``paddlemix-r1 curriculum``; every rank runs the same stage loop (grpo/curriculum.py)
inside ``run_guarded``, as scripts/train.py does for one GRPO run. Rerun the same command to resume.
"""

from __future__ import annotations

import os
import sys

# Runnable as a file path (the launcher's usual form) from a source checkout without installation.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddlemix_r1.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["curriculum", *sys.argv[1:]]))
