"""Rollout engine: the vision tower and prompt prefill run once per prompt; the G completions of each
prompt are then decoded in one batch over a cache that holds the prompt's keys/values once
(``GroupedKVCache``) and each completion's own tokens per row. Text-only models (``Qwen2ForCausalLM``)
and text-only batches (no pixel_values) take the same path.

Steps are small and pure in the gpt-fast manner: ``prefill`` -> ``decode_one_token`` in a loop that
stops when every row has emitted ``eos_token_id`` (or when the caller's ``stop_condition`` says so:
several ranks that must decode in lockstep, see ``generate``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import paddle

from paddlemix_r1.generation.kv_cache import GroupedKVCache, KVCache
from paddlemix_r1.generation.packing import PackedDecoder, pack_decoder
from paddlemix_r1.generation.sampling import sample
from paddlemix_r1.models.decoder import CausalLMBase, ModelOutput


@dataclass
class GenerationOutput:
    """Group-major results: rows i*G .. i*G+G-1 belong to prompt i. The prompts are kept once each."""

    completion_ids: paddle.Tensor  # (B*G, T) right-padded with pad_token_id
    completion_mask: paddle.Tensor  # (B*G, T) 1 up to and including eos
    logprobs: paddle.Tensor  # (B*G, T) log p(token) under softmax(logits / temperature); 0 on padding
    prompt_ids: paddle.Tensor  # (B, L) left-padded prompts, one row per prompt (not per completion)
    attention_mask: paddle.Tensor  # (B*G, L + T) prompt mask + completion mask
    position_ids: paddle.Tensor  # (3, B*G, L + T) M-RoPE ids of prompt + completion

    @property
    def group_size(self) -> int:
        """G: completions per prompt."""
        return int(self.completion_ids.shape[0]) // int(self.prompt_ids.shape[0])

    def __getitem__(self, key: str):  # dict-style access for callers that expect a mapping
        return getattr(self, key)


@contextlib.contextmanager
def _seeded(seed: int | None):
    """Seed Paddle's generator for the call and restore the caller's state afterwards."""
    if seed is None:
        yield
        return
    state = paddle.get_rng_state()
    paddle.seed(seed)
    try:
        yield
    finally:
        paddle.set_rng_state(state)


def forward(model: CausalLMBase, batch: dict, cache: KVCache | None = None, logits_to_keep: int | None = None,
            packed: PackedDecoder | None = None) -> ModelOutput:
    """The model's forward over a processor batch; with ``packed``, the decoder layers run as that packed
    copy (embeddings, vision tower, final norm and LM head are the model's own)."""
    inputs = {k: batch.get(k) for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw",
                                         "second_per_grid_ts")}
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if packed is None:
        return model(input_ids=ids, attention_mask=mask, cache=cache, logits_to_keep=logits_to_keep, **inputs)
    position_ids, deltas = model.rope_index(ids, mask, inputs["image_grid_thw"], inputs["video_grid_thw"],
                                            inputs["second_per_grid_ts"])  # (3, B, L), (B,)
    embeds = model.embed(ids, inputs["pixel_values"], inputs["image_grid_thw"], inputs["pixel_values_videos"],
                         inputs["video_grid_thw"])  # (B, L, H)
    hidden = packed(embeds, position_ids, mask, cache)  # (B, L, H)
    keep_all = logits_to_keep is None or logits_to_keep >= hidden.shape[1]
    logits = model.lm_head(hidden if keep_all else hidden[:, -logits_to_keep:])  # (B, L or k, V)
    return ModelOutput(logits=logits, hidden_states=hidden, position_ids=position_ids, rope_deltas=deltas)


def prefill(model: CausalLMBase, batch: dict, max_new_tokens: int, packed: PackedDecoder | None = None):
    """Vision tower + prompt once per prompt. Returns last logits (B, V), cache, positions, deltas.

    The cache has room for ``max_new_tokens`` more positions per row (0: exactly the prompt, as
    ``GroupedKVCache`` takes it)."""
    b, length = batch["input_ids"].shape
    cache = KVCache.for_model(model, b, length + max_new_tokens)
    out = forward(model, batch, cache, logits_to_keep=1, packed=packed)
    return out.logits[:, -1], cache, out.position_ids, out.rope_deltas


def decode_one_token(model: CausalLMBase, token: paddle.Tensor, attention_mask, position: paddle.Tensor | None,
                     cache: KVCache | GroupedKVCache, rope_tables: tuple | None = None,
                     packed: PackedDecoder | None = None):
    """One decode step for all rows: token (N,), position (N,) -> logits (N, V).

    attention_mask (N, K): 1 for cached positions to attend to, including this token's. K may be
    the cache's full length (the not yet written tail 0): then no cache slice is copied per layer.
    A ``GroupedKVCache`` keeps its own mask; pass None. ``rope_tables``: this step's slice of
    ``model.model.rope_tables`` (then ``position`` may be None). ``packed``: run the decoder layers as
    this packed copy (``generation.packing``).
    """
    pos = None
    if rope_tables is None:
        pos = position.reshape([1, -1, 1]).expand([3, -1, 1])  # (3, N, 1): text advances all axes together
    if packed is None:
        out = model(input_ids=token.unsqueeze(-1), attention_mask=attention_mask, position_ids=pos, cache=cache,
                    logits_to_keep=1, rope_tables=rope_tables)
        return out.logits[:, -1]
    if attention_mask is None:  # as the model's forward: the step's own token (a GroupedKVCache ignores it)
        attention_mask = paddle.ones([token.shape[0], 1], dtype="int64")
    hidden = packed(model.model.embed_tokens(token.unsqueeze(-1)), pos, attention_mask, cache, rope=rope_tables)
    return model.lm_head(hidden)[:, -1]  # (N, V)


