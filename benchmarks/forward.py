"""Forward + backward time of our Qwen2-VL / Qwen2.5-VL vs transformers (torch CPU), same weights,
same inputs, measured in one run. Prints a ratio ours / transformers (target <= 1.0).

    python benchmarks/forward.py [--family qwen2_vl] [--hidden 512] [--layers 4] [--vision_depth 4]

Both frameworks get the same thread count (the machine's cores) and Paddle gets
MKL_DEBUG_CPU_TYPE=5 on AMD CPUs (set by paddlemix_r1.configure_runtime(); see DESIGN.md §6). Each side runs in its own
subprocess so the two runtimes do not share thread pools.
"""

from __future__ import annotations

import argparse
import os
import sys

from _harness import (
    add_model_flags,
    cpu_header,
    dispatch_side,
    hf_model_class,
    image_prompt,
    paddle_side_setup,
    run_sides,
    timed,
    token_ids,
)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def inputs(args) -> dict:
    return image_prompt(args, 20, args.text)


def run_torch(args, ckpt: str) -> float:
    import torch

    torch.set_num_threads(args.threads)
    model = hf_model_class(args.family).from_pretrained(ckpt, dtype=torch.float32).train()
    batch = {k: torch.from_numpy(v) for k, v in inputs(args).items()}
    batch["mm_token_type_ids"] = (batch["input_ids"] == token_ids(args.vocab)["image_token_id"]).int()

    def step():
        model.zero_grad(set_to_none=True)
        model(**batch).logits.float().mean().backward()

    return timed(step, args.iters, warmup=2)


def run_paddle(args, ckpt: str) -> float:
    paddle_side_setup(REPO)
    import paddle

    from paddlemix_r1.models import from_pretrained

    model = from_pretrained(ckpt)
    model.train()
    batch = {k: paddle.to_tensor(v) for k, v in inputs(args).items()}

    def step():
        model.clear_gradients(set_to_zero=False)
        model(**batch).logits.mean().backward()

    return timed(step, args.iters, warmup=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_flags(p)
    p.add_argument("--text", type=int, default=64)
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args()
    if dispatch_side(args, run_torch, run_paddle):
        return
    print(cpu_header(args.threads))
    results = run_sides(__file__, sys.argv[1:], args.threads, args.rounds)
    print(f"config: {args.family} hidden {args.hidden} x {args.layers} layers, vision {args.vision_dim} x "
          f"{args.vision_depth}, image {args.image}x{args.image}, {args.threads} threads")
    print(f"transformers (torch CPU) fwd+bwd: {results['torch'] * 1000:.1f} ms")
    print(f"paddlemix_r1 (paddle CPU) fwd+bwd: {results['paddle'] * 1000:.1f} ms")
    print(f"per round (ms): transformers {[round(x * 1000) for x in results['torch_runs']]}, "
          f"paddlemix_r1 {[round(x * 1000) for x in results['paddle_runs']]}")
    print(f"ratio ours/transformers (medians over {args.rounds} rounds): {results['paddle'] / results['torch']:.2f}x "
          "(target <= 1.0)")


if __name__ == "__main__":
    main()
