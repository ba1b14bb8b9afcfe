"""softmax and log-softmax.

softmax: Paddle's kernel (the reference, and the GPU choice) or, on CPU, the compiled multi-threaded
kernel of ``ops/cpu_ext.py`` (3-4x faster; last axis, fp32/fp64). log-softmax: Paddle's CPU
``log_softmax`` kernel is ~200x slower than its ``softmax`` (63 ms vs 0.3 ms for an (8, 8192) input
on this machine), so the eager path composes it from max/exp/sum."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from paddlemix_r1.ops import cpu_ext
from paddlemix_r1.ops.broadcast import expand_to
from paddlemix_r1.ops.dispatch import get, register


@register("softmax", "eager")
def softmax_eager(x: paddle.Tensor, axis: int = -1) -> paddle.Tensor:
    return F.softmax(x, axis=axis)


@register("softmax", "cpu_kernel")
def softmax_cpu_kernel(x: paddle.Tensor, axis: int = -1) -> paddle.Tensor:
    """``softmax_eager`` by the compiled CPU kernel (last axis, fp32/fp64, ``cpu_ext.MIN_NUMEL`` elements
    or more; anything else: eager)."""
    if axis not in (-1, x.ndim - 1) or not cpu_ext.takes("softmax", x):
        return F.softmax(x, axis=axis)
    return cpu_ext.kernels().softmax_lastdim(x)


def softmax(x: paddle.Tensor, axis: int = -1) -> paddle.Tensor:
    return get("softmax")(x, axis)


@register("log_softmax", "eager")
def log_softmax_eager(x: paddle.Tensor, axis: int = -1) -> paddle.Tensor:
    shifted = x - expand_to(x.max(axis=axis, keepdim=True).detach(), x.shape)
    return shifted - expand_to(paddle.log(paddle.exp(shifted).sum(axis=axis, keepdim=True)), x.shape)


@register("log_softmax", "fused")
def log_softmax_fused(x: paddle.Tensor, axis: int = -1) -> paddle.Tensor:
    return F.log_softmax(x, axis=axis)


def log_softmax(x: paddle.Tensor, axis: int = -1) -> paddle.Tensor:
    return get("log_softmax")(x, axis)
