"""Attention: padded causal (decoder, with KV cache) and block-diagonal variable length (vision).

Queries come as (B, L, heads, head_dim); keys/values come head-first (kv_heads, B, L, head_dim), the
KV-cache layout, so decode steps read the cache without a transpose. Softmax in fp32.
"""

from __future__ import annotations

import numpy as np
import paddle

from paddlemix_r1.ops import cpu_ext
from paddlemix_r1.ops.broadcast import expand_to
from paddlemix_r1.ops.dispatch import get, register
from paddlemix_r1.ops.gpu_kernels import flash_attention_runs, kernel
from paddlemix_r1.ops.precision import fp32_region
from paddlemix_r1.ops.rotary import apply_rotary, apply_rotary_eager
from paddlemix_r1.ops.softmax import softmax

NEG_INF = -1e30  # additive mask value; finite so a fully masked (pad) row stays finite


def causal_padding_mask(attention_mask: paddle.Tensor, q_len: int, dtype: str = "float32") -> paddle.Tensor:
    """Additive mask (B, 1, q_len, K) for the last ``q_len`` of K key positions.

    attention_mask: (B, K) 1 = token, 0 = padding. Query i (absolute K - q_len + i) sees key j when
    j <= its absolute position and key j is not padding.
    """
    k_len = attention_mask.shape[-1]
    keys = attention_mask.astype(dtype)  # (B, K) 1 / 0
    if q_len == 1:  # a decode step: the causal part allows every cached key
        return ((keys - 1.0) * -NEG_INF).reshape([keys.shape[0], 1, 1, k_len])  # 0 or NEG_INF
    q_pos = paddle.arange(k_len - q_len, k_len).unsqueeze(-1)  # (q, 1)
    k_pos = paddle.arange(k_len).unsqueeze(0)  # (1, K)
    causal = (k_pos <= q_pos).astype(dtype)  # (q, K)
    allowed = causal.unsqueeze(0) * keys.unsqueeze(1)  # (B, q, K)
    return ((allowed - 1.0) * -NEG_INF).unsqueeze(1)  # (B, 1, q, K): 0 where allowed, NEG_INF elsewhere


@register("attention", "eager")
def attention_eager(
    q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: paddle.Tensor | None, scale: float
) -> paddle.Tensor:
    """q: (B, Lq, nh, hd); k, v: (nkv, B, Lk, hd), head-first (the KV-cache layout), nh % nkv == 0 (GQA);
    mask additive (B, 1, Lq, Lk) (or (B, 1, 1, Lk) for key-only masks) or None. Returns (B, Lq, nh, hd).

    The g = nh / nkv query heads sharing a key head are stacked as rows of one matmul, queries laid out
    (nkv, B, g * Lq, hd): no batch axis is broadcast (Paddle's CPU batched matmul is ~3x slower when it
    broadcasts one, and its backward then reduces over it: attention fwd+bwd at B=16, Lq=64, Lk=196,
    16 heads over 8 key heads took 27.8 ms with keys broadcast over g, 20.9 ms so). The mask is
    expanded to the scores' shape before the add (see ops/broadcast.py).
    """
    b, lq, nh, hd = q.shape
    nkv, lk = k.shape[0], k.shape[2]
    g = nh // nkv
    # Scale the queries, not the (larger) score matrix.
    qs = q if scale == 1.0 else q * scale
    qt = qs.reshape([b, lq, nkv, g, hd]).transpose([2, 0, 3, 1, 4]).reshape([nkv, b, g * lq, hd])
    with fp32_region():
        scores = paddle.matmul(qt, k, transpose_y=True)  # (nkv, B, g*Lq, Lk)
        if scores.dtype != paddle.float32:
            scores = scores.astype("float32")
        if mask is not None:
            scores = scores.reshape([nkv, b, g, lq, lk])
            scores = (scores + expand_to(mask, scores.shape)).reshape([nkv, b, g * lq, lk])  # mask (B, 1, Lq|1, Lk)
        probs = softmax(scores)
        if probs.dtype != q.dtype:
            probs = probs.astype(q.dtype)
    out = paddle.matmul(probs, v).reshape([nkv, b, g, lq, hd])  # (nkv, B, g, Lq, hd)
    return out.transpose([1, 3, 0, 2, 4]).reshape([b, lq, nh, hd])


