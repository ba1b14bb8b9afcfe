"""RMSNorm and LayerNorm with fp32 statistics."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

from paddlemix_r1.ops import cpu_ext
from paddlemix_r1.ops.broadcast import expand_to
from paddlemix_r1.ops.dispatch import get, register
from paddlemix_r1.ops.gpu_kernels import kernel
from paddlemix_r1.ops.linear import sum_rows
from paddlemix_r1.ops.precision import fp32_region


@register("rms_norm", "eager")
def rms_norm_eager(x: paddle.Tensor, weight: paddle.Tensor | None, eps: float) -> paddle.Tensor:
    """weight * (x / sqrt(mean(x^2) + eps)); statistics in fp32, cast back before the weight (as HF).
    ``weight`` None: the normalized x alone (the weight folded into the next projection)."""
    fp32 = x.dtype == paddle.float32
    with fp32_region():
        xf = x if fp32 else x.astype("float32")  # skip no-op casts: the decode step is op-count bound
        var = (xf * xf).mean(axis=-1, keepdim=True)  # (..., 1); x*x, as Paddle's CPU pow is ~40x slower
        normed = xf * expand_to(paddle.rsqrt(var + eps), xf.shape)
    normed = normed if fp32 else normed.astype(x.dtype)
    return normed if weight is None else expand_to(weight, x.shape) * normed


class _RMSNormFP32(PyLayer):
    """fp32 RMSNorm with a hand-written backward: dx = r * (gw - xr * mean(gw * xr)), dw = sum_rows(g * xr)
    with r = rsqrt(mean(x^2) + eps), xr = x * r, gw = g * w."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        r = paddle.rsqrt((x * x).mean(axis=-1, keepdim=True) + eps)  # (..., 1)
        xr = x * expand_to(r, x.shape)  # (..., D)
        ctx.save_for_backward(xr, r, weight)
        # Paddle requires None for an input with stop_gradient (a frozen norm under trainable LoRA adapters)
        ctx.needs = (not x.stop_gradient, not weight.stop_gradient)
        return xr * expand_to(weight, x.shape)

    @staticmethod
    def backward(ctx, grad):
        xr, r, weight = ctx.saved_tensor()
        need_x, need_w = ctx.needs
        dx = None
        if need_x:
            gw = grad * expand_to(weight, grad.shape)  # (..., D)
            dx = expand_to(r, gw.shape) * (gw - xr * expand_to((gw * xr).mean(axis=-1, keepdim=True), gw.shape))
        return dx, sum_rows(grad * xr) if need_w else None


@register("rms_norm", "gemm_grad")
def rms_norm_gemm_grad(x: paddle.Tensor, weight: paddle.Tensor | None, eps: float) -> paddle.Tensor:
    """``rms_norm_eager`` with the backward written out: the weight gradient is a GEMM instead of
    Paddle's slow CPU reduction over leading axes (fp32 only; other dtypes take the eager path)."""
    if weight is None or not paddle.is_grad_enabled() or (x.stop_gradient and weight.stop_gradient):
        return rms_norm_eager(x, weight, eps)
    if x.dtype != paddle.float32 or weight.dtype != paddle.float32:
        return rms_norm_eager(x, weight, eps)
    return _RMSNormFP32.apply(x, weight, eps)


@register("rms_norm", "cpu_kernel")
def rms_norm_cpu_kernel(x: paddle.Tensor, weight: paddle.Tensor | None, eps: float) -> paddle.Tensor:
    """``rms_norm_eager`` by the compiled CPU kernel, forward and one-pass backward (fp32/fp64, inputs of
    ``cpu_ext.MIN_NUMEL`` elements or more); other inputs, and ``weight`` None, take ``rms_norm_gemm_grad``."""
    if weight is None or not cpu_ext.takes("rms_norm", x, weight):
        return rms_norm_gemm_grad(x, weight, eps)
    return cpu_ext.kernels().rms_norm_cpu(x, weight, eps)[0]


@register("rms_norm", "fused")
def rms_norm_fused(x: paddle.Tensor, weight: paddle.Tensor | None, eps: float) -> paddle.Tensor:
    """Paddle's fused RMSNorm (3.3: ``_C_ops.fused_rms_norm_quant``, returns (out, residual_out, inv_var)). It
    multiplies by the weight in fp32 and rounds once, where HF rounds the normalized x first (bf16-ulp apart)."""
    if weight is None:
        return rms_norm_eager(x, None, eps)
    out = kernel("fused_rms_norm")(x, weight, None, eps, begin_norm_axis=x.ndim - 1)
    return out[0] if isinstance(out, (tuple, list)) else out


def rms_norm(x: paddle.Tensor, weight: paddle.Tensor | None, eps: float = 1e-6) -> paddle.Tensor:
    return get("rms_norm")(x, weight, eps)


@register("layer_norm", "eager")
def layer_norm_eager(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, eps: float) -> paddle.Tensor:
    """LayerNorm over the last axis, computed in fp32 (Paddle's kernel, forward and backward)."""
    with fp32_region():
        out = F.layer_norm(x.astype("float32"), x.shape[-1:], weight.astype("float32"), bias.astype("float32"), eps)
    return out.astype(x.dtype)


class _LayerNormFP32(PyLayer):
    """Paddle's LayerNorm forward with the backward written out (Paddle's CPU layer_norm_grad took 3.7 ms
    on (1024, 256), this 2.1 ms): with xh = (x - mean) * r, r = rsqrt(var + eps), gw = g * w,
    dx = r * (gw - mean(gw) - xh * mean(gw * xh)), dw = sum_rows(g * xh), db = sum_rows(g)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        xc = x - expand_to(x.mean(axis=-1, keepdim=True), x.shape)  # (..., D)
        r = expand_to(paddle.rsqrt((xc * xc).mean(axis=-1, keepdim=True) + ctx.eps), x.shape)
        xh = xc * r
        gw = grad * expand_to(weight, grad.shape)
        m1 = expand_to(gw.mean(axis=-1, keepdim=True), gw.shape)
        m2 = expand_to((gw * xh).mean(axis=-1, keepdim=True), gw.shape)
        return r * (gw - m1 - xh * m2), sum_rows(grad * xh), sum_rows(grad)


@register("layer_norm", "gemm_grad")
def layer_norm_gemm_grad(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, eps: float) -> paddle.Tensor:
    """``layer_norm_eager`` with the backward written out (fp32 only; other dtypes take the eager path)."""
    no_backward = not paddle.is_grad_enabled() or (x.stop_gradient and weight.stop_gradient and bias.stop_gradient)
    if no_backward or not (x.dtype == weight.dtype == bias.dtype == paddle.float32):
        return layer_norm_eager(x, weight, bias, eps)
    return _LayerNormFP32.apply(x, weight, bias, eps)


@register("layer_norm", "cpu_kernel")
def layer_norm_cpu_kernel(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, eps: float) -> paddle.Tensor:
    """``layer_norm_eager`` by the compiled CPU kernel, forward and one-pass backward (fp32/fp64, inputs of
    ``cpu_ext.MIN_NUMEL`` elements or more); other inputs take ``layer_norm_gemm_grad``."""
    if not cpu_ext.takes("layer_norm", x, weight, bias):
        return layer_norm_gemm_grad(x, weight, bias, eps)
    return cpu_ext.kernels().layer_norm_cpu(x, weight, bias, eps)[0]


def layer_norm(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, eps: float = 1e-6) -> paddle.Tensor:
    return get("layer_norm")(x, weight, bias, eps)
