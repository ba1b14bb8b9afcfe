"""Process settings for fast CPU runs, applied by one explicit call: ``configure_runtime()``.

Importing ``paddlemix_r1`` changes nothing in the process. The ``paddlemix-r1`` command line, the
``eval/`` scripts, the benchmarks and the test suite call ``configure_runtime()`` first; a user of the
library calls it too, as the first thing in a script or notebook (``paddlemix_r1.configure_runtime()``).
It returns what it set, ``runtime_settings()`` returns the same later, and ``restore_runtime()``
undoes it. Why not at import: a notebook that already imported paddle would have its own Paddle
code switched to copying views (the stride flag below) and its allocator retuned by an import line,
and the MKL variables could not take effect there anyway.

What it sets, each only where the user has not set it:

- ``MKL_DEBUG_CPU_TYPE=5`` on AMD CPUs and ``MKL_NUM_THREADS`` (environment variables; only before
  paddle is imported, since MKL reads them when Paddle loads, so call it before ``import paddle``).
  Paddle's CPU build uses Intel MKL, which on AMD cores picks slow generic kernels unless
  ``MKL_DEBUG_CPU_TYPE=5`` is set, and which runs one thread unless told otherwise (``MKL_NUM_THREADS``
  = cores, divided among the ranks of this node under the launcher).
- glibc ``malloc`` thresholds (``configure_malloc``). Paddle's CPU allocator takes every tensor from
  glibc ``malloc``. By default glibc serves blocks over 128 KiB-32 MiB with fresh ``mmap`` pages and
  unmaps them on free, so each large activation of a forward or backward pass page-faults its memory
  in again: adding two (2048, 1408) fp32 tensors took 5.3 ms, 0.77 ms once freed blocks are reused.
- Paddle's ``FLAGS_use_stride_kernel`` off on CPU builds (``configure_paddle``): with strided views on,
  any op reading a transposed view takes a slow generic path.
- The OpenMP pool (Paddle's ``libiomp5``) as large as MKL's (``configure_openmp``): Paddle shrinks it to one
  thread at import, and the compiled CPU kernels and oneDNN's GEMM run on it.
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
    require a Paddle distribution: see setup.py). Reads the version without importing paddle, so
    ``configure_runtime`` can still come before it."""
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


# What ``configure_runtime`` set in this process (setting -> value), for ``paddlemix-r1 doctor``.
SETTINGS: dict[str, str] = {}
# What ``restore_runtime`` puts back: the Paddle flag's value before ``configure_runtime`` changed it.
_PREVIOUS_FLAGS: dict[str, bool] = {}
_PREVIOUS_OPENMP: list[int] = []  # the OpenMP pool's size before ``configure_openmp`` changed it


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


def configure_runtime() -> dict[str, str]:
    """Apply the CPU runtime settings of this module's docstring and return what was set (setting -> value).

    Each setting the user made (an exported variable, ``PADDLEMIX_R1_MALLOC=0``, ``FLAGS_use_stride_kernel``)
    wins. The MKL variables are set only when paddle has not been imported yet. Calling it again is harmless.
    """
    # Paddle exports OMP_NUM_THREADS=1 at import when it is unset: whether the user set it is known only before
    user_omp = "OMP_NUM_THREADS" in os.environ if "paddle" not in sys.modules else True
    if "paddle" not in sys.modules:
        # Paddle warns at import that ccache (a build tool) is missing; irrelevant to users of the wheel.
        warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
        if cpu_vendor() == "AuthenticAMD":
            # MKL picks its slow generic kernels on AMD cores unless told they do AVX2. On Intel the same
            # setting forces the AVX2 path over AVX-512 (measured: 177 -> 101 GFLOP/s for a 1024^2 matmul).
            _set_default("MKL_DEBUG_CPU_TYPE", "5")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # MKL's own thread count, not OMP_NUM_THREADS: Paddle prints a data-parallel warning at import for
        # any OMP_NUM_THREADS > 1, while MKL_NUM_THREADS alone gives its GEMMs all cores just the same.
        _set_default("MKL_NUM_THREADS",
                     os.environ.get("OMP_NUM_THREADS", str(threads_per_process(cores, os.environ))))
    if configure_malloc():
        SETTINGS["malloc"] = f"mallopt mmap/trim thresholds {HEAP_KEEP_BYTES >> 20} MiB"
    if configure_paddle():
        SETTINGS["FLAGS_use_stride_kernel"] = "False"
    threads = 0 if user_omp else configure_openmp()
    if threads:
        SETTINGS["openmp_threads"] = str(threads)
    return runtime_settings()


def runtime_settings() -> dict[str, str]:
    """What ``configure_runtime`` set in this process (empty if it was not called, or set nothing)."""
    return dict(SETTINGS)


