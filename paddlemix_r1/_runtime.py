"""Process start-up settings that must be in place before paddle is imported.

Paddle's CPU build uses Intel MKL, which on AMD cores picks slow generic kernels unless
``MKL_DEBUG_CPU_TYPE=5`` is set, and which runs one thread unless told otherwise
(``MKL_NUM_THREADS`` = cores). Both are set here as defaults; a value the user already exported wins.

Paddle's CPU allocator takes every tensor from glibc ``malloc``. By default glibc serves blocks over
128 KiB-32 MiB with fresh ``mmap`` pages and unmaps them on free, so each large activation of a
forward or backward pass page-faults its memory in again: adding two (2048, 1408) fp32 tensors took
5.3 ms, 0.77 ms once freed blocks are reused. ``configure_malloc`` keeps them in the heap.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import warnings
from collections.abc import Iterator


def configure_cpu_runtime() -> None:
    configure_malloc()  # takes effect for allocations made from now on, whenever it is called
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


# mallopt(3) parameters of glibc
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_KEEP_BYTES = 1 << 30


def configure_malloc() -> bool:
    """Serve allocations up to 1 GiB from glibc's heap and keep up to 1 GiB of freed heap mapped,
    so large tensors reuse memory instead of page-faulting fresh mmap pages on every op.

    Skipped (returns False) off glibc, or when the user tunes malloc through ``GLIBC_TUNABLES`` or
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``; ``PADDLEMIX_R1_MALLOC=0`` turns it off.
    The cost is that freed memory (up to the trim threshold) stays with the process, as with a
    caching GPU allocator.
    """
    if os.environ.get("PADDLEMIX_R1_MALLOC", "1") == "0" or any(
        k in os.environ for k in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False  # not glibc (musl has no mallopt tunables of this kind)
    ok = libc.mallopt(_M_MMAP_THRESHOLD, HEAP_KEEP_BYTES) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES) == 1 and ok
    return ok


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
