"""RMSNorm and LayerNorm with fp32 statistics."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from paddlemix_r1.ops.dispatch import get, register
from paddlemix_r1.ops.precision import fp32_region


@register("rms_norm", "eager")
def rms_norm_eager(x: paddle.Tensor, weight: paddle.Tensor, eps: float) -> paddle.Tensor:
    """weight * (x / sqrt(mean(x^2) + eps)); statistics in fp32, cast back before the weight (as HF)."""
    fp32 = x.dtype == paddle.float32
    with fp32_region():
        xf = x if fp32 else x.astype("float32")  # skip no-op casts: the decode step is op-count bound
        var = (xf * xf).mean(axis=-1, keepdim=True)  # (..., 1); x*x, as Paddle's CPU pow is ~40x slower
        normed = xf * paddle.rsqrt(var + eps)
    return weight * (normed if fp32 else normed.astype(x.dtype))


@register("rms_norm", "fused")
def rms_norm_fused(x: paddle.Tensor, weight: paddle.Tensor, eps: float) -> paddle.Tensor:
    from paddle.incubate.nn.functional import fused_rms_norm

    out = fused_rms_norm(x, weight, None, eps, begin_norm_axis=x.ndim - 1)
    return out[0] if isinstance(out, (tuple, list)) else out


def rms_norm(x: paddle.Tensor, weight: paddle.Tensor, eps: float = 1e-6) -> paddle.Tensor:
    return get("rms_norm")(x, weight, eps)


def layer_norm(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, eps: float = 1e-6) -> paddle.Tensor:
    """LayerNorm over the last axis, computed in fp32."""
    with fp32_region():
        out = F.layer_norm(x.astype("float32"), x.shape[-1:], weight.astype("float32"), bias.astype("float32"), eps)
    return out.astype(x.dtype)
