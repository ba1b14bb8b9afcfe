"""Shared pieces of the side-by-side benchmarks: a tiny transformers checkpoint both sides load,
model-size flags, a timer, and the subprocess orchestration (each side in its own process, the
same thread count, torch never imported next to Paddle)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

IMAGE_TOKEN_OFFSET = 1  # image token = vocab - 1, video = vocab - 2, vision start/end = vocab - 3 / - 4


def add_model_flags(p: argparse.ArgumentParser, **defaults) -> None:
    """Model-size flags shared by the benchmarks, plus the hidden --side/--ckpt of the orchestration."""
    d = dict(family="qwen2_vl", hidden=512, heads=8, kv_heads=2, layers=4, vision_depth=4, vision_dim=256,
             vocab=8192, image=448, threads=len(os.sched_getaffinity(0)))
    d.update(defaults)
    p.add_argument("--family", default=d["family"], choices=["qwen2_vl", "qwen2_5_vl"])
    for name in ("hidden", "heads", "kv_heads", "layers", "vision_depth", "vision_dim", "vocab", "image", "threads"):
        p.add_argument(f"--{name}", type=int, default=d[name])
    p.add_argument("--rounds", type=int, default=3,
                   help="fresh processes per side, alternating torch / paddle; each side reports its median")
    p.add_argument("--side", choices=["make", "torch", "paddle"], help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)


def token_ids(vocab: int) -> dict[str, int]:
    return {"image_token_id": vocab - 1, "video_token_id": vocab - 2, "vision_start_token_id": vocab - 3,
            "vision_end_token_id": vocab - 4}


def image_prompt(args: argparse.Namespace, text_before: int, text_after: int) -> dict:
    """One prompt with one ``args.image`` x ``args.image`` random image: numpy arrays of a model batch."""
    import numpy as np

    rng = np.random.default_rng(0)
    grid = args.image // 14
    t = token_ids(args.vocab)
    ids = ([*rng.integers(5, args.vocab - 10, text_before), t["vision_start_token_id"]]
           + [t["image_token_id"]] * (grid * grid // 4)
           + [t["vision_end_token_id"], *rng.integers(5, args.vocab - 10, text_after)])
    return {
        "input_ids": np.array([ids], np.int64),
        "attention_mask": np.ones((1, len(ids)), np.int64),
        "pixel_values": rng.standard_normal((grid * grid, 1176)).astype("float32"),
        "image_grid_thw": np.array([[1, grid, grid]], np.int64),
    }


def make_hf_checkpoint(args: argparse.Namespace, out_dir: str) -> None:
    """A random transformers model of either family, saved with save_pretrained (run in the torch side)."""
    import torch
    import transformers

    q = args.hidden // args.heads // 2  # head_dim / 2 frequencies split over (t, h, w)
    section = [q - 2 * (3 * q // 8), 3 * q // 8, 3 * q // 8]
    text = dict(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4,
                num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 1e6})
    vd = args.vision_dim
    if args.family == "qwen2_vl":
        vision = dict(depth=args.vision_depth, embed_dim=vd, hidden_size=args.hidden, num_heads=vd // 64, mlp_ratio=4)
        cls_cfg, cls_model = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
    else:
        vision = dict(depth=args.vision_depth, hidden_size=vd, out_hidden_size=args.hidden, intermediate_size=vd * 2,
                      num_heads=vd // 64, fullatt_block_indexes=[args.vision_depth - 1], window_size=112)
        cls_cfg, cls_model = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(0)
    cls_model(cls_cfg(text_config=text, vision_config=vision, **token_ids(args.vocab))).save_pretrained(out_dir)


def hf_model_class(family: str):
    import transformers

    if family == "qwen2_vl":
        return transformers.Qwen2VLForConditionalGeneration
    return transformers.Qwen2_5_VLForConditionalGeneration


def timed(fn: Callable[[], object], iters: int, warmup: int = 1) -> float:
    """Median seconds of ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def dispatch_side(args: argparse.Namespace, run_torch: Callable, run_paddle: Callable) -> bool:
    """In a side subprocess: do that side's work, print its JSON result, return True."""
    if args.side == "make":
        make_hf_checkpoint(args, args.ckpt)
        return True
    if args.side:
        fn = run_torch if args.side == "torch" else run_paddle
        print(json.dumps({"seconds": fn(args, args.ckpt)}))
        return True
    return False


def cpu_header(threads: int) -> str:
    """The line every benchmark prints first: CPU model, vendor, cores and ISA (``paddlemix_r1.doctor.cpu_info``,
    what ``paddlemix-r1 doctor`` reports), the Paddle version and the threads used. A speed figure is only
    meaningful with the CPU it was measured on (AVX2 AMD EPYC and AVX-512/AMX Intel Xeon differ)."""
    from importlib.metadata import PackageNotFoundError, version

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
    from paddlemix_r1.doctor import cpu_info

    cpu = cpu_info()
    isa = (["AVX2"] if cpu["avx2"] else []) + (["AVX-512"] if cpu["avx512"] else []) + (["AMX"] if cpu["amx"] else [])
    paddle_version = "not installed"
    for dist in ("paddlepaddle", "paddlepaddle-gpu"):
        try:
            paddle_version = version(dist)
            break
        except PackageNotFoundError:
            continue
    return (f"CPU: {cpu['model']} ({cpu['vendor']}, {cpu['cores']} cores, ISA {'/'.join(isa) or 'baseline x86-64'}); "
            f"paddle {paddle_version}, {threads} threads")


def run_sides(script: str, argv: list[str], threads: int, rounds: int = 3) -> dict[str, float]:
    """Build the checkpoint, then time the torch side and the paddle side, each in a fresh process,
    ``rounds`` times in alternation (torch, paddle, torch, ...) so that a slow spell of a shared host
    hits both sides alike; returns each side's median over the rounds (and the per-round lists)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    runs: dict[str, list[float]] = {"torch": [], "paddle": []}
    with tempfile.TemporaryDirectory() as ckpt:
        subprocess.run([sys.executable, script, *argv, "--side", "make", "--ckpt", ckpt], check=True, env=env,
                       capture_output=True)
        for _ in range(max(1, rounds)):
            for side in ("torch", "paddle"):
                out = subprocess.run([sys.executable, script, *argv, "--side", side, "--ckpt", ckpt], check=True,
                                     env=env, capture_output=True, text=True)
                runs[side].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    results = {side: sorted(v)[len(v) // 2] for side, v in runs.items()}
    results.update({f"{side}_runs": v for side, v in runs.items()})
    return results


def paddle_side_setup(repo: str) -> None:
    """Import the library from this checkout and apply its CPU runtime settings (before paddle is imported)."""
    sys.path.insert(0, repo)
    import paddlemix_r1

    paddlemix_r1.configure_runtime()
