#!/usr/bin/env python
"""GRPO training entry for ``paddle.distributed.launch`` (one process per device), also usable alone.

    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 scripts/train.py \\
        --config configs/rec_qwen2_5_vl_3b.yaml model_name_or_path=/path/to/Qwen2.5-VL-3B-Instruct

Same arguments as ``paddlemix-r1 train``. The run is wrapped in ``run_guarded``: an error on any
rank is reported to the other ranks (which stop at their next sync point with that error) and the
process exits non-zero at once, so the launcher ends the whole job (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import os
import sys

# Runnable as a file path (the launcher's usual form) from a source checkout without installation.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddlemix_r1.distributed import get_env, run_guarded


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="GRPO training (paddlemix_r1), one process per device")
    p.add_argument("--config", help="YAML file with GRPOConfig fields (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learning_rate=1e-6 max_steps=100")
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> int:
    from paddlemix_r1.grpo.config import GRPOConfig
    from paddlemix_r1.grpo.trainer import GRPOTrainer

    cfg = GRPOConfig.load(args.config, args.overrides)
    history = GRPOTrainer(cfg).train()
    env = get_env()
    if env.is_main and history:
        last = history[-1]
        print(f"done: step {int(last['step'])} on {env.world_size} rank(s), reward {last['reward']:.4f}, "
              f"checkpoints in {cfg.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_guarded(lambda: train(args))


if __name__ == "__main__":
    raise SystemExit(main())
