"""CPU kernels compiled from ``ops/csrc/*.cc`` with Paddle's custom-operator toolchain.

Paddle 3.3.1's CPU build runs softmax, exp and max single-threaded and scalar (5.0 ms for a
(4, 1024, 1024) softmax, 1.8 ms for the kernel here; see the source). The kernels are built on first
use with the machine's C++ compiler (``-O3 -march=native -fopenmp``; ~20 s, once) into a cache
directory keyed by the source, Paddle, Python and the CPU's instruction-set flags, so a cache shared
between different machines never hands one a binary it cannot run. Later processes load the built
library in well under a second.

- ``PADDLEMIX_R1_CPU_KERNELS=0`` turns them off (the dispatch then uses the eager references).
- ``PADDLEMIX_R1_EXT_DIR`` sets the cache directory (default ``~/.cache/paddlemix_r1/ext``).
- The vision attention (``csrc/attention_cpu.cc``) does its GEMMs with the MKL library Paddle
  ships (``paddle/libs/libmklml_intel.so``); a Paddle build without it gets the other kernels, and
  ``status()`` says that the vision attention stays eager.
- When the build fails (no compiler, say), ``available()`` is False, the dispatch uses the eager
  references, and one RuntimeWarning gives the reason; ``status()`` returns it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import platform
import sys
import warnings
from types import ModuleType

import paddle

from paddlemix_r1._runtime import paddle_library

NAME = "paddlemix_r1_cpu_kernels"
CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
SOURCE = os.path.join(CSRC, "cpu_kernels.cc")
ATTENTION_SOURCE = os.path.join(CSRC, "attention_cpu.cc")  # needs MKL's CBLAS (see _mkl_library)
HEADERS = [os.path.join(CSRC, "rows.h")]  # included by both sources
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]  # -ffast-math: vectorized expf (libmvec)
# Link the OpenMP runtime Paddle ships (Intel's libiomp5, which also serves GCC's GOMP_* entry points)
# instead of libgomp: one thread pool with MKL's, not two pools spinning against each other (with
# libgomp the whole model's fwd+bwd got slower, though softmax alone was faster).
LDFLAGS = ["-liomp5"]

# Calling a custom op from Python costs ~40 us more than a built-in op, so the kernels only take inputs
# large enough to win (measured crossovers: softmax between 32K and 256K elements, e.g. 90 vs 55 us at
# (16, 2048) and 291 vs 655 us at (64, 4096); swiglu between 8K and 32K, 74 vs 43 us and 96 vs 141 us).
MIN_NUMEL = {"softmax": 65536, "swiglu": 16384, "quick_gelu": 16384, "layer_norm": 16384, "rms_norm": 16384,
             "vision_attention": 16384, "categorical": 0, "grouped_decode_attention": 0}
# The vision attention keeps its softmax probabilities for the backward up to this many (heads x the sum
# of squared segment lengths; 128 MiB in fp32), as the eager path does; beyond it the backward
# recomputes them block by block.
MAX_STORED_PROBS = 1 << 25
# The compiled function behind each op's ``cpu_kernel`` implementation.
KERNEL_OF = {"softmax": "softmax_lastdim", "swiglu": "swiglu_cpu", "quick_gelu": "quick_gelu_cpu",
             "layer_norm": "layer_norm_cpu", "rms_norm": "rms_norm_cpu", "vision_attention": "vision_attention_cpu",
             "categorical": "categorical_sample_cpu", "grouped_decode_attention": "grouped_decode_attention_cpu"}

_module: ModuleType | None = None
_status: str = "not loaded"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mkl_library() -> str | None:
    """Paddle's bundled MKL (CBLAS for the attention kernel's GEMMs), or None if this build has none."""
    return paddle_library("libmklml_intel.so")


def _sources_and_ldflags() -> tuple[list[str], list[str]]:
    if _mkl_library() is None:
        return [SOURCE], LDFLAGS
    return [SOURCE, ATTENTION_SOURCE], [*LDFLAGS, "-lmklml_intel"]


def build_key() -> str:
    """Hash of everything the built library depends on."""
    h = hashlib.sha256()
    sources, ldflags = _sources_and_ldflags()
    for source in [*sources, *HEADERS]:
        with open(source, "rb") as f:
            h.update(f.read())
    for part in (paddle.__version__, sys.version, " ".join(CFLAGS + ldflags), _cpu_flags()):
        h.update(part.encode())
    return h.hexdigest()[:16]


def build_directory() -> str:
    root = os.environ.get("PADDLEMIX_R1_EXT_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "paddlemix_r1", "ext")
    return os.path.join(root, build_key())


@contextlib.contextmanager
def _locked(directory: str):
    """One builder at a time (several ranks of a launch may start together)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load(directory: str) -> ModuleType:
    from paddle.utils.cpp_extension import extension_utils, load

    built = os.path.join(directory, NAME, f"{NAME}.so")
    importer = getattr(extension_utils, "_import_module_from_library", None)
    if os.path.exists(os.path.join(directory, "ok")) and os.path.exists(built) and importer is not None:
        return importer(NAME, os.path.join(directory, NAME), False)  # skips load()'s setup.py run (~1.5 s)
    sources, ldflags = _sources_and_ldflags()
    module = load(name=NAME, sources=sources, extra_cxx_cflags=CFLAGS, extra_ldflags=ldflags,
                  build_directory=directory, verbose=False)
    with open(os.path.join(directory, "ok"), "w") as f:
        f.write(os.path.basename(directory))  # the build key (build_directory ends in it)
    return module


