"""Process start-up settings that must be in place before paddle is imported.

Paddle's CPU build uses Intel MKL, which on AMD cores picks slow generic kernels unless
``MKL_DEBUG_CPU_TYPE=5`` is set (set here on AMD CPUs only), and which runs one thread unless told
otherwise (``MKL_NUM_THREADS`` = cores, divided among the ranks of this node under the launcher).
Both are defaults; a value the user already exported wins. ``SETTINGS`` records what was set.

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

MIN_PADDLE = (3, 3)
INSTALL_HINT = ('CPU: pip install "paddlemix_r1[cpu]" (or pip install -e ".[cpu]" in a checkout); GPU: install '
                "paddlepaddle-gpu>=3.3 from Paddle's package index first (README, section GPU)")


def check_paddle_installed() -> None:
    """Fail at import with what to install when Paddle is missing or older than 3.3 (the package does not
    require a Paddle distribution: see setup.py). Reads the version without importing paddle, so the
    runtime settings below still come first."""
    from importlib import metadata

    versions = {}
    for dist in ("paddlepaddle-gpu", "paddlepaddle"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    if not versions:
        import importlib.util

        if importlib.util.find_spec("paddle") is None:
            raise ImportError(f"paddlemix_r1 needs PaddlePaddle >= 3.3, which is not installed. {INSTALL_HINT}")
        return  # a source build of Paddle without distribution metadata: trust it
    if len(versions) > 1:
        warnings.warn(f"both {' and '.join(f'{d} {v}' for d, v in versions.items())} are installed; they share "
                      "site-packages/paddle, so whichever was installed last is what runs (pip uninstall the one "
                      "you do not want, then reinstall the other)", RuntimeWarning, stacklevel=2)
    for dist, version in versions.items():
        parts = tuple(int(p) if p.isdigit() else 0 for p in version.split(".")[:2])
        if parts != (0, 0) and parts < MIN_PADDLE:  # 0.0.0: a develop build
            raise ImportError(f"paddlemix_r1 needs PaddlePaddle >= 3.3, found {dist} {version}. {INSTALL_HINT}")


# What ``configure_cpu_runtime`` set in this process (variable -> value), for ``paddlemix-r1 doctor``.
SETTINGS: dict[str, str] = {}


def cpu_vendor() -> str:
    """The CPU vendor id from /proc/cpuinfo ("GenuineIntel", "AuthenticAMD", ...), or "" where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return ""
    return ""


def threads_per_process(cores: int, env: dict[str, str]) -> int:
    """Cores per process: the machine's cores divided among the ranks the launcher started on this node
    (``PADDLE_LOCAL_SIZE``), so 8 ranks do not each run a pool of every core (host-side ops, offload copies)."""
    try:
        local = max(1, int(env.get("PADDLE_LOCAL_SIZE", "1")))
    except ValueError:
        raise ValueError(f"PADDLE_LOCAL_SIZE must be an integer, got {env['PADDLE_LOCAL_SIZE']!r}") from None
    return max(1, cores // local)


def _set_default(name: str, value: str) -> None:
    if name not in os.environ:
        os.environ[name] = value
        SETTINGS[name] = value


def configure_cpu_runtime() -> None:
    configure_malloc()  # takes effect for allocations made from now on, whenever it is called
    if "paddle" in sys.modules:
        # Too late to influence MKL's dispatch; keep whatever the process has.
        return
    # Paddle warns at import that ccache (a build tool) is missing; irrelevant to users of the wheel.
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
    if cpu_vendor() == "AuthenticAMD":
        # MKL picks its slow generic kernels on AMD cores unless told they do AVX2. On Intel the same
        # setting forces the AVX2 path over AVX-512 (measured: 177 -> 101 GFLOP/s for a 1024^2 matmul).
        _set_default("MKL_DEBUG_CPU_TYPE", "5")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # MKL's own thread count, not OMP_NUM_THREADS: Paddle prints a data-parallel warning at import for
    # any OMP_NUM_THREADS > 1, while MKL_NUM_THREADS alone gives its GEMMs all cores just the same.
    _set_default("MKL_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", str(threads_per_process(cores, os.environ))))


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
