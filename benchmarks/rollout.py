"""Rollout throughput: our engine (vision + prefill once per prompt, G rows decoded from a shared
cache) vs transformers' generate on the prompt repeated G times (TRL's way), same weights, one run.

    python benchmarks/rollout.py [--family qwen2_5_vl] [--G 8] [--new_tokens 64]

Every row decodes exactly ``new_tokens`` tokens on both sides (no eos), so tokens/s compare like
for like. Each side runs in its own subprocess with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
IMAGE_TOKEN = 4000


def make_checkpoint(args, out_dir: str) -> None:
    import torch
    import transformers

    head_dim = args.hidden // args.heads
    q = head_dim // 2
    section = [q - 2 * (3 * q // 8), 3 * q // 8, 3 * q // 8]
    text = dict(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4,
                num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=max(1, args.heads // 2),
                rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 1e6})
    vd = args.vision_dim
    common = dict(image_token_id=IMAGE_TOKEN, video_token_id=IMAGE_TOKEN + 1, vision_start_token_id=IMAGE_TOKEN + 2,
                  vision_end_token_id=IMAGE_TOKEN + 3)
    if args.family == "qwen2_vl":
        cfg = transformers.Qwen2VLConfig(text_config=text, vision_config=dict(
            depth=args.vision_depth, embed_dim=vd, hidden_size=args.hidden, num_heads=vd // 64, mlp_ratio=4), **common)
        model = transformers.Qwen2VLForConditionalGeneration(cfg)
    else:
        cfg = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=dict(
            depth=args.vision_depth, hidden_size=vd, out_hidden_size=args.hidden, intermediate_size=vd * 2,
            num_heads=vd // 64, fullatt_block_indexes=[args.vision_depth - 1], window_size=112), **common)
        model = transformers.Qwen2_5_VLForConditionalGeneration(cfg)
    torch.manual_seed(0)
    model.save_pretrained(out_dir)


def inputs(args) -> dict:
    rng = np.random.default_rng(0)
    grid = args.image // 14
    ids = ([1, 2, 3, IMAGE_TOKEN + 2] + [IMAGE_TOKEN] * (grid * grid // 4) + [IMAGE_TOKEN + 3]
           + list(rng.integers(5, 3000, 24)))
    return {
        "input_ids": np.array([ids], np.int64),
        "attention_mask": np.ones((1, len(ids)), np.int64),
        "pixel_values": rng.standard_normal((grid * grid, 1176)).astype("float32"),
        "image_grid_thw": np.array([[1, grid, grid]], np.int64),
    }


def run_torch(args, ckpt: str) -> float:
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    cls = transformers.Qwen2VLForConditionalGeneration if args.family == "qwen2_vl" else transformers.Qwen2_5_VLForConditionalGeneration
    model = cls.from_pretrained(ckpt, dtype=torch.float32).eval()
    one = inputs(args)
    batch = {k: torch.from_numpy(np.concatenate([v] * args.G, axis=0)) for k, v in one.items()}  # prompt x G
    batch["mm_token_type_ids"] = (batch["input_ids"] == IMAGE_TOKEN).int()

    def run():
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)
        assert out.shape[1] - batch["input_ids"].shape[1] == args.new_tokens

    return timed(run, args.iters)


def run_paddle(args, ckpt: str) -> float:
    sys.path.insert(0, REPO)
    import paddle

    import paddlemix_r1  # noqa: F401  (CPU runtime defaults)
    from paddlemix_r1.generation import generate
    from paddlemix_r1.models import from_pretrained

    model = from_pretrained(ckpt)
    batch = {k: paddle.to_tensor(v) for k, v in inputs(args).items()}

    def run():
        out = generate(model, batch, max_new_tokens=args.new_tokens, do_sample=True, temperature=1.0,
                       num_return_sequences=args.G, pad_token_id=0, eos_token_id=None, seed=0)
        assert out.completion_ids.shape == [args.G, args.new_tokens]

    return timed(run, args.iters)


def timed(fn, iters: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_vl", "qwen2_5_vl"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vision_depth", type=int, default=4)
    p.add_argument("--vision_dim", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--image", type=int, default=448)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--side", choices=["make", "torch", "paddle"], help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side == "make":
        make_checkpoint(args, args.ckpt)
        return
    if args.side:
        fn = run_torch if args.side == "torch" else run_paddle
        print(json.dumps({"seconds": fn(args, args.ckpt)}))
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as ckpt:
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", "make", "--ckpt", ckpt], check=True,
                       env=env, capture_output=True)
        res = {}
        for side in ("torch", "paddle"):
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side, "--ckpt", ckpt],
                                 check=True, env=env, capture_output=True, text=True)
            res[side] = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    n_tok = args.G * args.new_tokens
    print(f"config: {args.family} hidden {args.hidden} x {args.layers} layers, vision {args.vision_dim} x "
          f"{args.vision_depth}, image {args.image}x{args.image}, G={args.G}, {args.new_tokens} new tokens, "
          f"{args.threads} threads")
    print(f"transformers generate, prompt x G: {res['torch']:.2f} s  {n_tok / res['torch']:.1f} tokens/s")
    print(f"paddlemix_r1 generate, shared prefix: {res['paddle']:.2f} s  {n_tok / res['paddle']:.1f} tokens/s")
    print(f"speed-up ours vs transformers: {res['torch'] / res['paddle']:.2f}x (target >= 3)")


if __name__ == "__main__":
    main()