@register("attention", "fused")
def attention_fused(
    q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: paddle.Tensor | None, scale: float
) -> paddle.Tensor:
    """Paddle's ``scaled_dot_product_attention`` (GQA native, additive mask (B, 1, Lq, Lk) in q's dtype).

    Two details of Paddle 3.3's sdpa.py decide whether this trains correctly and fast:
    - ``scale``: any non-None value disables the flash branch (``check_scale_is_None``: "Paddle's FAV2 does
      not support scale parameter"; 3.0-3.2 have no such argument at all). None means hd**-0.5; another
      scale is folded into q.
    - ``training``: passed to the kernels as ``is_test = not training``. The memory-efficient kernel then
      skips writing the log-sum-exp its backward reads (memory_efficient_attention.cu), so gradients
      would be garbage. It is True whenever gradients are recorded.
    """
    default = q.shape[-1] ** -0.5
    if abs(scale / default - 1.0) > 1e-12:
        q = q * (scale / default)
    kt, vt = k.transpose([1, 2, 0, 3]), v.transpose([1, 2, 0, 3])  # (B, Lk, nkv, hd): Paddle's layout
    return kernel("scaled_dot_product_attention")(
        q, kt, vt, attn_mask=None if mask is None else mask.astype(q.dtype), dropout_p=0.0, is_causal=False,
        training=paddle.is_grad_enabled(),
    )  # (B, Lq, nh, hd)


def attention(
    q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: paddle.Tensor | None, scale: float
) -> paddle.Tensor:
    return get("attention")(q, k, v, mask, scale)


@register("grouped_decode_attention", "eager")
def grouped_decode_attention_eager(
    q: paddle.Tensor, k_prompt: paddle.Tensor, v_prompt: paddle.Tensor, k_new: paddle.Tensor,
    v_new: paddle.Tensor, mask: paddle.Tensor, scale: float,
) -> paddle.Tensor:
    """One decode step for N = B*G rows whose G consecutive rows share one prompt's keys/values.

    q (N, 1, nh, hd); k_prompt, v_prompt (nkv, B, L, hd): each prompt ONCE; k_new, v_new (nkv, N, T, hd):
    the generated tokens' keys/values per row; mask additive (N, 1, L + T) over [prompt | generated]
    keys of each row, or already expanded to (nkv, N, g, L + T). Returns (N, 1, nh, hd); the same numbers as ``attention_eager`` over the prompt
    keys repeated G times (tested), while reading the prompt cache once instead of G times.

    Queries are laid out (nkv, N, g, hd) with g = nh / nkv: against the prompt, a prompt's G*g queries
    are the rows of one matmul; against the generated tokens, each row's g queries are (no batch
    broadcasting: Paddle's batched matmul is ~3x slower when it broadcasts a batch axis).
    """
    n, _, nh, hd = q.shape
    nkv, b, length = k_prompt.shape[0], k_prompt.shape[1], k_prompt.shape[2]
    rows, g = n // b, nh // nkv
    qs = q if scale == 1.0 else q * scale
    qt = qs.reshape([n, nkv, g, hd]).transpose([1, 0, 2, 3])  # (nkv, N, g, hd) = (nkv, B, G, g, hd)
    with fp32_region():
        s_p = paddle.matmul(qt.reshape([nkv, b, rows * g, hd]), k_prompt, transpose_y=True)  # (nkv, B, G*g, L)
        s_n = paddle.matmul(qt, k_new, transpose_y=True)  # (nkv, N, g, T)
        scores = paddle.concat([s_p.reshape([nkv, n, g, length]), s_n], axis=-1)  # (nkv, N, g, K)
        if scores.dtype != paddle.float32:
            scores = scores.astype("float32")
        m = mask if mask.ndim == 4 else mask.unsqueeze(0).expand(scores.shape)  # (N, 1, K) -> (nkv, N, g, K)
        probs = softmax(scores + m)
        if probs.dtype != q.dtype:
            probs = probs.astype(q.dtype)
    p_p, p_n = paddle.split(probs, [length, k_new.shape[2]], axis=-1)
    out = paddle.matmul(p_p.reshape([nkv, b, rows * g, length]), v_prompt).reshape([nkv, n, g, hd])
    out = out + paddle.matmul(p_n, v_new)  # (nkv, N, g, hd)
    return out.transpose([1, 0, 2, 3]).reshape([n, 1, nh, hd])


