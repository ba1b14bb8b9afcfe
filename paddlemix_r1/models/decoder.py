"""The Qwen2 decoder shared by Qwen2-VL, Qwen2.5-VL and the text-only Qwen2 LMs, its KV cache, the
causal-LM wrapper (``CausalLMBase``: decoder + LM head, text positions) and the vision-language wrapper
(``VLModelBase``) that both VL families subclass with their own vision tower.

Parameter names follow the published checkpoints (``model.layers.N.self_attn.q_proj``,
``visual.blocks.N``, ``lm_head``) so loading is a near-straight map (see checkpoint.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import paddle
import paddle.nn as nn

from paddlemix_r1 import ops
from paddlemix_r1.models.config import ModelConfig, TextConfig
from paddlemix_r1.models.rope_index import get_rope_index
from paddlemix_r1.ops.attention import NEG_INF


class RMSNorm(nn.Layer):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = self.create_parameter([dim], default_initializer=nn.initializer.Constant(1.0))
        self.eps = eps
        self.folded = False  # the weight is folded into the next projection (see pack_projections)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return ops.rms_norm(x, None if self.folded else self.weight, self.eps)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, weight (in, out)) computed through ``ops.linear``."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return ops.linear(x, self.weight, self.bias)

    def effective_weight(self) -> paddle.Tensor:
        """The (in, out) matrix this layer applies; code that reads weights outside ``forward``
        (``pack_projections``, the HF export) uses it, so a LoRA delta (models/lora.py) is not lost."""
        return self.weight


class KVCache:
    """Preallocated keys/values for every layer, written at explicit positions.

    k[layer], v[layer]: (n_kv_heads, B, max_len, head_dim), head-first so attention reads them
    without a transpose. ``length`` is how many positions hold data; a forward with the cache
    writes positions [length, length + L) and advances it.
    """

    def __init__(self, num_layers: int, batch: int, max_len: int, n_kv: int, head_dim: int, dtype: str):
        self.k = [paddle.zeros([n_kv, batch, max_len, head_dim], dtype) for _ in range(num_layers)]
        self.v = [paddle.zeros([n_kv, batch, max_len, head_dim], dtype) for _ in range(num_layers)]
        self.length = 0
        self.max_len = max_len

    @property
    def batch(self) -> int:
        return int(self.k[0].shape[1])

    def write(self, layer: int, k: paddle.Tensor, v: paddle.Tensor, kv_len: int | None = None
              ) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Store k, v (nkv, B, L, hd) at [length, length+L); return the first ``kv_len`` positions
        (default length+L) of keys/values, (nkv, B, kv_len, hd). ``kv_len == max_len`` returns the
        whole buffers without a copy: decode steps attend over them with the unused tail masked."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: need {end} positions, allocated {self.max_len}")
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        kv_len = end if kv_len is None else kv_len
        if kv_len == self.max_len:
            return self.k[layer], self.v[layer]
        return self.k[layer][:, :, :kv_len], self.v[layer][:, :, :kv_len]

    def step_mask(self, attention_mask: paddle.Tensor, q_len: int) -> paddle.Tensor:
        """Additive mask (B, 1, q_len, K) for this forward's queries over K = attention_mask's length."""
        return ops.causal_padding_mask(attention_mask, q_len)

    def attend(self, layer: int, q, k, v, mask, scale: float) -> paddle.Tensor:
        """Store this forward's k, v (nkv, B, L, hd) and attend q (B, L, nh, hd) over the cache."""
        k, v = self.write(layer, k, v, kv_len=mask.shape[-1])  # (nkv, B, K, hd), K = mask's key length
        return ops.attention(q, k, v, mask, scale)


