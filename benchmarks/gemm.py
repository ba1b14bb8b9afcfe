"""GFLOP/s of each CPU GEMM library for the shape classes of our steps, against torch, in one run.

    python benchmarks/gemm.py [--threads N] [--reps 7] [--hidden 1536 --intermediate 8960] [--quick]

Libraries (paddlemix_r1/ops/gemm.py): ``mkl`` = ``paddle.matmul`` (Paddle's bundled MKL-ML) and ``onednn`` =
``dnnl_sgemm`` of Paddle's bundled oneDNN; ``torch`` = ``torch.matmul`` in its own subprocess (its own MKL /
oneDNN build), the peer. Shapes follow a decoder of ``--hidden`` / ``--intermediate`` (default: Qwen2-VL-2B's
1536 / 8960) and a vision tower of 1280 with 16 heads of 80:

- rows<=64: a decode step of B*G = 16 rows (qkv, gate+up, down, LM head over the full 151936 vocabulary);
- wide_out: the log-prob pass's LM head over a chunk of 128 rows;
- large: prefill / training over 1024 tokens (qkv, gate+up, down), the backward's dX = dY W^T (NT) and
  dW = X^T dY (TN), and the vision attention's per-head products (QK^T, PV).

Within the Paddle process the two libraries alternate call by call (median of ``--reps`` calls each), so a
slow spell of a shared host hits both alike. The last lines give each class's onednn / mkl ratio (geometric
mean) and the machine's peak: the best rate any library reached on a 2048^3 product.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def shapes(hidden: int, inter: int, quick: bool) -> list[tuple[str, str, int, int, int, str]]:
    """(class, name, m, k, n, layout): C (m, n) = op(A) (m, k) @ op(B) (k, n); layout NN / NT / TN."""
    vocab, rows, tokens, vis, heads_dim, vis_tokens = 151936, 16, 1024, 1280, 80, 1024
    qkv = hidden + 2 * (hidden // 6)  # Qwen2-VL-2B: 12 heads, 2 kv heads of 128
    out = [
        ("rows<=64", "decode qkv", rows, hidden, qkv, "NN"),
        ("rows<=64", "decode gate+up", rows, hidden, 2 * inter, "NN"),
        ("rows<=64", "decode down", rows, inter, hidden, "NN"),
        ("rows<=64", "decode lm_head", rows, hidden, vocab, "NN"),
        ("wide_out", "logprob lm_head chunk", 128, hidden, vocab, "NT"),
        ("large", "train qkv", tokens, hidden, qkv, "NN"),
        ("large", "train gate+up", tokens, hidden, 2 * inter, "NN"),
        ("large", "train down", tokens, inter, hidden, "NN"),
        ("large", "train dX gate+up", tokens, 2 * inter, hidden, "NT"),
        ("large", "train dW gate+up", hidden, tokens, 2 * inter, "TN"),
        ("large", "vision qkv", vis_tokens, vis, 3 * vis, "NN"),
        ("large", "vision QK^T per head", vis_tokens, heads_dim, vis_tokens, "NT"),
        ("large", "vision PV per head", vis_tokens, vis_tokens, heads_dim, "NN"),
        ("peak", "2048^3", 2048, 2048, 2048, "NN"),
    ]
    if quick:  # a smoke run: small sizes, same code paths
        out = [(c, n, min(m, 64 if c == "rows<=64" else 256), min(k, 256), min(nn, 512), lay)
               for c, n, m, k, nn, lay in out]
    return out


def operands(m: int, k: int, n: int, layout: str) -> tuple[tuple[int, int], tuple[int, int], bool, bool]:
    ta, tb = layout[0] == "T", layout[1] == "T"
    return ((k, m) if ta else (m, k)), ((n, k) if tb else (k, n)), ta, tb


def run_paddle(args) -> dict:
    sys.path.insert(0, REPO)
    import paddlemix_r1

    paddlemix_r1.configure_runtime()
    import numpy as np
    import paddle

    from paddlemix_r1.ops import gemm

    out = {"status": gemm.status(), "rates": {}}
    for cls, name, m, k, n, layout in shapes(args.hidden, args.intermediate, args.quick):
        sa, sb, ta, tb = operands(m, k, n, layout)
        rng = np.random.default_rng(0)
        a = paddle.to_tensor(rng.standard_normal(sa, dtype=np.float32))
        b = paddle.to_tensor(rng.standard_normal(sb, dtype=np.float32))
        fns = {"mkl": lambda: paddle.matmul(a, b, transpose_x=ta, transpose_y=tb)}
        if gemm.available():
            fns["onednn"] = lambda: gemm.onednn_matmul(a, b, ta, tb)
            err = float((fns["onednn"]() - fns["mkl"]()).abs().max())
            scale = float(fns["mkl"]().abs().max())
            if err > 1e-4 * max(scale, 1.0):
                raise SystemExit(f"{name}: onednn differs from paddle.matmul by {err} (scale {scale})")
        times: dict[str, list[float]] = {lib: [] for lib in fns}
        for _ in range(2):  # warm-up
            for fn in fns.values():
                fn()
        for _ in range(args.reps):
            for lib, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[lib].append(time.perf_counter() - t)
        flops = 2.0 * m * n * k
        out["rates"][name] = {lib: flops / sorted(v)[len(v) // 2] / 1e9 for lib, v in times.items()}
    return out


def run_torch(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    out = {"rates": {}}
    for _cls, name, m, k, n, layout in shapes(args.hidden, args.intermediate, args.quick):
        sa, sb, ta, tb = operands(m, k, n, layout)
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(sa, generator=g), torch.randn(sb, generator=g)

        def fn(a=a, b=b, ta=ta, tb=tb):
            return torch.matmul(a.t() if ta else a, b.t() if tb else b)

        for _ in range(2):
            fn()
        ts = []
        for _ in range(args.reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out["rates"][name] = {"torch": 2.0 * m * n * k / sorted(ts)[len(ts) // 2] / 1e9}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--intermediate", type=int, default=8960)
    p.add_argument("--quick", action="store_true", help="small shapes (a smoke run of the script)")
    p.add_argument("--side", choices=["paddle", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        print(json.dumps(run_paddle(args) if args.side == "paddle" else run_torch(args)))
        return

    from _harness import cpu_header

    print(cpu_header(args.threads))
    env = dict(os.environ, MKL_NUM_THREADS=str(args.threads))
    env.pop("OMP_NUM_THREADS", None)  # the Paddle side sizes its OpenMP pool through configure_runtime, as users do
    res = {}
    for side in ("paddle", "torch"):
        run = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side], env=env, check=False,
                             capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"{side} side failed:\n{run.stderr[-3000:]}")
        res[side] = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"oneDNN: {res['paddle']['status']}")
    libs = ["mkl", "onednn", "torch"]
    print(f"{'class':<9} {'product':<24} {'m x k x n':<20} {'layout':<6} " + " ".join(f"{x:>7}" for x in libs)
          + "  GFLOP/s   best")
    ratios: dict[str, list[float]] = {}
    peak = 0.0
    for cls, name, m, k, n, layout in shapes(args.hidden, args.intermediate, args.quick):
        rates = {**res["paddle"]["rates"][name], **res["torch"]["rates"][name]}
        peak = max(peak, *rates.values()) if cls == "peak" else peak
        best = max(rates, key=rates.get)
        cells = " ".join(f"{rates[x]:7.1f}" if x in rates else f"{'-':>7}" for x in libs)
        print(f"{cls:<9} {name:<24} {f'{m}x{k}x{n}':<20} {layout:<6} {cells}            {best}")
        if "onednn" in rates:
            ratios.setdefault(cls, []).append(rates["onednn"] / rates["mkl"])
    for cls, r in ratios.items():
        if cls != "peak":
            print(f"class {cls}: onednn / mkl = {math.exp(sum(map(math.log, r)) / len(r)):.2f}x (geometric mean of "
                  f"{len(r)} products)")
    print(f"machine peak (best of the libraries on 2048^3): {peak:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
