"""Rotary position embeddings: multimodal (M-RoPE) tables for the decoder, 2-D tables for the
vision tower, and the rotation itself (eager reference + Paddle's fused kernel)."""

from __future__ import annotations

import numpy as np
import paddle

from paddlemix_r1.ops.dispatch import get, register
from paddlemix_r1.ops.gpu_kernels import kernel
from paddlemix_r1.ops.precision import fp32_region


def inv_freq(dim: int, theta: float) -> paddle.Tensor:
    """1 / theta^(2i/dim) for i < dim/2, in fp32 (same arithmetic as HF's default rope)."""
    exponents = paddle.arange(0, dim, 2, dtype="float32") / dim  # (dim/2,)
    return 1.0 / (theta**exponents)


def mrope_axis_of_frequency(mrope_section: list[int]) -> np.ndarray:
    """Which position axis (0 temporal, 1 height, 2 width) drives each of the head_dim/2 frequencies.

    HF splits the frequency axis into chunks of ``mrope_section`` and takes chunk i from axis i % 3.
    """
    return np.concatenate([np.full(n, i % 3, dtype="int64") for i, n in enumerate(mrope_section)])


_MROPE_AXIS: dict[tuple, paddle.Tensor] = {}


def _mrope_axis_tensor(mrope_section: tuple[int, ...]) -> paddle.Tensor:
    """``mrope_axis_of_frequency`` as a device tensor, made once per section and device (decode steps reuse it)."""
    key = (mrope_section, paddle.get_device())
    t = _MROPE_AXIS.get(key)
    if t is None:
        t = _MROPE_AXIS[key] = paddle.to_tensor(mrope_axis_of_frequency(list(mrope_section)))
    return t


