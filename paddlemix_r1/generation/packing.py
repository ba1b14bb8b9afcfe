"""Packed decode layers: the rollout's copy of a decoder with fewer, larger GEMMs (the CPU decode
step is op-count bound).

``pack_decoder(decoder)`` reads the decoder's weights once and returns a ``PackedDecoder``: per layer,
q/k/v computed with one GEMM and gate/up with another, from concatenated weights. The same GEMMs also
absorb what surrounds them linearly: the RMSNorm weight before each ((normed * w) @ W == normed @
(w[:, None] * W)), the attention scale (rotary is linear, so rotating scaled queries equals scaling
rotated ones), and, with the eager fp32 rotary, rotate_half of q and k (a signed permutation of
columns): the rotation is then q * cos + q_rot * sin.

The model itself is never changed: the packed copy is a separate object the engine runs instead of
the decoder's layers (embeddings, final norm and LM head stay the model's). It holds the weights as
they were when it was built (an update, or a LoRA adapter switched on or off afterwards, is not
seen), so the engine builds one per ``generate`` call and drops it at the end.

CPU only (``pack_decoder`` returns None elsewhere): the fold is a CPU op-count optimisation; in bf16 it
would round the folded weights again (sampling from a slightly different model), the copies would cost
device memory next to the policy, and under stage-3 sharding the weights are not whole outside a forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import paddle
import paddle.nn as nn

from paddlemix_r1 import ops
from paddlemix_r1.models.decoder import Decoder, DecoderLayer, PastKeyValues


def _rotate_half_columns(w: paddle.Tensor, head_dim: int) -> paddle.Tensor:
    """Projection columns (..., heads * hd) -> the columns that compute rotate_half of each head's output."""
    r = ops.rotate_half_matrix(head_dim)  # (hd, hd), exact signed permutation
    shape = w.shape
    return paddle.matmul(w.reshape([*shape[:-1], -1, head_dim]), r).reshape(shape)


