"""One GEMM layer for CPU: each 2-D fp32 product goes to the library that wins for its shape class.

Two libraries ship inside Paddle's CPU wheel (``paddle/libs``):

- ``mkl``: ``paddle.matmul``, which on CPU calls the bundled MKL-ML (``libmklml_intel.so``); always there.
- ``onednn``: ``dnnl_sgemm`` of the bundled oneDNN (``libdnnl.so.3``), called through ctypes on the tensors'
  memory (row-major ``C = op(A) op(B)``). It runs on the OpenMP pool of Paddle's ``libiomp5``, whose size
  ``paddlemix_r1.configure_runtime()`` sets to the process's cores (without it the pool has one thread and
  oneDNN is not used: ``status()`` says so).

``ROUTE`` maps a shape class (``shape_class(m, n, k)``) to its library, from ``benchmarks/gemm.py`` on
both CPU kinds. ``PADDLEMIX_R1_GEMM=mkl`` (or ``onednn``) pins one library for every class;
``PADDLEMIX_R1_DNNL_LIBRARY`` points at another ``libdnnl.so.3``. Anything the
``onednn`` path cannot take (not fp32, not contiguous, not CPU, under autograd) goes to ``paddle.matmul``.

Callers: ``ops.linear``'s CPU implementation (``gemm_grad``: forward, and the backward's two products).
The reference for every caller stays the eager ``F.linear`` / ``paddle.matmul`` and tests hold the two equal.
"""

from __future__ import annotations

import ctypes
import os

import paddle

from paddlemix_r1._runtime import openmp_library, paddle_library

LIBRARIES = ("mkl", "onednn")
# Shape class -> library, measured with benchmarks/gemm.py (GFLOP/s of each library per class, same run):
# - "rows<=64": decode steps (B*G rows of one token) and other skinny products, where a call's fixed cost
#   dominates;
# - "wide_out": the LM head's vocabulary chunks (n >= 32768);
# - "large": everything else (prefill, training forward and both backward products).
ROUTE = {"rows<=64": "mkl", "wide_out": "mkl", "large": "mkl"}
# One (m, n, k) of each class (``paddlemix-r1 doctor`` prints where each goes here).
CLASS_EXAMPLES = {"rows<=64": (16, 2048, 1536), "wide_out": (128, 151936, 1536), "large": (1024, 2048, 1536)}

_lib: ctypes.CDLL | None = None
_omp: ctypes.CDLL | None = None
_status = "not loaded"


def shape_class(m: int, n: int, k: int) -> str:
    """The class of C (m, n) = A (m, k) @ B (k, n), for ``ROUTE``."""
    if m <= 64:
        return "rows<=64"
    if n >= 32768:
        return "wide_out"
    return "large"


def _load() -> ctypes.CDLL | None:
    """Paddle's oneDNN, with ``dnnl_sgemm``'s signature declared; None (and ``_status`` says why) if absent."""
    global _lib, _omp, _status
    if _status != "not loaded":
        return _lib
    path = os.environ.get("PADDLEMIX_R1_DNNL_LIBRARY") or paddle_library("libdnnl.so.3")
    if path is None or not os.path.exists(path):
        _status = "unavailable: this Paddle build ships no paddle/libs/libdnnl.so.3 (every GEMM uses MKL-ML)"
        return None
    try:
        lib = ctypes.CDLL(path)
        fn = lib.dnnl_sgemm
    except (OSError, AttributeError) as e:
        _status = f"unavailable: cannot load dnnl_sgemm from {path}: {e} (every GEMM uses MKL-ML)"
        return None
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    fn.argtypes = [ctypes.c_char, ctypes.c_char, i64, i64, i64, f32, ptr, i64, ptr, i64, f32, ptr, i64]
    fn.restype = ctypes.c_int
    _omp = openmp_library()
    _lib = lib
    _status = f"loaded from {path}"
    return _lib


def reload() -> str:
    """Forget the loaded library and look again (after changing ``PADDLEMIX_R1_DNNL_LIBRARY``); the new status."""
    global _lib, _omp, _status
    _lib, _omp, _status = None, None, "not loaded"
    return status()


def openmp_threads() -> int | None:
    """Size of the OpenMP pool oneDNN runs on (Paddle's libiomp5), or None where it is not found."""
    _load()
    return None if _omp is None else int(_omp.omp_get_max_threads())