class GroupedKVCache:
    """Decode-time cache for N = B*G rows in groups of G that continue one prompt each (group prefix
    sharing): the prompt's keys/values are kept ONCE per prompt, as the prefill wrote them, and only
    the generated tokens' keys/values are stored per row. A decode step reads the prompt cache once per
    prompt instead of G times (``ops.grouped_decode_attention``); on CPU, the expanded cache's memory
    traffic slowed every op of the step.

    Every row writes its t-th generated token at the same slot t (the rollout's loop), so the key mask
    is the prompt's padding plus "slot already written"; it is built here, once per step.
    """

    def __init__(self, prefill: KVCache, prompt_mask: paddle.Tensor, group_size: int, max_new_tokens: int,
                 num_heads: int):
        self.k_prompt, self.v_prompt = prefill.k, prefill.v  # per layer (nkv, B, L, hd)
        nkv, b, length, hd = prefill.k[0].shape
        if prefill.length != length:
            raise ValueError(f"prefill cache holds {prefill.length} of {length} positions; allocate it at the prompt length")
        n, t = b * group_size, max_new_tokens
        dtype = prefill.k[0].dtype
        self.k_new = [paddle.zeros([nkv, n, t, hd], dtype) for _ in prefill.k]
        self.v_new = [paddle.zeros([nkv, n, t, hd], dtype) for _ in prefill.v]
        rows_mask = paddle.repeat_interleave(prompt_mask, group_size, axis=0)  # (N, L) 1 token, 0 padding
        self._prompt_add = ops.causal_padding_mask(rows_mask, 1).reshape([n, 1, length])  # (N, 1, L): 0 or NEG_INF
        self._new_add = paddle.full([n, 1, t], NEG_INF, "float32")  # slots not yet written
        self.prompt_length, self.length, self.slots = length, length, t
        # each step's mask is expanded once to the scores' (nkv, N, g, K), not in every layer
        self._score_shape = [nkv, n, num_heads // nkv, length + t]

    def step_mask(self, attention_mask: paddle.Tensor | None, q_len: int) -> paddle.Tensor:
        """(nkv, N, g, L + T) additive over [prompt | generated slots] for the token written at slot
        length - L. ``attention_mask`` is not needed (see the class docstring)."""
        if q_len != 1:
            raise ValueError(f"GroupedKVCache decodes one token per row at a time, got {q_len}")
        slot = self.length - self.prompt_length
        if slot >= self.slots:
            raise ValueError(f"KV cache overflow: slot {slot}, allocated {self.slots}")
        self._new_add[:, :, slot] = 0.0
        mask = paddle.concat([self._prompt_add, self._new_add], axis=-1)  # (N, 1, K)
        return mask.unsqueeze(0).expand(self._score_shape)

    def attend(self, layer: int, q, k, v, mask, scale: float) -> paddle.Tensor:
        """k, v (nkv, N, 1, hd) of this step's tokens -> their slot; q (N, 1, nh, hd) attends over the
        prompt (shared) and the generated slots (own)."""
        slot = self.length - self.prompt_length
        self.k_new[layer][:, :, slot:slot + 1] = k
        self.v_new[layer][:, :, slot:slot + 1] = v
        return ops.grouped_decode_attention(q, self.k_prompt[layer], self.v_prompt[layer], self.k_new[layer],
                                            self.v_new[layer], mask, scale)


class Attention(nn.Layer):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = Linear(cfg.hidden_size, self.nh * self.hd)
        self.k_proj = Linear(cfg.hidden_size, self.nkv * self.hd)
        self.v_proj = Linear(cfg.hidden_size, self.nkv * self.hd)
        self.o_proj = Linear(self.nh * self.hd, cfg.hidden_size, bias_attr=False)
        self.scale = self.hd**-0.5
        self.packed: tuple[paddle.Tensor, paddle.Tensor] | None = None  # see pack_projections
        self.packed_rotate_half = False  # packed weights also give rotate_half(q), rotate_half(k)

    def forward(self, x, cos, sin, mask, cache: KVCache | GroupedKVCache | None, layer_idx: int, prefix=None,
                return_kv=False):
        """``prefix`` (k, v), each (nkv, B, P, hd): keys/values of earlier positions computed elsewhere
        (a shared prompt) that this call's queries attend to before their own. ``return_kv``: also
        return this call's (k, v)."""
        b, length, _ = x.shape
        if self.packed_rotate_half:  # one GEMM gives [q k | rotate_half(q k) | v] (rollout, CPU)
            qk_cols = (self.nh + self.nkv) * self.hd
            qk, qk_rot, v = paddle.split(ops.linear(x, *self.packed), [qk_cols, qk_cols, self.nkv * self.hd], axis=-1)
            shape = [b, length, self.nh + self.nkv, self.hd]
            qk = qk.reshape(shape) * cos + qk_rot.reshape(shape) * sin  # (B, L, nh + nkv, hd); tables expanded
            q, k = paddle.split(qk, [self.nh, self.nkv], axis=2)
            v = v.reshape([b, length, self.nkv, self.hd])
        else:
            if self.packed is not None:  # one GEMM for q, k, v (rollout)
                qkv = ops.linear(x, *self.packed)  # (B, L, (nh + 2 nkv) hd)
                q, k, v = paddle.split(qkv, [self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd], axis=-1)
            else:
                q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
            q = q.reshape([b, length, self.nh, self.hd])  # (B, L, nh, hd)
            k = k.reshape([b, length, self.nkv, self.hd])  # (B, L, nkv, hd)
            v = v.reshape([b, length, self.nkv, self.hd])
            q, k = ops.apply_rotary(q, k, cos, sin)
        k, v = k.transpose([2, 0, 1, 3]), v.transpose([2, 0, 1, 3])  # (nkv, B, L, hd)
        own = (k, v)
        scale = 1.0 if self.packed is not None else self.scale  # packed q weights carry the scale
        if cache is not None:
            if prefix is not None:
                raise ValueError("a forward takes a KV cache or prefix keys/values, not both")
            att = cache.attend(layer_idx, q, k, v, mask, scale)  # (B, L, nh, hd)
        else:
            if prefix is not None:
                k, v = paddle.concat([prefix[0], k], axis=2), paddle.concat([prefix[1], v], axis=2)  # (nkv, B, P + L, hd)
            att = ops.attention(q, k, v, mask, scale)  # (B, L, nh, hd)
        out = self.o_proj(att.reshape([b, length, self.nh * self.hd]))
        return (out, *own) if return_kv else out


class MLP(nn.Layer):
    def __init__(self, hidden: int, inter: int, bias: bool = False):
        super().__init__()
        b = None if bias else False
        self.gate_proj = Linear(hidden, inter, bias_attr=b)
        self.up_proj = Linear(hidden, inter, bias_attr=b)
        self.down_proj = Linear(inter, hidden, bias_attr=b)
        self.packed: tuple[paddle.Tensor, paddle.Tensor | None] | None = None  # see pack_projections

    def forward(self, x):
        if self.packed is not None:  # one GEMM for gate and up (rollout)
            return self.down_proj(ops.swiglu_packed(ops.linear(x, *self.packed)))
        return self.down_proj(ops.swiglu(self.gate_proj(x), self.up_proj(x)))


def _rotate_half_columns(w: paddle.Tensor, head_dim: int) -> paddle.Tensor:
    """Projection columns (..., heads * hd) -> the columns that compute rotate_half of each head's output."""
    r = ops.rotate_half_matrix(head_dim)  # (hd, hd), exact signed permutation
    shape = w.shape
    return paddle.matmul(w.reshape([*shape[:-1], -1, head_dim]), r).reshape(shape)


@contextlib.contextmanager
def pack_projections(decoder: nn.Layer) -> Iterator[None]:
    """Inside the block, each decoder layer computes q/k/v with one GEMM and gate/up with another,
    from weights concatenated on entry (fewer, larger ops: the CPU decode step is op-count bound).
    The same GEMMs also absorb what surrounds them linearly: the RMSNorm weight before each
    ((normed * w) @ W == normed @ (w[:, None] * W)), the attention scale (rotary is linear, so rotating
    scaled queries equals scaling rotated ones), and, with the eager fp32 rotary, rotate_half of q and k
    (a signed permutation of columns): the rotation is then q * cos + q_rot * sin.
    For inference only: the packed copies do not follow weight updates (nor a LoRA adapter switched on or off
    inside the block: they hold the weights as applied on entry) and are dropped on exit.

    CPU only (on a GPU the block changes nothing): the fold is a CPU op-count optimisation; in bf16 it would
    round the folded weights again (sampling from a slightly different model), the copies would cost
    device memory next to the policy, and under stage-3 sharding the weights are not whole outside a forward."""
    if ops.device_kind() != "cpu":
        yield
        return
    layers = [m for m in decoder.sublayers() if isinstance(m, DecoderLayer)]
    with paddle.no_grad():
        for layer in layers:
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
            a.packed = (w_in * paddle.concat([*cols, a.v_proj.effective_weight()], axis=1),
                        paddle.concat([*bias, a.v_proj.bias]))
            a.packed_rotate_half = fold_rot
            gate_bias = None if m.gate_proj.bias is None else paddle.concat([m.gate_proj.bias, m.up_proj.bias])
            w_post = layer.post_attention_layernorm.weight.unsqueeze(-1)  # (H, 1)
            gate_up = paddle.concat([m.gate_proj.effective_weight(), m.up_proj.effective_weight()], axis=1)
            m.packed = (w_post * gate_up, gate_bias)
            layer.input_layernorm.folded = layer.post_attention_layernorm.folded = True
    try:
        yield
    finally:
        for layer in layers:
            layer.self_attn.packed = layer.mlp.packed = None
            layer.self_attn.packed_rotate_half = False
            layer.input_layernorm.folded = layer.post_attention_layernorm.folded = False


class DecoderLayer(nn.Layer):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, layer_idx, prefix_k=None, prefix_v=None, return_kv=False):
        prefix = None if prefix_k is None else (prefix_k, prefix_v)
        attn = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer_idx, prefix, return_kv)
        kv = ()
        if return_kv:
            attn, *kv = attn
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return (x, *kv) if return_kv else x