@dataclass
class PackedLayer:
    """One decoder layer's packed weights; ``o_proj`` and ``down_proj`` are the layer's own modules."""

    qkv: tuple[paddle.Tensor, paddle.Tensor]  # (H, cols), (cols,): [q k | rotate_half(q k) |] v, norm + scale folded
    rotate_half: bool  # the qkv columns also give rotate_half(q), rotate_half(k)
    gate_up: tuple[paddle.Tensor, paddle.Tensor | None]  # (H, 2 I), post-attention norm folded
    o_proj: nn.Layer
    down_proj: nn.Layer
    nh: int
    nkv: int
    hd: int
    eps_in: float
    eps_post: float

    @classmethod
    def from_layer(cls, layer: DecoderLayer) -> PackedLayer:
        a, m = layer.self_attn, layer.mlp
        w_in = layer.input_layernorm.weight.unsqueeze(-1)  # (H, 1)
        # effective weights: an active LoRA adapter's delta is folded in with the rest (models/lora.py)
        wq, bq = a.q_proj.effective_weight() * a.scale, a.q_proj.bias * a.scale
        wk = a.k_proj.effective_weight()
        fold_rot = ops.implementation("rotary") == "eager" and wq.dtype == paddle.float32
        cols = [wq, wk]
        bias = [bq, a.k_proj.bias]
        if fold_rot:
            cols += [_rotate_half_columns(wq, a.hd), _rotate_half_columns(wk, a.hd)]
            bias += [_rotate_half_columns(bq, a.hd), _rotate_half_columns(a.k_proj.bias, a.hd)]
        qkv = (w_in * paddle.concat([*cols, a.v_proj.effective_weight()], axis=1), paddle.concat([*bias, a.v_proj.bias]))
        gate_bias = None if m.gate_proj.bias is None else paddle.concat([m.gate_proj.bias, m.up_proj.bias])
        w_post = layer.post_attention_layernorm.weight.unsqueeze(-1)  # (H, 1)
        gate_up = paddle.concat([m.gate_proj.effective_weight(), m.up_proj.effective_weight()], axis=1)
        return cls(qkv, fold_rot, (w_post * gate_up, gate_bias), a.o_proj, m.down_proj, a.nh, a.nkv, a.hd,
                   layer.input_layernorm.eps, layer.post_attention_layernorm.eps)

    def __call__(self, x: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, mask: paddle.Tensor,
                 cache: PastKeyValues | None, layer_idx: int) -> paddle.Tensor:
        """x (B, L, H) -> (B, L, H), as ``DecoderLayer.forward``'s first output."""
        b, length, _ = x.shape
        h = ops.rms_norm(x, None, self.eps_in)  # the norm's weight is folded into qkv
        if self.rotate_half:  # one GEMM gives [q k | rotate_half(q k) | v]
            qk_cols = (self.nh + self.nkv) * self.hd
            qk, qk_rot, v = paddle.split(ops.linear(h, *self.qkv), [qk_cols, qk_cols, self.nkv * self.hd], axis=-1)
            shape = [b, length, self.nh + self.nkv, self.hd]
            qk = qk.reshape(shape) * cos + qk_rot.reshape(shape) * sin  # (B, L, nh + nkv, hd); tables expanded
            q, k = paddle.split(qk, [self.nh, self.nkv], axis=2)
            v = v.reshape([b, length, self.nkv, self.hd])
        else:  # one GEMM for q, k, v
            qkv = ops.linear(h, *self.qkv)  # (B, L, (nh + 2 nkv) hd)
            q, k, v = paddle.split(qkv, [self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd], axis=-1)
            q = q.reshape([b, length, self.nh, self.hd])  # (B, L, nh, hd)
            k = k.reshape([b, length, self.nkv, self.hd])  # (B, L, nkv, hd)
            v = v.reshape([b, length, self.nkv, self.hd])
            q, k = ops.apply_rotary(q, k, cos, sin)
        k, v = k.transpose([2, 0, 1, 3]), v.transpose([2, 0, 1, 3])  # (nkv, B, L, hd)
        scale = 1.0  # the packed q weights carry the attention scale
        if cache is not None:
            att = cache.attend(layer_idx, q, k, v, mask, scale)  # (B, L, nh, hd)
        else:
            att = ops.attention(q, k, v, mask, scale)  # (B, L, nh, hd)
        x = x + self.o_proj(att.reshape([b, length, self.nh * self.hd]))
        h = ops.rms_norm(x, None, self.eps_post)  # the norm's weight is folded into gate_up
        return x + self.down_proj(ops.swiglu_packed(ops.linear(h, *self.gate_up)))


class PackedDecoder:
    """A decoder's layers as ``PackedLayer``s; called like ``Decoder.forward`` (no gradients)."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder
        with paddle.no_grad():
            self.layers = [PackedLayer.from_layer(layer) for layer in decoder.layers]

    @paddle.no_grad()
    def __call__(self, embeds: paddle.Tensor, position_ids: paddle.Tensor | None,
                 attention_mask: paddle.Tensor | None, cache: PastKeyValues | None = None,
                 rope: tuple[paddle.Tensor, paddle.Tensor] | None = None) -> paddle.Tensor:
        """embeds (B, L, H) -> final normed hidden states (B, L, H); arguments as ``Decoder.forward``."""
        cos, sin = self.decoder.rope_tables(position_ids) if rope is None else rope  # (B, L, [nh + nkv,] hd)
        if cache is not None:
            mask = cache.step_mask(attention_mask, embeds.shape[1])
        else:
            mask = ops.causal_padding_mask(attention_mask, embeds.shape[1])  # (B, 1, L, K)
        x = embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i)
        if cache is not None:
            cache.advance(embeds.shape[1])
        return self.decoder.norm(x)


def pack_decoder(decoder: Decoder) -> PackedDecoder | None:
    """The packed copy of ``decoder`` on CPU; None on other devices (see the module docstring)."""
    if ops.device_kind() != "cpu":
        return None
    return PackedDecoder(decoder)
