"""Process start-up settings that must be in place before paddle is imported.

Paddle's CPU build uses Intel MKL, which on AMD cores picks slow generic kernels unless
``MKL_DEBUG_CPU_TYPE=5`` is set, and which runs one thread unless told otherwise
(``MKL_NUM_THREADS`` = cores). Both are set here as defaults; a value the user already exported wins.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator


def configure_cpu_runtime() -> None:
    if "paddle" in sys.modules:
        # Too late to influence MKL's dispatch; keep whatever the process has.
        return
    # Paddle warns at import that ccache (a build tool) is missing; irrelevant to users of the wheel.
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    cores = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    # MKL's own thread count, not OMP_NUM_THREADS: Paddle prints a data-parallel warning at import for
    # any OMP_NUM_THREADS > 1, while MKL_NUM_THREADS alone gives its GEMMs all cores just the same.
    os.environ.setdefault("MKL_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", cores))


def configure_paddle() -> None:
    """On CPU builds, turn Paddle's strided (view) kernels off unless the user set the flag.

    With them on, any op reading a transposed view takes a slow generic path: adding 0 to a
    transposed (8, 300, 2, 64) tensor costs 2.9 ms instead of 0.11 ms on this machine, which made
    every attention matmul over the KV cache ~80x slower.
    """
    import paddle

    if not paddle.is_compiled_with_cuda() and "FLAGS_use_stride_kernel" not in os.environ:
        paddle.set_flags({"FLAGS_use_stride_kernel": False})


@contextlib.contextmanager
def stride_kernels() -> Iterator[None]:
    """Temporarily allow strided views (safetensors' paddle loader reinterprets dtypes with them)."""
    import paddle

    before = paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"]
    paddle.set_flags({"FLAGS_use_stride_kernel": True})
    try:
        yield
    finally:
        paddle.set_flags({"FLAGS_use_stride_kernel": before})
