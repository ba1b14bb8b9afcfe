"""Forward + backward time of our Qwen2-VL / Qwen2.5-VL vs transformers (torch CPU), same weights,
same inputs, measured in one run. Prints a ratio ours / transformers (target <= 1.0).

    python benchmarks/forward.py [--family qwen2_vl] [--hidden 512] [--layers 4] [--vision_depth 4]

Both frameworks get the same thread count (the machine's cores) and Paddle gets
MKL_DEBUG_CPU_TYPE=5 (set by paddlemix_r1 on import; see DESIGN.md §6). Each side runs in its own
subprocess so the two runtimes do not share thread pools.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def make_checkpoint(args, out_dir: str) -> None:
    import torch
    import transformers

    head_dim = args.hidden // args.heads
    q = head_dim // 2
    section = [q - 2 * (3 * q // 8), 3 * q // 8, 3 * q // 8]
    text = dict(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4,
                num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=max(1, args.heads // 4),
                rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 1e6})
    vd = args.vision_dim
    if args.family == "qwen2_vl":
        cfg = transformers.Qwen2VLConfig(text_config=text, vision_config=dict(
            depth=args.vision_depth, embed_dim=vd, hidden_size=args.hidden, num_heads=vd // 64, mlp_ratio=4),
            image_token_id=args.vocab - 1, video_token_id=args.vocab - 2)
        model = transformers.Qwen2VLForConditionalGeneration(cfg)
    else:
        cfg = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=dict(
            depth=args.vision_depth, hidden_size=vd, out_hidden_size=args.hidden, intermediate_size=vd * 2,
            num_heads=vd // 64, fullatt_block_indexes=[args.vision_depth - 1], window_size=112),
            image_token_id=args.vocab - 1, video_token_id=args.vocab - 2)
        model = transformers.Qwen2_5_VLForConditionalGeneration(cfg)
    torch.manual_seed(0)
    model.save_pretrained(out_dir)


def inputs(args):
    import numpy as np

    rng = np.random.default_rng(0)
    grid = args.image // 14
    n_img_tokens = grid * grid // 4
    ids = list(rng.integers(0, args.vocab - 10, 20)) + [args.vocab - 1] * n_img_tokens + list(rng.integers(0, args.vocab - 10, args.text))
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
    model = cls.from_pretrained(ckpt, dtype=torch.float32).train()
    batch = {k: torch.from_numpy(v) for k, v in inputs(args).items()}
    batch["mm_token_type_ids"] = (batch["input_ids"] == args.vocab - 1).int()

    def step():
        model.zero_grad(set_to_none=True)
        model(**batch).logits.float().mean().backward()

    return timed(step, args.iters)


def run_paddle(args, ckpt: str) -> float:
    sys.path.insert(0, REPO)
    import paddle

    import paddlemix_r1  # noqa: F401  (CPU runtime defaults)
    from paddlemix_r1.models import from_pretrained

    model = from_pretrained(ckpt)
    model.train()
    batch = {k: paddle.to_tensor(v) for k, v in inputs(args).items()}

    def step():
        model.clear_gradients(set_to_zero=False)
        model(**batch).logits.mean().backward()

    return timed(step, args.iters)


def timed(step, iters: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]  # median


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="qwen2_vl", choices=["qwen2_vl", "qwen2_5_vl"])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vision_depth", type=int, default=4)
    p.add_argument("--vision_dim", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--image", type=int, default=448)
    p.add_argument("--text", type=int, default=64)
    p.add_argument("--iters", type=int, default=5)
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
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", "make", "--ckpt", ckpt], check=True, env=env,
                       capture_output=True)
        results = {}
        for side in ("torch", "paddle"):
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side, "--ckpt", ckpt],
                                 check=True, env=env, capture_output=True, text=True)
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    print(f"config: {args.family} hidden {args.hidden} x {args.layers} layers, vision {args.vision_dim} x "
          f"{args.vision_depth}, image {args.image}x{args.image}, {args.threads} threads")
    print(f"transformers (torch CPU) fwd+bwd: {results['torch'] * 1000:.1f} ms")
    print(f"paddlemix_r1 (paddle CPU) fwd+bwd: {results['paddle'] * 1000:.1f} ms")
    print(f"ratio ours/transformers: {results['paddle'] / results['torch']:.2f}x (target <= 1.0)")


if __name__ == "__main__":
    main()