class Decoder(nn.Layer):
    """Token embedding, decoder layers and final norm (``model.*`` in the checkpoint)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.LayerList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.register_buffer("inv_freq", ops.inv_freq(cfg.head_dim, cfg.rope_theta), persistable=False)
        self.recompute = False

    def rope_tables(self, position_ids: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """M-RoPE cos/sin for position_ids (3, B, L): on CPU expanded for q and k heads, (B, L, nh + nkv, hd)
        (see ``ops.expand_tables``); elsewhere (B, L, hd), as the GPU kernels broadcast over heads themselves."""
        cos, sin = ops.mrope_cos_sin(position_ids, self.inv_freq, self.cfg.mrope_section)  # (B, L, hd)
        if ops.device_kind() != "cpu":
            return cos, sin
        heads = self.cfg.num_attention_heads + self.cfg.num_key_value_heads
        return ops.expand_tables(cos, sin, heads)  # shared by all layers

    def forward(self, embeds, position_ids, attention_mask, cache: KVCache | GroupedKVCache | None = None,
                prefix_kv: list | None = None, return_kv: bool = False, rope: tuple | None = None):
        """embeds (B, L, H); position_ids (3, B, L); attention_mask (B, K) over cache (or prefix) + new tokens.

        ``prefix_kv``: per layer (k, v) (nkv, B, P, hd) of P earlier positions to attend to (no cache).
        ``return_kv``: also return each layer's (k, v) of these positions, for use as a prefix.
        ``rope``: ``rope_tables(position_ids)`` computed beforehand (the rollout makes all decode steps'
        tables at once); position_ids is then unused.
        """
        cos, sin = self.rope_tables(position_ids) if rope is None else rope  # (B, L, [nh + nkv,] hd)
        if cache is not None:
            mask = cache.step_mask(attention_mask, embeds.shape[1])  # (B, 1, L, K) (grouped: see GroupedKVCache)
        else:
            mask = ops.causal_padding_mask(attention_mask, embeds.shape[1])  # (B, 1, L, K)
        x = embeds
        kvs = []
        for i, layer in enumerate(self.layers):
            pk, pv = prefix_kv[i] if prefix_kv is not None else (None, None)
            if self.recompute and self.training:
                from paddle.distributed.fleet.utils import recompute

                # Non-reentrant: the recomputed forward runs inside the one backward, so each parameter's gradient
                # is complete when its hook fires (a layer runs twice in the shared-prefix pass; reentrant
                # recompute's nested backward per call would complete it in parts, and Paddle's stage-2 wrapper
                # reduces a gradient once: group_sharded_stage2.py _get_reduce_fn).
                out = recompute(layer, x, cos, sin, mask, None, i, pk, pv, return_kv, use_reentrant=False)
            else:
                out = layer(x, cos, sin, mask, cache, i, pk, pv, return_kv)
            if return_kv:
                x, k, v = out
                kvs.append((k, v))
            else:
                x = out
        if cache is not None:
            cache.length += embeds.shape[1]
        return (self.norm(x), kvs) if return_kv else self.norm(x)


class LMHead(nn.Layer):
    """Vocabulary projection with the weight kept as (V, H), the checkpoint's layout, so a tied
    head can share the embedding matrix itself."""

    def __init__(self, weight: paddle.Tensor):
        super().__init__()
        self.weight = weight

    def forward(self, h: paddle.Tensor) -> paddle.Tensor:
        return paddle.matmul(h, self.weight, transpose_y=True)  # (..., V)


@dataclass
class ModelOutput:
    logits: paddle.Tensor | None
    hidden_states: paddle.Tensor  # final normed hidden states (B, L, H)
    position_ids: paddle.Tensor  # (3, B, L)
    rope_deltas: paddle.Tensor  # (B,)


def _np(x) -> np.ndarray | None:
    if x is None:
        return None
    return x.numpy() if isinstance(x, paddle.Tensor) else np.asarray(x)


class CausalLMBase(nn.Layer):
    """Decoder + LM head over text (a Qwen2 / Qwen2.5 causal LM; ``VLModelBase`` adds a vision tower).

    Text positions are kept in the decoder's M-RoPE form, (3, B, L) with the three axes equal: the rotary
    tables are then those of plain 1-D RoPE whatever the ``mrope_section``, and the rollout engine, the
    log-prob passes and SFT drive text and vision-language models through one interface.
    """

    def __init__(self, config: ModelConfig, vision: nn.Layer | None = None):
        super().__init__()
        self.config = config
        if vision is not None:
            # registered first: init_weights draws in registration order, which the tiny checkpoints depend on
            self.visual = vision
        self.model = Decoder(config.text)
        if config.tie_word_embeddings:
            self.lm_head = LMHead(self.model.embed_tokens.weight)
        else:
            w = self.create_parameter([config.text.vocab_size, config.text.hidden_size])
            self.lm_head = LMHead(w)

    # ----- inputs -----
    def rope_index(self, input_ids, attention_mask=None, image_grid_thw=None, video_grid_thw=None,
                   second_per_grid_ts=None) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Text positions (3, B, L), padding skipped (position 0), and rope_deltas (B,) = 0, as paddle int64
        tensors: the ids transformers' ``generate`` gives a padded batch (cumulative count of real tokens)."""
        if image_grid_thw is not None or video_grid_thw is not None:
            raise ValueError(f"{type(self).__name__} is a text-only model: it takes no image or video grids")
        ids = _np(input_ids)
        valid = np.ones(ids.shape, bool) if attention_mask is None else _np(attention_mask).astype(bool)  # (B, L)
        pos = np.where(valid, np.cumsum(valid, axis=1) - 1, 0).astype(np.int64)  # (B, L)
        deltas = np.zeros(ids.shape[0], np.int64)  # (B,): the next position is the number of real tokens
        return paddle.to_tensor(np.broadcast_to(pos, (3, *pos.shape)).copy()), paddle.to_tensor(deltas)

    def embed(self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
              group_size: int = 1, prompt_length: int | None = None):
        """Token embeddings (B, L, H); vision inputs are refused (``VLModelBase.embed`` takes them)."""
        if pixel_values is not None or pixel_values_videos is not None:
            raise ValueError(f"{type(self).__name__} is a text-only model: it takes no pixel_values")
        return self.model.embed_tokens(input_ids)  # (B, L, H)

    def forward(
        self,
        input_ids: paddle.Tensor,
        attention_mask: paddle.Tensor | None = None,
        pixel_values: paddle.Tensor | None = None,
        image_grid_thw: paddle.Tensor | None = None,
        pixel_values_videos: paddle.Tensor | None = None,
        video_grid_thw: paddle.Tensor | None = None,
        second_per_grid_ts: paddle.Tensor | None = None,
        position_ids: paddle.Tensor | None = None,
        cache: KVCache | GroupedKVCache | None = None,
        logits_to_keep: int | None = None,
        return_logits: bool = True,
        group_size: int = 1,
        prompt_length: int | None = None,
        rope_tables: tuple[paddle.Tensor, paddle.Tensor] | None = None,
    ) -> ModelOutput:
        """Full forward. ``position_ids`` (3, B, L) may be given (decode steps, log-prob passes);
        otherwise they come from ``rope_index``. With ``cache``, ``attention_mask`` covers the
        cached positions plus the new ones. ``logits_to_keep`` k: logits for the last k positions only.
        ``group_size`` G: input_ids has G rows per prompt, pixel inputs one entry per prompt (see
        ``embed``); position_ids must then be given (the rollout returns them). ``prompt_length``:
        vision placeholders only count in the first ``prompt_length`` positions (log-prob passes over
        prompt + completion). ``rope_tables``: ``model.model.rope_tables(position_ids)``, precomputed.
        """
        if group_size > 1 and position_ids is None:
            raise ValueError("group_size > 1 needs position_ids (e.g. GenerationOutput.position_ids)")
        if attention_mask is None:
            attention_mask = paddle.ones(input_ids.shape, dtype="int64")
        deltas = None
        if position_ids is None and rope_tables is None:
            position_ids, deltas = self.rope_index(
                input_ids, attention_mask[:, -input_ids.shape[1]:], image_grid_thw, video_grid_thw, second_per_grid_ts
            )
        embeds = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw, group_size,
                            prompt_length)
        hidden = self.model(embeds, position_ids, attention_mask, cache, rope=rope_tables)  # (B, L, H)
        logits = None
        if return_logits:
            keep_all = logits_to_keep is None or logits_to_keep >= hidden.shape[1]
            h = hidden if keep_all else hidden[:, -logits_to_keep:]
            logits = self.lm_head(h)  # (B, L or k, V)
        return ModelOutput(logits=logits, hidden_states=hidden, position_ids=position_ids, rope_deltas=deltas)

    def shared_prefix_hidden(
        self, prompt_ids, completion_ids, attention_mask, position_ids, group_size: int,
        pixel_values=None, image_grid_thw=None,
    ) -> paddle.Tensor:
        """Final hidden states of the positions that predict each completion token, (N, T, H), with
        each prompt computed ONCE for its G completions (rows i*G .. i*G+G-1 share prompt i).

        prompt_ids (N, L) left-padded, completion_ids (N, T), attention_mask (N, L + T),
        position_ids (3, N, L + T): the rollout's. Same numbers as the full forward over prompt +
        completion (tested); the prompt's keys/values are repeated into the G rows, so gradients of
        all G rows flow back into one prompt pass.
        """
        g, length = group_size, prompt_ids.shape[1]
        embeds = self.embed(prompt_ids[::g], pixel_values, image_grid_thw)  # (B, L, H)
        h_prompt, kvs = self.model(embeds, position_ids[:, ::g, :length], attention_mask[::g, :length],
                                   return_kv=True)  # (B, L, H), per layer (nkv, B, L, hd)
        if g > 1:
            kvs = [(paddle.repeat_interleave(k, g, axis=1), paddle.repeat_interleave(v, g, axis=1)) for k, v in kvs]
        h_comp = self.model(self.model.embed_tokens(completion_ids), position_ids[:, :, length:], attention_mask,
                            prefix_kv=kvs)  # (N, T, H)
        last = h_prompt[:, -1:]  # (B, 1, H): the last prompt token (left padding) predicts completion token 0
        if g > 1:
            last = paddle.repeat_interleave(last, g, axis=0)  # (N, 1, H)
        return paddle.concat([last, h_comp[:, :-1]], axis=1)  # (N, T, H)

    # ----- weights -----
    def init_weights(self, std: float = 0.02, seed: int | None = None) -> None:
        """Random init for models built from scratch: N(0, std) matrices, zero biases, unit norms."""
        if seed is not None:
            paddle.seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.set_value(paddle.zeros(p.shape, p.dtype))
            elif p.ndim == 1:
                p.set_value(paddle.ones(p.shape, p.dtype))
            else:
                p.set_value(paddle.normal(0.0, std, p.shape).astype(p.dtype))

    def save_pretrained(self, out_dir: str, max_shard_bytes: int = 4 << 30) -> None:
        from paddlemix_r1.models.checkpoint import save_pretrained

        save_pretrained(self, out_dir, max_shard_bytes=max_shard_bytes)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        t = self.config.text
        dtype = str(self.model.embed_tokens.weight.dtype).replace("paddle.", "")
        return KVCache(t.num_hidden_layers, batch, max_len, t.num_key_value_heads, t.head_dim, dtype)


