"""Rollout throughput: our engine (vision + prefill once per prompt, G rows decoded from a shared
cache) vs transformers' generate on the prompt repeated G times (TRL's way), same weights, one run.

    python benchmarks/rollout.py [--family qwen2_5_vl] [--G 8] [--new_tokens 64]

Every row decodes exactly ``new_tokens`` tokens on both sides (no eos), so tokens/s compare like
for like. Each side runs in its own subprocess with the same thread count.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
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
    return image_prompt(args, 3, 24)


def run_torch(args, ckpt: str) -> float:
    import torch

    torch.set_num_threads(args.threads)
    model = hf_model_class(args.family).from_pretrained(ckpt, dtype=torch.float32).eval()
    one = inputs(args)
    batch = {k: torch.from_numpy(np.concatenate([v] * args.G, axis=0)) for k, v in one.items()}  # prompt x G
    batch["mm_token_type_ids"] = (batch["input_ids"] == token_ids(args.vocab)["image_token_id"]).int()

    def run():
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)
        assert out.shape[1] - batch["input_ids"].shape[1] == args.new_tokens

    return timed(run, args.iters)


def run_paddle(args, ckpt: str) -> float:
    paddle_side_setup(REPO)
    import paddle

    from paddlemix_r1.generation import generate
    from paddlemix_r1.models import from_pretrained

    model = from_pretrained(ckpt)
    batch = {k: paddle.to_tensor(v) for k, v in inputs(args).items()}

    def run():
        out = generate(model, batch, max_new_tokens=args.new_tokens, do_sample=True, temperature=1.0,
                       num_return_sequences=args.G, pad_token_id=0, eos_token_id=None, seed=0)
        assert out.completion_ids.shape == [args.G, args.new_tokens]

    return timed(run, args.iters)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_flags(p, family="qwen2_5_vl", hidden=256, heads=4, kv_heads=2)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--iters", type=int, default=3)
    args = p.parse_args()
    if dispatch_side(args, run_torch, run_paddle):
        return
    print(cpu_header(args.threads))
    res = run_sides(__file__, sys.argv[1:], args.threads, args.rounds)
    n_tok = args.G * args.new_tokens
    print(f"config: {args.family} hidden {args.hidden} x {args.layers} layers, vision {args.vision_dim} x "
          f"{args.vision_depth}, image {args.image}x{args.image}, G={args.G}, {args.new_tokens} new tokens, "
          f"{args.threads} threads")
    print(f"transformers generate, prompt x G: {res['torch']:.2f} s  {n_tok / res['torch']:.1f} tokens/s")
    print(f"paddlemix_r1 generate, shared prefix: {res['paddle']:.2f} s  {n_tok / res['paddle']:.1f} tokens/s")
    print(f"per round (s): transformers {[round(x, 2) for x in res['torch_runs']]}, "
          f"paddlemix_r1 {[round(x, 2) for x in res['paddle_runs']]}")
    print(f"speed-up ours vs transformers (medians over {args.rounds} rounds): {res['torch'] / res['paddle']:.2f}x "
          "(target >= 3)")


if __name__ == "__main__":
    main()
