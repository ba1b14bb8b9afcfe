"""Peak memory of chosen-token log-probs (forward + backward), naive vs chunked, at V = 151,936.

    python benchmarks/logprob_memory.py [--rows 4096] [--hidden-size 1536] [--chunk-size 512]

Rows default to B * L = 8 x 512 completion positions; the hidden size to Qwen2-VL-2B's 1536. Each
variant gets the same inputs (hidden [N, H], lm_head weight [H, V], token ids [N]) and runs
``logp.sum().backward()`` with gradients for both hidden and weight, as in training:

  naive          full [N, V] logits, full fp32 log-softmax, gather (``*_reference``)
  logits+chunk   full [N, V] logits from one matmul, then the chunked ``selective_log_softmax``
  hidden+chunk   ``selective_log_softmax_from_hidden``: lm_head and softmax per chunk of rows

How peak memory is measured, and why this way on CPU Paddle: each variant runs in a fresh
subprocess (process-wide high-water marks cannot be reset), and two numbers are taken around the
measured region, after the inputs exist:
  * Paddle's own host allocator statistics, ``core.host_memory_stat_peak_value("Allocated", 0)``
    minus the value at the start: every tensor Paddle allocates on CPU, including those autograd
    keeps for backward, to the byte. (``paddle.device.max_memory_allocated`` raises on CPU builds;
    ``tracemalloc`` only sees Python's allocator and misses all of it.)
  * ``ru_maxrss`` minus the resident set at the start: the kernel's high-water mark of the whole
    process, which also covers memory outside Paddle's allocator (MKL work buffers). It is exact,
    unlike RSS sampling from a thread, which misses short peaks between samples.
Both are printed; the ratio is naive / hidden+chunk. The log-probs and d hidden of every variant
are compared with the naive ones in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("naive", "logits+chunk", "hidden+chunk")
QWEN_VOCAB = 151_936


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(args: argparse.Namespace) -> None:
    import paddlemix_r1  # noqa: I001  first: CPU runtime settings (threads, MKL dispatch) before paddle

    paddlemix_r1.configure_runtime()
    import numpy as np
    import paddle
    from paddle.base import core

    from paddlemix_r1.ops.logprobs import (
        selective_log_softmax,
        selective_log_softmax_from_hidden,
        selective_log_softmax_from_hidden_reference,
    )

    def logits_then_chunked(hidden, weight, index, temperature, chunk_size):
        logits = paddle.matmul(hidden, weight)  # (N, V)
        return selective_log_softmax(logits, index, temperature, chunk_size)

    fn = {
        "naive": selective_log_softmax_from_hidden_reference,
        "logits+chunk": logits_then_chunked,
        "hidden+chunk": selective_log_softmax_from_hidden,
    }[args.worker]

    paddle.seed(0)
    hidden = paddle.randn([args.rows, args.hidden_size])  # (N, H)
    weight = paddle.randn([args.hidden_size, args.vocab]) * (args.hidden_size**-0.5)  # (H, V)
    hidden.stop_gradient = False
    weight.stop_gradient = False
    index = paddle.randint(0, args.vocab, [args.rows])  # (N,)

    alloc_start = core.host_memory_stat_current_value("Allocated", 0)
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    rss_start = _rss_bytes()
    maxrss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    logp = fn(hidden, weight, index, args.temperature, args.chunk_size)  # (N,)
    logp.sum().backward()
    seconds = time.perf_counter() - t0
    alloc_peak = core.host_memory_stat_peak_value("Allocated", 0) - alloc_start
    maxrss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if maxrss_end <= maxrss_start:
        raise RuntimeError("the measured region never exceeded the earlier RSS high-water mark")

    out_dir = Path(args.out_dir)
    np.save(out_dir / f"{args.worker}.logp.npy", logp.numpy())
    np.save(out_dir / f"{args.worker}.dhidden.npy", hidden.grad.numpy())
    result = {
        "variant": args.worker,
        "paddle_peak_bytes": alloc_peak,
        "rss_peak_bytes": maxrss_end - rss_start,
        "seconds": seconds,
        "weight_grad_sum": float(weight.grad.astype("float64").sum()),
    }
    (out_dir / f"{args.worker}.json").write_text(json.dumps(result))


def _gib(n: float) -> str:
    return f"{n / 2**30:7.2f} GiB"


def main(args: argparse.Namespace) -> None:
    import numpy as np
    from _harness import cpu_header

    print(cpu_header(int(os.environ.get("OMP_NUM_THREADS", len(os.sched_getaffinity(0))))))
    rows_desc = f"N={args.rows}, H={args.hidden_size}, V={args.vocab}, chunk={args.chunk_size}, T={args.temperature}"
    print(f"chosen-token log-probs, forward + backward (d hidden, d weight), fp32 on CPU: {rows_desc}")
    print(
        f"one [N, V] fp32 tensor = {_gib(args.rows * args.vocab * 4).strip()}; the inputs (hidden + weight, "
        f"{_gib((args.rows + args.vocab) * args.hidden_size * 4).strip()}) exist before and are not counted"
    )
    results = {}
    with tempfile.TemporaryDirectory() as out_dir:
        for variant in args.variants:
            cmd = [sys.executable, __file__, "--worker", variant, "--out-dir", out_dir]
            cmd += ["--rows", str(args.rows), "--hidden-size", str(args.hidden_size), "--vocab", str(args.vocab)]
            cmd += ["--chunk-size", str(args.chunk_size), "--temperature", str(args.temperature)]
            subprocess.run(cmd, check=True)
            results[variant] = json.loads((Path(out_dir) / f"{variant}.json").read_text())
            base = "naive" if "naive" in results else variant
            results[variant]["logp_max_diff"] = float(
                np.abs(
                    np.load(Path(out_dir) / f"{variant}.logp.npy") - np.load(Path(out_dir) / f"{base}.logp.npy")
                ).max()
            )
            results[variant]["dhidden_max_diff"] = float(
                np.abs(
                    np.load(Path(out_dir) / f"{variant}.dhidden.npy") - np.load(Path(out_dir) / f"{base}.dhidden.npy")
                ).max()
            )

    print(f"{'variant':<14} {'paddle peak':>12} {'RSS peak':>12} {'seconds':>8}  max|dlogp| max|d dhidden| vs naive")
    for variant, r in results.items():
        print(
            f"{variant:<14} {_gib(r['paddle_peak_bytes']):>12} {_gib(r['rss_peak_bytes']):>12} "
            f"{r['seconds']:8.1f}  {r['logp_max_diff']:.2e}  {r['dhidden_max_diff']:.2e}"
        )
    if "naive" in results and "hidden+chunk" in results:
        naive, chunked = results["naive"], results["hidden+chunk"]
        print(
            "peak-memory ratio naive / hidden+chunk: "
            f"{naive['paddle_peak_bytes'] / chunked['paddle_peak_bytes']:.1f}x (Paddle allocator), "
            f"{naive['rss_peak_bytes'] / chunked['rss_peak_bytes']:.1f}x (RSS)"
        )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=8 * 512, help="B * L completion positions")
    p.add_argument("--hidden-size", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=QWEN_VOCAB)
    p.add_argument("--chunk-size", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    parsed = parse_args()
    worker(parsed) if parsed.worker else main(parsed)