class VLModelBase(CausalLMBase):
    """Vision tower + decoder + LM head. Subclasses set ``vision_cls``."""

    vision_cls: type[nn.Layer]

    def __init__(self, config: ModelConfig):
        super().__init__(config, vision=self.vision_cls(config.vision))

    # ----- inputs -----
    def rope_index(
        self, input_ids, attention_mask=None, image_grid_thw=None, video_grid_thw=None, second_per_grid_ts=None
    ) -> tuple[paddle.Tensor, paddle.Tensor]:
        """M-RoPE ids (3, B, L) and rope_deltas (B,) as paddle int64 tensors."""
        v = self.config.vision
        pos, deltas = get_rope_index(
            _np(input_ids),
            _np(attention_mask),
            _np(image_grid_thw),
            _np(video_grid_thw),
            image_token_id=self.config.image_token_id,
            video_token_id=self.config.video_token_id,
            spatial_merge_size=v.spatial_merge_size,
            second_per_grid_ts=_np(second_per_grid_ts),
            tokens_per_second=v.tokens_per_second if self.config.model_type == "qwen2_5_vl" else None,
        )
        return paddle.to_tensor(pos), paddle.to_tensor(deltas)

    def embed(
        self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
        group_size: int = 1, prompt_length: int | None = None,
    ):
        """Token embeddings with vision features scattered into the image/video placeholder slots.

        With ``group_size`` G > 1, input_ids holds G consecutive rows per prompt while the pixel
        inputs describe each prompt once: the vision tower runs once per prompt and its features are
        repeated into the G rows (the gradient of all G rows flows back into one vision pass).
        With ``prompt_length``, placeholders are looked for in the first ``prompt_length`` positions
        only: a sampled completion that happens to contain ``<|image_pad|>`` stays an ordinary token.
        """
        embeds = self.model.embed_tokens(input_ids)  # (B*G, L, H)
        for pix, grid, tok in (
            (pixel_values, image_grid_thw, self.config.image_token_id),
            (pixel_values_videos, video_grid_thw, self.config.video_token_id),
        ):
            if pix is None:
                continue
            feats = self.visual(pix.astype(embeds.dtype), _np(grid))  # (n_tokens of B prompts, H)
            is_slot = input_ids == tok  # (B*G, L)
            if prompt_length is not None and prompt_length < input_ids.shape[1]:
                tail = paddle.zeros([input_ids.shape[0], input_ids.shape[1] - prompt_length], dtype="bool")
                is_slot = paddle.concat([is_slot[:, :prompt_length], tail], axis=1)
            if group_size > 1:
                per_prompt = is_slot[::group_size].astype("int64").sum(axis=1).tolist()  # (B,)
                if sum(per_prompt) != int(feats.shape[0]):
                    raise ValueError(
                        f"image features and image tokens do not match: {sum(per_prompt)} placeholder tokens in "
                        f"the first row of each group, {int(feats.shape[0])} features"
                    )
                chunks = paddle.split(feats, per_prompt, axis=0) if len(per_prompt) > 1 else [feats]
                feats = paddle.concat([c for c in chunks for _ in range(group_size)], axis=0)
            slots = paddle.nonzero(is_slot.reshape([-1])).reshape([-1])  # (n_slots,)
            if int(slots.shape[0]) != int(feats.shape[0]):
                raise ValueError(
                    f"image features and image tokens do not match: {int(slots.shape[0])} placeholder tokens, "
                    f"{int(feats.shape[0])} features"
                )
            flat = embeds.reshape([-1, embeds.shape[-1]])
            flat = paddle.scatter(flat, slots, feats.astype(flat.dtype), overwrite=True)
            embeds = flat.reshape(embeds.shape)
        return embeds