def status() -> str:
    """How the oneDNN GEMM stands: loaded (from where), or why every GEMM uses MKL-ML."""
    _load()
    if _lib is not None and (openmp_threads() or 1) < _wanted_threads():
        return (f"{_status}, but its OpenMP pool has {openmp_threads()} thread(s) for {_wanted_threads()} cores: "
                "not used (call paddlemix_r1.configure_runtime() first)")
    return _status


_mkl: list[ctypes.CDLL | None] = []


def _wanted_threads() -> int:
    """MKL's thread count in this process (what the ``mkl`` library would use), else 1."""
    if not _mkl:
        path = paddle_library("libmklml_intel.so")
        _mkl.append(ctypes.CDLL(path) if path else None)
    return 1 if _mkl[0] is None else max(1, int(_mkl[0].MKL_Get_Max_Threads()))


def available() -> bool:
    """Whether the ``onednn`` library can be used in this process."""
    return _load() is not None and (openmp_threads() or 1) >= _wanted_threads()


def library_for(m: int, n: int, k: int) -> str:
    """Which library computes an (m, k) x (k, n) product here."""
    pinned = os.environ.get("PADDLEMIX_R1_GEMM")
    if pinned:
        if pinned not in LIBRARIES:
            raise ValueError(f"PADDLEMIX_R1_GEMM must be one of {LIBRARIES}, got {pinned!r}")
        want = pinned
    else:
        want = ROUTE[shape_class(m, n, k)]
    return "onednn" if want == "onednn" and available() else "mkl"


def uses_onednn() -> bool:
    """Whether any shape class goes to oneDNN in this process (else every product is ``paddle.matmul``)."""
    pinned = os.environ.get("PADDLEMIX_R1_GEMM")
    return (pinned == "onednn" or (not pinned and "onednn" in ROUTE.values())) and available()


def _takes(*tensors: paddle.Tensor) -> bool:
    return all(t.dtype == paddle.float32 and t.place.is_cpu_place() and t.is_contiguous() for t in tensors)


def onednn_matmul(a: paddle.Tensor, b: paddle.Tensor, transpose_a: bool = False, transpose_b: bool = False
                  ) -> paddle.Tensor:
    """op(a) @ op(b) by ``dnnl_sgemm``; a (m, k) or (k, m) with ``transpose_a``, b (k, n) or (n, k) with
    ``transpose_b``; fp32 contiguous CPU tensors, no autograd. -> (m, n)."""
    lib = _load()
    if lib is None:
        raise RuntimeError(f"oneDNN GEMM requested but {status()}")
    if not _takes(a, b) or a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"onednn_matmul takes 2-D contiguous fp32 CPU tensors, got {a.dtype} {a.shape}, "
                         f"{b.dtype} {b.shape}")
    m, k = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if transpose_b else b.shape
    if k != kb:
        raise ValueError(f"inner sizes differ: op(a) {m}x{k}, op(b) {kb}x{n}")
    c = paddle.empty([m, n], dtype=paddle.float32)  # (m, n)
    if m and n:
        if k == 0:
            return paddle.zeros([m, n], dtype=paddle.float32)
        code = lib.dnnl_sgemm(b"T" if transpose_a else b"N", b"T" if transpose_b else b"N", m, n, k, 1.0,
                              a.data_ptr(), a.shape[1], b.data_ptr(), b.shape[1], 0.0, c.data_ptr(), n)
        if code != 0:
            raise RuntimeError(f"dnnl_sgemm returned status {code} for ({m}, {k}) x ({k}, {n})")
    return c


def matmul(a: paddle.Tensor, b: paddle.Tensor, transpose_a: bool = False, transpose_b: bool = False
           ) -> paddle.Tensor:
    """op(a) @ op(b) for 2-D a, b through ``library_for``'s library; equal to ``paddle.matmul`` (which is also
    the path for anything the oneDNN call cannot take, and for inputs that need gradients)."""
    m = a.shape[1] if transpose_a else a.shape[0]
    k = a.shape[0] if transpose_a else a.shape[1]
    n = b.shape[0] if transpose_b else b.shape[1]
    needs_grad = paddle.is_grad_enabled() and not (a.stop_gradient and b.stop_gradient)
    if (needs_grad or a.ndim != 2 or b.ndim != 2 or library_for(m, n, k) != "onednn" or not _takes(a, b)):
        return paddle.matmul(a, b, transpose_x=transpose_a, transpose_y=transpose_b)
    return onednn_matmul(a, b, transpose_a, transpose_b)