@register("grouped_decode_attention", "cpu_kernel")
def grouped_decode_attention_cpu_kernel(
    q: paddle.Tensor, k_prompt: paddle.Tensor, v_prompt: paddle.Tensor, k_new: paddle.Tensor,
    v_new: paddle.Tensor, mask: paddle.Tensor, scale: float,
) -> paddle.Tensor:
    """``grouped_decode_attention_eager`` as one compiled CPU op (``csrc/attention_cpu.cc``): per key head and
    prompt, one GEMM against the prompt's keys and one against its values, the rows' own slots in place,
    the softmax between; slots the mask closes are not multiplied (a step costs the slots written so far).
    No backward: where a gradient is wanted, or for other dtypes, the eager path runs."""
    tensors = (q, k_prompt, v_prompt, k_new, v_new)
    if (paddle.is_grad_enabled() and not all(t.stop_gradient for t in tensors)) or not cpu_ext.takes(
            "grouped_decode_attention", *tensors, mask):
        return grouped_decode_attention_eager(q, k_prompt, v_prompt, k_new, v_new, mask, scale)
    return cpu_ext.kernels().grouped_decode_attention_cpu(q, k_prompt, v_prompt, k_new, v_new, mask, float(scale))


def grouped_decode_attention(
    q: paddle.Tensor, k_prompt: paddle.Tensor, v_prompt: paddle.Tensor, k_new: paddle.Tensor,
    v_new: paddle.Tensor, mask: paddle.Tensor, scale: float,
) -> paddle.Tensor:
    return get("grouped_decode_attention")(q, k_prompt, v_prompt, k_new, v_new, mask, scale)


