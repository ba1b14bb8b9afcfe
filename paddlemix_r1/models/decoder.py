"""The Qwen2 decoder shared by Qwen2-VL, Qwen2.5-VL and the text-only Qwen2 LMs, the
causal-LM wrapper (``CausalLMBase``: decoder + LM head, text positions) and the vision-language wrapper
(``VLModelBase``) that both VL families subclass with their own vision tower.

The model computes one thing: a forward over its inputs. Keys/values of earlier positions come in
through the explicit ``cache`` argument (``PastKeyValues``), owned by whoever runs the passes: the rollout
engine's caches and packed decode layers live in generation/, the shared-prefix log-prob pass in
grpo/logprobs.py.

Parameter names follow the published checkpoints (``model.layers.N.self_attn.q_proj``,
``visual.blocks.N``, ``lm_head``) so loading is a near-straight map (see checkpoint.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import paddle
import paddle.nn as nn

from paddlemix_r1 import ops
from paddlemix_r1.models.config import ModelConfig, TextConfig
from paddlemix_r1.models.rope_index import get_rope_index


class RMSNorm(nn.Layer):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = self.create_parameter([dim], default_initializer=nn.initializer.Constant(1.0))
        self.eps = eps

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return ops.rms_norm(x, self.weight, self.eps)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, weight (in, out)) computed through ``ops.linear``."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return ops.linear(x, self.weight, self.bias)

    def effective_weight(self) -> paddle.Tensor:
        """The (in, out) matrix this layer applies; code that reads weights outside ``forward``
        (the HF export, the rollout's packed copies) uses it, so a LoRA delta (models/lora.py) is not lost."""
        return self.weight


class PastKeyValues(Protocol):
    """What a forward's ``cache`` argument provides: keys/values of earlier positions and how this
    forward's queries attend to them. The rollout's caches (generation/kv_cache.py) write this
    forward's keys/values for later steps; the log-prob pass's shared prompt (grpo/logprobs.py) only
    reads. The model owns neither; it calls these three methods."""

    def step_mask(self, attention_mask: paddle.Tensor | None, q_len: int) -> paddle.Tensor:
        """The additive mask of this forward's q_len queries, in the form ``attend`` takes."""
        ...

    def attend(self, layer: int, q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: paddle.Tensor,
               scale: float) -> paddle.Tensor:
        """q (B, L, nh, hd) over the earlier keys/values and this forward's k, v (nkv, B, L, hd): (B, L, nh, hd)."""
        ...

    def advance(self, n: int) -> None:
        """Called once after every layer has attended: n more positions are behind."""
        ...


class Attention(nn.Layer):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = Linear(cfg.hidden_size, self.nh * self.hd)
        self.k_proj = Linear(cfg.hidden_size, self.nkv * self.hd)
        self.v_proj = Linear(cfg.hidden_size, self.nkv * self.hd)
        self.o_proj = Linear(self.nh * self.hd, cfg.hidden_size, bias_attr=False)
        self.scale = self.hd**-0.5

    def forward(self, x: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, mask: paddle.Tensor,
                cache: PastKeyValues | None = None, layer_idx: int = 0
                ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """x (B, L, H) -> (out (B, L, H), k, v), k and v (nkv, B, L, hd) of these positions (the shared-prefix
        log-prob pass hands a prompt's to its completions). ``cache``: earlier positions to attend to."""
        b, length, _ = x.shape
        q = self.q_proj(x).reshape([b, length, self.nh, self.hd])  # (B, L, nh, hd)
        k = self.k_proj(x).reshape([b, length, self.nkv, self.hd])  # (B, L, nkv, hd)
        v = self.v_proj(x).reshape([b, length, self.nkv, self.hd])
        q, k = ops.apply_rotary(q, k, cos, sin)
        k, v = k.transpose([2, 0, 1, 3]), v.transpose([2, 0, 1, 3])  # (nkv, B, L, hd)
        if cache is not None:
            att = cache.attend(layer_idx, q, k, v, mask, self.scale)  # (B, L, nh, hd)
        else:
            att = ops.attention(q, k, v, mask, self.scale)  # (B, L, nh, hd)
        return self.o_proj(att.reshape([b, length, self.nh * self.hd])), k, v


class MLP(nn.Layer):
    def __init__(self, hidden: int, inter: int, bias: bool = False):
        super().__init__()
        b = None if bias else False
        self.gate_proj = Linear(hidden, inter, bias_attr=b)
        self.up_proj = Linear(hidden, inter, bias_attr=b)
        self.down_proj = Linear(inter, hidden, bias_attr=b)

    def forward(self, x):
        return self.down_proj(ops.swiglu(self.gate_proj(x), self.up_proj(x)))


class DecoderLayer(nn.Layer):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, mask: paddle.Tensor,
                cache: PastKeyValues | None = None, layer_idx: int = 0
                ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """x (B, L, H) -> (x (B, L, H), k, v): the layer's output and its attention's keys/values."""
        attn, k, v = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer_idx)
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, k, v


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

    def forward(self, embeds: paddle.Tensor, position_ids: paddle.Tensor | None, attention_mask: paddle.Tensor | None,
                cache: PastKeyValues | None = None, rope: tuple[paddle.Tensor, paddle.Tensor] | None = None
                ) -> paddle.Tensor:
        """embeds (B, L, H) -> final normed hidden states (B, L, H).

        position_ids (3, B, L); attention_mask (B, K) over the cache's positions + the new ones (a cache may
        keep its own mask: then it is not read). ``rope``: ``rope_tables(position_ids)`` computed beforehand (the
        rollout makes all decode steps' tables at once); position_ids is then unused.
        """
        return self._run(embeds, position_ids, attention_mask, cache, rope, None)

    def forward_with_kv(self, embeds: paddle.Tensor, position_ids: paddle.Tensor, attention_mask: paddle.Tensor
                        ) -> tuple[paddle.Tensor, list[tuple[paddle.Tensor, paddle.Tensor]]]:
        """``forward`` without a cache that also returns each layer's (k, v), (nkv, B, L, hd), of these
        positions: a prompt pass whose keys/values later positions attend to."""
        kvs: list[tuple[paddle.Tensor, paddle.Tensor]] = []
        return self._run(embeds, position_ids, attention_mask, None, None, kvs), kvs

    def _run(self, embeds, position_ids, attention_mask, cache, rope, kvs: list | None) -> paddle.Tensor:
        """The layer loop; appends each layer's (k, v) to ``kvs`` when given."""
        cos, sin = self.rope_tables(position_ids) if rope is None else rope  # (B, L, [nh + nkv,] hd)
        if cache is not None:
            mask = cache.step_mask(attention_mask, embeds.shape[1])  # the cache's form (see PastKeyValues)
        else:
            mask = ops.causal_padding_mask(attention_mask, embeds.shape[1])  # (B, 1, L, K)
        x = embeds
        for i, layer in enumerate(self.layers):
            if self.recompute and self.training:
                from paddle.distributed.fleet.utils import recompute

                # Non-reentrant: the recomputed forward runs inside the one backward, so each parameter's gradient
                # is complete when its hook fires (a layer runs twice in the shared-prefix pass; reentrant
                # recompute's nested backward per call would complete it in parts, and Paddle's stage-2 wrapper
                # reduces a gradient once: group_sharded_stage2.py _get_reduce_fn).
                x, k, v = recompute(layer, x, cos, sin, mask, cache, i, use_reentrant=False)
            else:
                x, k, v = layer(x, cos, sin, mask, cache, i)
            if kvs is not None:
                kvs.append((k, v))
        if cache is not None:
            cache.advance(embeds.shape[1])
        return self.norm(x)


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
    logits: paddle.Tensor  # (B, L or logits_to_keep, V)
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
        cache: PastKeyValues | None = None,
        logits_to_keep: int | None = None,
        rope_tables: tuple[paddle.Tensor, paddle.Tensor] | None = None,
    ) -> ModelOutput:
        """Full forward, one row per sequence. ``position_ids`` (3, B, L) may be given (decode steps);
        otherwise they come from ``rope_index``. With ``cache``, ``attention_mask`` covers the cached
        positions plus the new ones. ``logits_to_keep`` k: logits for the last k positions only.
        ``rope_tables``: ``model.model.rope_tables(position_ids)``, precomputed.
        """
        if attention_mask is None:
            attention_mask = paddle.ones(input_ids.shape, dtype="int64")
        deltas = None
        if position_ids is None and rope_tables is None:
            position_ids, deltas = self.rope_index(
                input_ids, attention_mask[:, -input_ids.shape[1]:], image_grid_thw, video_grid_thw, second_per_grid_ts
            )
        embeds = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
        hidden = self.model(embeds, position_ids, attention_mask, cache, rope=rope_tables)  # (B, L, H)
        keep_all = logits_to_keep is None or logits_to_keep >= hidden.shape[1]
        logits = self.lm_head(hidden if keep_all else hidden[:, -logits_to_keep:])  # (B, L or k, V)
        return ModelOutput(logits=logits, hidden_states=hidden, position_ids=position_ids, rope_deltas=deltas)

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