def mrope_cos_sin(
    position_ids: paddle.Tensor, inv_freq_: paddle.Tensor, mrope_section: list[int]
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """cos/sin tables for M-RoPE.

    position_ids: (3, B, L) int; returns cos, sin: (B, L, head_dim) fp32.
    """
    axis = _mrope_axis_tensor(tuple(mrope_section))  # (hd/2,)
    if int(axis.shape[0]) != int(inv_freq_.shape[0]):
        raise ValueError(f"mrope_section {mrope_section} sums to {axis.shape[0]}, head_dim/2 is {inv_freq_.shape[0]}")
    with fp32_region():
        pos = position_ids.astype("float32").transpose([1, 2, 0])  # (B, L, 3)
        pos = paddle.index_select(pos, axis, axis=-1)  # (B, L, hd/2): the axis each frequency reads
        freqs = pos * inv_freq_  # (B, L, hd/2)
        emb = paddle.concat([freqs, freqs], axis=-1)  # (B, L, hd)
        return emb.cos(), emb.sin()


def vision_cos_sin(hw_ids: paddle.Tensor, inv_freq_: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """2-D rotary tables for vision patches. hw_ids: (N, 2) [h, w]; inv_freq_: (hd/4,). Returns (N, hd) fp32."""
    with fp32_region():
        freqs = hw_ids.astype("float32").unsqueeze(-1) * inv_freq_  # (N, 2, hd/4)
        freqs = freqs.reshape([freqs.shape[0], -1])  # (N, hd/2): [h freqs | w freqs]
        emb = paddle.concat([freqs, freqs], axis=-1)  # (N, hd)
        return emb.cos(), emb.sin()


_ROTATE_HALF: dict[int, paddle.Tensor] = {}


def rotate_half_matrix(dim: int) -> paddle.Tensor:
    """R (dim, dim) with x @ R == rotate_half(x) = [-x2, x1]: a signed permutation, so the product is
    exact in fp32. One matmul replaces chunk/neg/concat (the decode step is op-count bound on CPU)."""
    r = _ROTATE_HALF.get(dim)
    if r is None:
        half = dim // 2
        m = np.zeros((dim, dim), dtype="float32")
        m[np.arange(half) + half, np.arange(half)] = -1.0  # out[:half] = -x[half:]
        m[np.arange(half), np.arange(half) + half] = 1.0  # out[half:] = x[:half]
        r = _ROTATE_HALF[dim] = paddle.to_tensor(m)
    return r


def expand_tables(cos: paddle.Tensor, sin: paddle.Tensor, heads: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    """(B, L, hd) tables -> (B, L, heads, hd), materialized once per forward and shared by all layers.

    Paddle's CPU elementwise kernels are ~6x slower when broadcasting over a middle axis than on
    equal shapes (4.8 ms vs 0.8 ms for (1, 1024, 8, 64) x (1, 1024, 1, 64)), so the rotation gets
    full-size tables. ``heads`` = query heads + key heads (q and k are rotated together).
    """
    b, length, hd = cos.shape
    shape = [b, length, heads, hd]
    return cos.unsqueeze(2).expand(shape), sin.unsqueeze(2).expand(shape)


@register("rotary", "eager")
def apply_rotary_eager(
    q: paddle.Tensor, k: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """q: (B, L, nh, hd), k: (B, L, nkv, hd); cos/sin fp32, (B, L, hd) or from ``expand_tables``
    (B, L, nh + nkv, hd). Rotation in fp32; q and k are rotated together (one concat along heads),
    rotate_half as a matmul.
    """
    nh, dtype = q.shape[2], q.dtype
    with fp32_region():
        c, s = (cos, sin) if cos.ndim == 4 else (cos.unsqueeze(2), sin.unsqueeze(2))  # (B, L, H or 1, hd)
        if q.dtype != paddle.float32:  # cast before the concat: bf16 concat has no CPU gradient kernel
            q, k = q.astype("float32"), k.astype("float32")
        qk = paddle.concat([q, k], axis=2)  # (B, L, nh + nkv, hd)
        out = qk * c + paddle.matmul(qk, rotate_half_matrix(qk.shape[-1])) * s
        # split, not slices: a slice's backward fills a zero tensor of the full size per slice
        q_out, k_out = paddle.split(out, [nh, out.shape[2] - nh], axis=2)
    if dtype != paddle.float32:
        q_out, k_out = q_out.astype(dtype), k_out.astype(dtype)
    return q_out, k_out


@register("rotary", "fused")
def apply_rotary_fused(
    q: paddle.Tensor, k: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Paddle's fused rotary kernel, rotate-half layout (``use_neox_rotary_style=False``), tables cast to q's
    dtype as HF's decoder does. The kernel takes ONE table row per position for the whole batch (sin/cos
    ``[1, seq, 1, hd]``; fused_rope_kernel.cu: "The batch_size and num_heads of sin and cos must be 1"),
    while M-RoPE tables differ per row. Rotation is per token, so the batch is folded into the sequence:
    q (1, B*L, nh, hd) against tables (1, B*L, 1, hd), then unfolded."""
    b, length, nh, hd = q.shape
    nkv = k.shape[2]
    c, s = (cos[:, :, :1], sin[:, :, :1]) if cos.ndim == 4 else (cos.unsqueeze(2), sin.unsqueeze(2))  # (B, L, 1, hd)
    rows = b * length
    c = c.reshape([1, rows, 1, hd]).astype(q.dtype)  # (1, B*L, 1, hd)
    s = s.reshape([1, rows, 1, hd]).astype(q.dtype)
    q_out, k_out, _ = kernel("fused_rotary_position_embedding")(
        q.reshape([1, rows, nh, hd]), k.reshape([1, rows, nkv, hd]), None, sin=s, cos=c, use_neox_rotary_style=False
    )
    return q_out.reshape([b, length, nh, hd]), k_out.reshape([b, length, nkv, hd])


def apply_rotary(
    q: paddle.Tensor, k: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor
) -> tuple[paddle.Tensor, paddle.Tensor]:
    return get("rotary")(q, k, cos, sin)
