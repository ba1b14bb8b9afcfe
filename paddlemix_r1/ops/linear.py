"""Linear layers: x @ W + b with Paddle's weight layout W (in, out).

Paddle's CPU backward of a broadcast bias add reduces over the leading axes with a slow generic
kernel: 3.8 ms for the bias gradient of a (2048, 1408) output, against 0.3 ms as a GEMM with a row
of ones. ``gemm_grad`` computes every gradient as a GEMM (the CPU choice); ``eager`` is Paddle's
``F.linear`` (the reference, and the GPU choice, where the reduction is fast).
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

from paddlemix_r1.ops import gemm
from paddlemix_r1.ops.dispatch import get, register


def sum_rows(t: paddle.Tensor) -> paddle.Tensor:
    """Sum over every axis but the last, as a GEMM with a row of ones: (..., D) -> (D,)."""
    t2 = t.reshape([-1, t.shape[-1]])  # (M, D)
    return paddle.matmul(paddle.ones([1, t2.shape[0]], t.dtype), t2).reshape([-1])  # (D,)


@register("linear", "eager")
def linear_eager(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None) -> paddle.Tensor:
    """x (..., in), weight (in, out), bias (out,) or None -> (..., out)."""
    return F.linear(x, weight, bias)


def _addmm(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None) -> paddle.Tensor:
    """bias + x @ weight over the flattened rows, through the GEMM layer (ops/gemm.py): one addmm where
    MKL computes it, the library's product plus the bias otherwise. (..., in) -> (..., out); no autograd."""
    x2 = x.reshape([-1, x.shape[-1]])  # (M, in)
    m, k, n = x2.shape[0], x2.shape[1], weight.shape[1]
    if gemm.library_for(m, n, k) == "mkl":
        out = paddle.matmul(x2, weight) if bias is None else paddle.addmm(bias, x2, weight)  # (M, out)
    else:
        out = gemm.matmul(x2, weight)  # (M, out)
        if bias is not None:
            out = out + bias
    return out.reshape([*x.shape[:-1], n])


class _GemmLinear(PyLayer):
    """x @ weight (+ bias) with every product through the GEMM layer and the bias gradient as a GEMM."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        ctx.save_for_backward(x, weight)
        # Paddle requires None for an input with stop_gradient (a frozen layer under a trainable adapter
        # or a frozen layer below trainable ones); it also saves those GEMMs.
        ctx.needs = (not x.stop_gradient, not weight.stop_gradient, bias is not None and not bias.stop_gradient)
        ctx.has_bias = bias is not None
        with paddle.no_grad():
            return _addmm(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        need_x, need_w, need_b = ctx.needs
        g2, x2 = grad.reshape([-1, grad.shape[-1]]), x.reshape([-1, x.shape[-1]])  # (M, out), (M, in)
        with paddle.no_grad():
            dx = gemm.matmul(g2, weight, transpose_b=True).reshape(x.shape) if need_x else None  # (..., in)
            dw = gemm.matmul(x2, g2, transpose_a=True) if need_w else None  # (in, out)
        if not ctx.has_bias:
            return dx, dw
        return dx, dw, sum_rows(g2) if need_b else None


@register("linear", "gemm_grad")
def linear_gemm_grad(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None) -> paddle.Tensor:
    """Same as ``linear_eager``; the bias gradient is a GEMM instead of a broadcast reduction, the forward is
    ``addmm`` / ``matmul`` (on CPU ~15-30% faster than ``F.linear``: 47 vs 70 us for a decode step's
    (8, 256) x (256, 768) with bias, 2.1 vs 2.5 ms for (1024, 256) x (256, 768)), and every product goes
    through the GEMM layer's library for its shape class (ops/gemm.py)."""
    trainable = not (x.stop_gradient and weight.stop_gradient and (bias is None or bias.stop_gradient))
    if not (paddle.is_grad_enabled() and trainable):
        return _addmm(x, weight, bias)  # no backward (inference, frozen layers)
    if bias is None and not gemm.uses_onednn():
        return paddle.matmul(x, weight)  # Paddle's own backward is as fast when no bias gradient is needed
    if bias is None:
        return _GemmLinear.apply(x, weight)
    return _GemmLinear.apply(x, weight, bias)


def linear(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor | None = None) -> paddle.Tensor:
    return get("linear")(x, weight, bias)