@paddle.no_grad()
def generate(
    model: CausalLMBase,
    batch: dict,
    max_new_tokens: int = 256,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float | None = None,
    top_k: int | None = None,
    num_return_sequences: int = 1,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = 0,
    seed: int | None = None,
    stop_condition: Callable[[paddle.Tensor], bool] | None = None,
    pack_weights: bool = True,
) -> GenerationOutput:
    """Generate ``num_return_sequences`` completions for each prompt of ``batch``.

    batch: input_ids (B, L) left-padded, attention_mask (B, L), and optionally pixel_values (N, D) +
    image_grid_thw (n, 3) (and the video equivalents). Rows stop at ``eos_token_id``; the loop ends
    after ``max_new_tokens`` or, with an ``eos_token_id``, when ``stop_condition(done)`` is true after a
    step: ``done`` (N,) bool marks the rows that have emitted eos. The default is ``done.all()``, a
    decision of this process alone. Ranks whose decode steps issue collectives (sharding stage 3
    gathers parameters in every forward) pass a condition that all ranks evaluate together at every
    step, so they all run the same number of steps; finished rows keep decoding and become padding.
    ``pack_weights``: prefill and decode with the decoder's packed copy (``generation.packing``: weights read
    and concatenated outside the layers' forwards; CPU only); False where parameters are only whole inside
    their own layers' forwards (sharding stage 3).
    """
    g = num_return_sequences
    if pad_token_id is None:
        # a tokenizer that names no pad token gives None; fail here, not in the padding of the completions
        raise ValueError("pad_token_id is None: pass the id that pads finished rows (the tokenizer names no pad "
                         "token; its eos id is the usual choice)")
    if max_new_tokens < 1 or g < 1:
        raise ValueError(f"max_new_tokens and num_return_sequences must be >= 1, got {max_new_tokens} and {g}")
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    stop = _all_rows_done if stop_condition is None else stop_condition
    was_training = model.training
    model.eval()
    try:
        packed = pack_decoder(model.model) if pack_weights else None
        with _seeded(seed):
            logits, prompt_cache, prompt_pos, deltas = prefill(model, batch, 0, packed)
            prompt_mask = batch["attention_mask"].astype("int64")
            # group prefix sharing: the prompt's keys/values stay once per prompt, not G times
            cache = GroupedKVCache(prompt_cache, prompt_mask, g, max_new_tokens, model.config.text.num_attention_heads)
            if g > 1:
                # fp32 first (sampling computes in fp32 anyway): Paddle's GPU repeat_interleave has no fp16 kernel
                logits = paddle.repeat_interleave(logits.astype("float32"), g, axis=0)  # (N, V)
                prompt_mask = paddle.repeat_interleave(prompt_mask, g, axis=0)
                deltas = paddle.repeat_interleave(deltas, g, axis=0)
                prompt_pos = paddle.repeat_interleave(prompt_pos, g, axis=1)
            n = logits.shape[0]
            next_pos = prompt_mask.sum(axis=1) + deltas  # (N,) position of the first generated token
            steps = paddle.arange(max_new_tokens, dtype="int64").unsqueeze(0)  # (1, T)
            comp_pos = (next_pos.unsqueeze(-1) + steps).unsqueeze(0).expand([3, -1, -1])  # (3, N, T)
            cos, sin = model.model.rope_tables(comp_pos)  # (N, T, heads, hd): every decode step's tables at once
            eos_t = paddle.to_tensor(eos, dtype="int64") if eos else None
            done = paddle.zeros([n], dtype="bool")
            tokens, logps = [], []
            for step in range(max_new_tokens):
                if step > 0:
                    rope = (cos[:, step - 1:step], sin[:, step - 1:step])  # token step-1 sits at next_pos + step-1
                    logits = decode_one_token(model, tokens[-1], None, None, cache, rope_tables=rope, packed=packed)
                # A finished row keeps decoding (rows are independent); its tokens after eos become pad below.
                tok, lp = sample(logits, do_sample, temperature, top_k, top_p)
                tokens.append(tok)
                logps.append(lp)
                if eos_t is not None:
                    done = done | (tok.unsqueeze(-1) == eos_t).any(axis=-1)  # (N,)
                    if stop(done):
                        break
    finally:
        model.train(was_training)

    completion = paddle.stack(tokens, axis=1)  # (N, T)
    logprobs = paddle.stack(logps, axis=1)  # (N, T)
    t = completion.shape[1]
    completion_mask = _completion_mask(completion, eos, t)
    completion = paddle.where(completion_mask.astype("bool"), completion, paddle.full_like(completion, pad_token_id))
    return GenerationOutput(
        completion_ids=completion,
        completion_mask=completion_mask,
        logprobs=logprobs * completion_mask.astype(logprobs.dtype),
        prompt_ids=batch["input_ids"],
        attention_mask=paddle.concat([prompt_mask, completion_mask], axis=1),
        position_ids=paddle.concat([prompt_pos, comp_pos[:, :, :t]], axis=2),
    )


def _all_rows_done(done: paddle.Tensor) -> bool:
    """The default stop condition: every row of this process has emitted eos."""
    return bool(done.all())


def _completion_mask(completion: paddle.Tensor, eos: list[int], t: int) -> paddle.Tensor:
    """1 for tokens up to and including the first eos of each row, 0 after. (N, T) int64"""
    if not eos:
        return paddle.ones(completion.shape, "int64")
    is_eos = (completion.unsqueeze(-1) == paddle.to_tensor(eos, dtype="int64")).any(axis=-1)  # (N, T)
    eos_seen_before = paddle.cumsum(is_eos.astype("int64"), axis=1) - is_eos.astype("int64")  # (N, T)
    return (eos_seen_before == 0).astype("int64")