def _segment_layout(cu_seqlens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gather index (S, M) and validity (S, M) that lay N packed tokens out as S padded segments."""
    lens = np.diff(cu_seqlens)  # (S,)
    max_len = int(lens.max())
    offs = np.arange(max_len)[None, :]  # (1, M)
    valid = offs < lens[:, None]  # (S, M)
    index = np.where(valid, cu_seqlens[:-1, None] + offs, 0)  # (S, M)
    return index, valid


@register("varlen_attention", "eager")
def varlen_attention_eager(
    q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, cu_seqlens: np.ndarray, scale: float
) -> paddle.Tensor:
    """Block-diagonal attention over packed segments.

    q, k, v: (N, nh, hd); cu_seqlens: (S + 1,) host int array of segment boundaries.
    Segments are gathered into a padded (S, M) batch, so cost is S * M^2, not N^2.
    """
    cu = np.asarray(cu_seqlens, dtype="int64")
    lens = np.diff(cu)
    if (lens == lens[0]).all():  # equal segments (one image, or windows that tile the grid): a reshape
        s, m = len(lens), int(lens[0])
        qs, ks, vs = (t.reshape([s, m, t.shape[1], t.shape[2]]) for t in (q, k, v))  # (S, M, nh, hd)
        out = attention_eager(qs, ks.transpose([2, 0, 1, 3]), vs.transpose([2, 0, 1, 3]), None, scale)
        return out.reshape([s * m, q.shape[1], q.shape[2]])
    index, valid = _segment_layout(cu)
    s, m = index.shape
    flat = paddle.to_tensor(index.reshape(-1))
    qs, ks, vs = (paddle.gather(t, flat).reshape([s, m, t.shape[1], t.shape[2]]) for t in (q, k, v))  # (S, M, nh, hd)
    mask = None
    if not valid.all():
        key_ok = paddle.to_tensor(valid)[:, None, None, :]  # (S, 1, 1, M)
        mask = paddle.where(key_ok, paddle.zeros([], "float32"), paddle.full([], NEG_INF, "float32"))
    out = attention_eager(qs, ks.transpose([2, 0, 1, 3]), vs.transpose([2, 0, 1, 3]), mask, scale)  # (S, M, nh, hd)
    out = out.reshape([s * m, q.shape[1], q.shape[2]])
    if valid.all():
        return out
    return paddle.gather(out, paddle.to_tensor(np.flatnonzero(valid.reshape(-1))))  # (N, nh, hd)


@register("varlen_attention", "fused")
def varlen_attention_fused(
    q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, cu_seqlens: np.ndarray, scale: float
) -> paddle.Tensor:
    """Paddle's ``flash_attn_unpadded`` where it runs: bfloat16/float16 (its only registered dtypes), head_dim
    a multiple of 8 up to 256, sm8x/sm90 (``gpu_kernels.flash_attention_runs``). Anything else, float32
    included, takes the eager path: exact, at the cost of keeping each segment's (heads, M, M) scores."""
    dtype = str(q.dtype).replace("paddle.", "")
    if not flash_attention_runs(dtype, q.shape[-1]):
        return varlen_attention_eager(q, k, v, cu_seqlens, scale)
    cu = paddle.to_tensor(np.asarray(cu_seqlens, dtype="int32"))  # (S + 1,) int32, as the kernel requires
    max_len = int(np.diff(cu_seqlens).max())
    out, _ = kernel("flash_attn_unpadded")(q, k, v, cu, cu, max_len, max_len, scale, dropout=0.0, causal=False,
                                           training=paddle.is_grad_enabled())
    return out  # (N, nh, hd)


def varlen_attention(
    q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, cu_seqlens: np.ndarray, scale: float
) -> paddle.Tensor:
    return get("varlen_attention")(q, k, v, cu_seqlens, scale)


@register("vision_attention", "eager")
def vision_attention_eager(
    qkv: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, cu_seqlens: np.ndarray, scale: float
) -> paddle.Tensor:
    """The vision tower's attention: rotary on q and k, then ``varlen_attention`` within each segment.

    qkv: (N, 3, nh, hd) from the qkv projection; cos, sin: the (1, N, 2 nh, hd) tables of
    ``vision_rotary_tables`` (every head's row the same); cu_seqlens: (S + 1,) host int array.
    Returns (N, nh, hd).
    """
    q, k, v = paddle.unbind(qkv, axis=1)  # (N, nh, hd) each; unbind's backward is one stack, not 3 zero-fills
    q, k = apply_rotary(q.unsqueeze(0), k.unsqueeze(0), cos, sin)
    return varlen_attention(q[0], k[0], v, cu_seqlens, scale)


@register("vision_attention", "fused")
def vision_attention_fused(
    qkv: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, cu_seqlens: np.ndarray, scale: float
) -> paddle.Tensor:
    """GPU: the rotary in fp32 by the eager path (as HF and PaddleMIX rotate the vision q/k in fp32; the fused
    rotary kernel would round the tables to bf16), then ``varlen_attention`` (flash where it runs)."""
    q, k, v = paddle.unbind(qkv, axis=1)  # (N, nh, hd) each
    q, k = apply_rotary_eager(q.unsqueeze(0), k.unsqueeze(0), cos, sin)
    return varlen_attention(q[0], k[0], v, cu_seqlens, scale)


@register("vision_attention", "cpu_kernel")
def vision_attention_cpu_kernel(
    qkv: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, cu_seqlens: np.ndarray, scale: float
) -> paddle.Tensor:
    """``vision_attention_eager`` as one compiled CPU op (``csrc/attention_cpu.cc``): the rotary, each
    segment's heads attended in place in the packed layout with the softmax fused between MKL GEMMs, and
    the whole backward, so none of the unbind / rotary / transpose ops and their gradients run
    (fp32/fp64, ``cpu_ext.MIN_NUMEL`` elements or more; anything else: eager)."""
    if not cpu_ext.takes("vision_attention", qkv, cos, sin):
        return vision_attention_eager(qkv, cos, sin, cu_seqlens, scale)
    cu = paddle.to_tensor(np.asarray(cu_seqlens, dtype="int64"))
    # Without a backward (rollouts, evaluation) nothing is kept: the scores live in a block-sized buffer.
    keep = cpu_ext.MAX_STORED_PROBS if paddle.is_grad_enabled() and not qkv.stop_gradient else 0
    outs = cpu_ext.kernels().vision_attention_cpu(qkv, cos, sin, cu, float(scale), keep)
    return outs[0]  # (N, nh, hd); the others are saved for the backward


def vision_attention(
    qkv: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, cu_seqlens: np.ndarray, scale: float
) -> paddle.Tensor:
    return get("vision_attention")(qkv, cos, sin, cu_seqlens, scale)