def module() -> ModuleType | None:
    """The compiled kernels, building them on first call; None if disabled or the build failed."""
    global _module, _status
    if _module is not None or _status != "not loaded":
        return _module
    if os.environ.get("PADDLEMIX_R1_CPU_KERNELS", "1") == "0":
        _status = "disabled by PADDLEMIX_R1_CPU_KERNELS=0"
        return None
    directory = build_directory()
    log = logging.getLogger("utils.cpp_extension")  # Paddle's loader logs "using custom operator only" at INFO
    level = log.level
    try:
        log.setLevel(logging.WARNING)
        with _locked(directory):
            _module = _load(directory)
        _status = f"loaded from {directory}"
        if _mkl_library() is None:
            _status += " (no libmklml_intel.so in this Paddle build: vision_attention and grouped_decode_attention stay eager)"
    except Exception as e:  # noqa: BLE001 - any build failure means: use the eager references, and say why
        _status = f"build failed in {directory}: {type(e).__name__}: {str(e)[-2000:]}"
        warnings.warn(f"paddlemix_r1: CPU kernels unavailable, using the eager references ({_status})",
                      RuntimeWarning, stacklevel=2)
    finally:
        log.setLevel(level)
    return _module


def takes(op: str, *tensors: paddle.Tensor) -> bool:
    """Whether ``op``'s kernel applies: fp32/fp64 tensors of one dtype, the first of ``MIN_NUMEL[op]``
    elements or more (smaller inputs run faster on the eager path)."""
    dtype = tensors[0].dtype
    if dtype not in (paddle.float32, paddle.float64) or any(t.dtype != dtype for t in tensors):
        return False
    return math.prod(tensors[0].shape) >= MIN_NUMEL[op]


def provides(op: str) -> bool:
    """Whether the compiled library has ``op``'s kernel (it may lack one it could not build here)."""
    kernels_module = module()
    return kernels_module is not None and hasattr(kernels_module, KERNEL_OF[op])


def kernels() -> ModuleType:
    """The compiled kernels, for a ``cpu_kernel`` implementation; a clear error if they are unavailable
    (only an explicit ``ops.override(...="cpu_kernel")`` gets here then: the dispatch picks eager)."""
    kernels_module = module()
    if kernels_module is None:
        raise RuntimeError(f"a cpu_kernel implementation was requested but the CPU kernels are unavailable: {status()}")
    return kernels_module


def available() -> bool:
    return module() is not None


def status() -> str:
    """How the kernels stand: loaded (from where), disabled, or why the build failed; then how the oneDNN
    GEMM of ``ops/gemm.py`` stands (loaded, or why every GEMM uses MKL-ML)."""
    from paddlemix_r1.ops import gemm

    return f"{_status}; oneDNN GEMM: {gemm.status()}"
