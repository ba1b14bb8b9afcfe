"""One place that picks every kernel.

Each op has an ``eager`` reference (plain Paddle ops, runs anywhere) and, where Paddle ships one,
a ``fused`` implementation under the same signature. The implementation is chosen once, on first
use, from the device Paddle computes on; ``override`` pins one (tests, benchmarks).
On CPU nothing GPU-only is ever called: Paddle's CPU build crashes (SIGILL) or has no kernel for
``fused_rms_norm``, ``fused_rms_norm_ext`` and ``fused_rotary_position_embedding``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import paddle

from paddlemix_r1.ops import cpu_ext

_REGISTRY: dict[str, dict[str, Callable]] = {}
# Which implementation each device kind uses when both exist.
_DEFAULT_FOR_DEVICE = {"gpu": "fused", "cpu": "eager"}
# CPU departures from "eager", by measurement on Paddle's CPU build (Paddle's own "fused" CPU swiglu is
# slower than silu(gate) * up at every size measured, 29 vs 15 us at (8, 1, 704) and 1.7 vs 0.6 ms at
# (342, 1408), forward and backward alike, so it is not used):
# - linear, rms_norm, layer_norm: gradients of the weight/bias as GEMMs with a row of ones (``gemm_grad``), since
#   Paddle's CPU reductions over leading axes are ~10x slower than the equivalent GEMM.
# - softmax, swiglu, quick_gelu, layer_norm, rms_norm: the compiled kernels of ``cpu_ext`` (``cpu_kernel``), when they
#   build here; fwd+bwd 8.3 -> 3.9 ms for quick_gelu on (1024, 1024), 4.9 -> 2.3 ms for swiglu on (342, 1408),
#   3.5 -> 0.8 ms for layer_norm (vs gemm_grad) on (1024, 256); vision_attention (rotary + block-diagonal attention
#   in one op, where Paddle ships MKL): whole-model fwd+bwd 695 -> 665 ms (Qwen2-VL), 599 -> 567 ms (Qwen2.5-VL);
#   categorical (a sampling step's draw and log-prob, ops/softmax.py); grouped_decode_attention (a decode step:
#   64-token rollout 285 -> 266 ms, 256 tokens 1043 -> 902 ms, Intel Xeon, 2 threads).
_CPU_CHOICE = {"linear": "gemm_grad", "rms_norm": "cpu_kernel", "layer_norm": "cpu_kernel", "softmax": "cpu_kernel",
               "swiglu": "cpu_kernel", "quick_gelu": "cpu_kernel", "vision_attention": "cpu_kernel",
               "categorical": "cpu_kernel", "grouped_decode_attention": "cpu_kernel"}
_chosen: dict[str, Callable] = {}
_overrides: dict[str, str] = {}
_simulated_device: list[str] = []  # set by ``simulate_device`` (ops/contracts.py: GPU dispatch on CPU)


def register(op: str, impl: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as implementation ``impl`` of ``op``: "eager" (the reference),
    "fused" (a Paddle kernel) or another named variant with the same results (e.g. "gemm_grad")."""

    def deco(fn: Callable) -> Callable:
        _REGISTRY.setdefault(op, {})[impl] = fn
        _chosen.pop(op, None)
        return fn

    return deco


def device_kind() -> str:
    """'gpu' when Paddle computes on a CUDA device (or inside ``simulate_device("gpu")``), else 'cpu'."""
    if _simulated_device:
        return _simulated_device[-1]
    place = paddle.get_device()
    return "gpu" if place.startswith("gpu") and paddle.is_compiled_with_cuda() else "cpu"


def implementation(op: str) -> str:
    """Name of the implementation ``op`` uses now."""
    impls = _REGISTRY[op]
    if op in _overrides:
        return _overrides[op]
    kind = device_kind()
    want = _CPU_CHOICE.get(op, "eager") if kind == "cpu" else _DEFAULT_FOR_DEVICE[kind]
    if want == "cpu_kernel" and not cpu_ext.provides(op):  # cpu_ext.status() says why
        return "gemm_grad" if "gemm_grad" in impls else "eager"
    return want if want in impls else "eager"


def implementations(op: str) -> dict[str, Callable]:
    """Every registered implementation of ``op`` by name ("eager" is the reference)."""
    return dict(_REGISTRY[op])


def ops() -> list[str]:
    """Names of every op with a dispatch entry."""
    return sorted(_REGISTRY)


def get(op: str) -> Callable:
    fn = _chosen.get(op)
    if fn is None:
        fn = _REGISTRY[op][implementation(op)]
        _chosen[op] = fn
    return fn


@contextlib.contextmanager
def override(**impls: str) -> Iterator[None]:
    """Pin implementations, e.g. ``with override(attention="eager"):``. Restores on exit."""
    for op, impl in impls.items():
        if impl not in _REGISTRY.get(op, {}):
            raise KeyError(f"op {op!r} has no implementation {impl!r}; known: {sorted(_REGISTRY.get(op, {}))}")
    saved = dict(_overrides)
    _overrides.update(impls)
    _chosen.clear()
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)
        _chosen.clear()


@contextlib.contextmanager
def simulate_device(kind: str) -> Iterator[None]:
    """Dispatch as on ``kind`` ("gpu" or "cpu") inside the block, whatever Paddle computes on. Used with the
    contract doubles of ops/contracts.py, which stand in for the GPU kernels on CPU."""
    if kind not in _DEFAULT_FOR_DEVICE:
        raise ValueError(f"device kind must be one of {sorted(_DEFAULT_FOR_DEVICE)}, got {kind!r}")
    _simulated_device.append(kind)
    _chosen.clear()
    try:
        yield
    finally:
        _simulated_device.pop()
        _chosen.clear()


def reset() -> None:
    """Forget cached choices (call after ``paddle.set_device``)."""
    _chosen.clear()
