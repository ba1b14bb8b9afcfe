"""softmax and log-softmax.

softmax: Paddle's kernel (the reference, and the GPU choice) or, on CPU, the compiled multi-threaded
kernel of ``ops/cpu_ext.py`` (3-4x faster; last axis, fp32/fp64). log-softmax: Paddle's CPU
``log_softmax`` kernel is ~200x slower than its ``softmax`` (63 ms vs 0.3 ms for an (8, 8192) input
on this machine), so the eager path composes it from max/exp/sum. categorical: a sampling step's draw (inverse
CDF at given uniforms) and the drawn token's log-probability, as ops or as one compiled call on CPU."""

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


@register("categorical", "eager")
def categorical_eager(logits: paddle.Tensor, draw: paddle.Tensor, u: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """One token per row drawn from softmax(draw) by inverse CDF at the uniforms ``u``, and its log-probability
    under softmax(logits). logits, draw (N, V) fp32 (``draw`` may be ``logits``, or a filtered copy with -inf);
    u (N,) in [0, 1). -> tokens (N,) int64, logp (N,)."""
    # in float64: a float32 running sum over 151936 terms errs by more than one token's share of the mass
    cdf = paddle.cumsum(softmax(draw).astype("float64"), axis=-1)  # (N, V)
    target = u.astype("float64").unsqueeze(-1) * cdf[:, -1:]  # (N, 1)
    tokens = paddle.searchsorted(cdf, target, right=True).clip(max=cdf.shape[-1] - 1)  # (N, 1)
    logp = paddle.take_along_axis(log_softmax(logits), tokens, axis=-1)  # (N, 1)
    return tokens.reshape([-1]).astype("int64"), logp.reshape([-1])


@register("categorical", "cpu_kernel")
def categorical_cpu_kernel(logits: paddle.Tensor, draw: paddle.Tensor, u: paddle.Tensor
                           ) -> tuple[paddle.Tensor, paddle.Tensor]:
    """``categorical_eager`` in one compiled call of two passes per row (fp32/fp64 CPU tensors; else eager): at
    the real vocabulary (16 x 151936) 14 ms of softmax + multinomial + gather + log per sampling step."""
    if not cpu_ext.takes("categorical", logits, draw, u):
        return categorical_eager(logits, draw, u)
    tokens, logp = cpu_ext.kernels().categorical_sample_cpu(logits, draw, u, draw is logits)
    return tokens, logp


def categorical(logits: paddle.Tensor, draw: paddle.Tensor, u: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    return get("categorical")(logits, draw, u)