def restore_runtime() -> dict[str, str]:
    """Undo ``configure_runtime`` and return what it had set.

    The environment variables it set are removed (Paddle has read them already if it was imported
    since: they then only stop reaching child processes), the Paddle flag gets its earlier value back,
    and glibc's mmap and trim thresholds their documented defaults of 128 KiB (glibc's own adjustment
    of the mmap threshold as blocks are freed stays off, as after any ``mallopt`` call).
    """
    undone = runtime_settings()
    for name in ("MKL_DEBUG_CPU_TYPE", "MKL_NUM_THREADS"):
        if name in SETTINGS and os.environ.get(name) == SETTINGS[name]:
            del os.environ[name]
    if "malloc" in SETTINGS:
        _mallopt(GLIBC_DEFAULT_THRESHOLD_BYTES)
    if _PREVIOUS_OPENMP:
        openmp_library().omp_set_num_threads(_PREVIOUS_OPENMP.pop())
    if _PREVIOUS_FLAGS:
        import paddle

        paddle.set_flags(dict(_PREVIOUS_FLAGS))
        _PREVIOUS_FLAGS.clear()
    SETTINGS.clear()
    return undone


# mallopt(3) parameters of glibc
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_KEEP_BYTES = 1 << 30
GLIBC_DEFAULT_THRESHOLD_BYTES = 128 * 1024  # M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, mallopt(3)


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
    return _mallopt(HEAP_KEEP_BYTES)


def _mallopt(threshold: int) -> bool:
    """Set glibc's mmap and trim thresholds; False off glibc or if glibc refused."""
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False  # not glibc (musl has no mallopt tunables of this kind)
    ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, threshold) == 1 and ok
    return ok


def configure_paddle() -> bool:
    """On CPU builds, turn Paddle's strided (view) kernels off unless the user set the flag; True if it did.

    With them on, any op reading a transposed view takes a slow generic path: adding 0 to a
    transposed (8, 300, 2, 64) tensor costs 2.9 ms instead of 0.11 ms on this machine, which made
    every attention matmul over the KV cache ~80x slower.
    """
    import paddle

    if paddle.is_compiled_with_cuda() or "FLAGS_use_stride_kernel" in os.environ:
        return False
    before = paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"]
    _PREVIOUS_FLAGS.setdefault("FLAGS_use_stride_kernel", before)
    paddle.set_flags({"FLAGS_use_stride_kernel": False})
    return True


def paddle_library(name: str) -> str | None:
    """Path of a shared library Paddle ships in ``paddle/libs`` (``libiomp5.so``, ``libmklml_intel.so``,
    ``libdnnl.so.3``), or None where this build has none."""
    import paddle

    path = os.path.join(os.path.dirname(os.path.abspath(paddle.__file__)), "libs", name)
    return path if os.path.exists(path) else None


def openmp_library() -> ctypes.CDLL | None:
    """The OpenMP runtime Paddle loaded (its bundled ``libiomp5``), or None for a build without one."""
    path = paddle_library("libiomp5.so")
    return ctypes.CDLL(path) if path else None  # the loaded library's handle, not a second copy


def configure_openmp() -> int:
    """Give the OpenMP pool of Paddle's ``libiomp5`` as many threads as MKL has (``MKL_NUM_THREADS``); return
    that count, or 0 when nothing was changed (no libiomp5, no ``MKL_NUM_THREADS``, or equal already).
    ``configure_runtime`` calls it only where the user did not export ``OMP_NUM_THREADS``.

    Paddle sets the pool to 1 thread at import unless ``OMP_NUM_THREADS`` is exported, and exporting it
    prints a warning about data parallelism. Our compiled CPU kernels (``ops/cpu_ext.py``) and oneDNN's GEMM
    (``ops/gemm.py``) run on that pool, so without this they ran single-threaded in every run but the
    benchmarks (which export ``OMP_NUM_THREADS``). Set for the calling (main) thread, whose ops these are.
    """
    omp = openmp_library()
    wanted = int(os.environ.get("MKL_NUM_THREADS", "0") or 0)
    if omp is None or wanted < 1:
        return 0
    before = int(omp.omp_get_max_threads())
    if before == wanted:
        return 0
    if not _PREVIOUS_OPENMP:
        _PREVIOUS_OPENMP.append(before)
    omp.omp_set_num_threads(wanted)
    return wanted


def configure_thread() -> int:
    """Give the calling thread the OpenMP pool size ``configure_runtime`` gave the main thread; return it, or 0
    when it set none. OpenMP keeps the thread count per thread: a thread started later begins at the
    process default (1 under Paddle), so a model thread (the server's worker) calls this first."""
    threads = int(SETTINGS.get("openmp_threads", "0"))
    omp = openmp_library() if threads else None
    if omp is None:
        return 0
    omp.omp_set_num_threads(threads)
    return threads


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
