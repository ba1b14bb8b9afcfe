"""Per-token log-probs of completions under a model, with exactly the rollout's inputs.

The forward pass gets the rollout's M-RoPE position ids and attention mask, the same pixel inputs
(vision tower once per prompt, features shared by its G rows) and the sampling temperature. Only
the completion positions reach the LM head, and the log-softmax is chunked (ops/logprobs.py): no
[B, L, V] tensor exists.

The hidden states come from one of two passes over the model's parts: ``shared_prefix_hidden`` (each
prompt once, its keys/values handed to its G completions through the model's ``cache`` argument as a
read-only ``PrefixKV``) or ``full_sequence_hidden`` (every row's prompt + completion, the reference).
Under sharding a pass runs inside the wrapper's forward (``_run_pass``).
"""

from __future__ import annotations

from dataclasses import dataclass

import paddle

from paddlemix_r1 import ops
from paddlemix_r1.ops.logprobs import (
    selective_log_softmax_and_entropy_from_hidden,
    selective_log_softmax_from_hidden,
)


@dataclass(frozen=True)
class RolloutInputs:
    """What a log-prob pass needs from one rollout micro-batch: B prompts, G completions each (rows
    group-major: completion i*G + j continues prompt i)."""

    prompt_ids: paddle.Tensor  # (B, L) left-padded, each prompt once
    completion_ids: paddle.Tensor  # (N, T), N = B*G
    attention_mask: paddle.Tensor  # (N, L + T) prompt mask + completion mask
    position_ids: paddle.Tensor  # (3, N, L + T)
    pixel_values: paddle.Tensor | None  # patches of the B prompts' images, each prompt once
    image_grid_thw: paddle.Tensor | None  # (n_images, 3)
    group_size: int  # G

    def __post_init__(self) -> None:
        b, n = int(self.prompt_ids.shape[0]), int(self.completion_ids.shape[0])
        if b * self.group_size != n:
            raise ValueError(f"{b} prompts x group_size {self.group_size} != {n} completion rows "
                             "(prompt_ids holds each prompt once)")


class PrefixKV:
    """A prompt's keys/values, per layer (nkv, N, P, hd), as the ``cache`` of a forward over the tokens that
    follow it (``models.decoder.PastKeyValues``): its queries attend to the prefix, then causally to their own
    positions. Read-only: nothing is written, so a recomputed layer (gradient checkpointing) sees the same."""

    def __init__(self, kvs: list[tuple[paddle.Tensor, paddle.Tensor]]):
        self.kvs = kvs

    def step_mask(self, attention_mask: paddle.Tensor, q_len: int) -> paddle.Tensor:
        """attention_mask (N, P + L) -> additive (N, 1, L, P + L)."""
        return ops.causal_padding_mask(attention_mask, q_len)

    def attend(self, layer: int, q, k, v, mask, scale: float) -> paddle.Tensor:
        pk, pv = self.kvs[layer]
        k, v = paddle.concat([pk, k], axis=2), paddle.concat([pv, v], axis=2)  # (nkv, N, P + L, hd)
        return ops.attention(q, k, v, mask, scale)  # (N, L, nh, hd)

    def advance(self, n: int) -> None:
        pass


def shared_prefix_hidden(model, prompt_ids, completion_ids, attention_mask, position_ids, group_size: int,
                         pixel_values=None, image_grid_thw=None) -> paddle.Tensor:
    """Final hidden states of the positions that predict each completion token, (N, T, H), with
    each prompt computed ONCE for its G completions (rows i*G .. i*G+G-1 share prompt i).

    prompt_ids (B, L) left-padded, completion_ids (N, T), attention_mask (N, L + T),
    position_ids (3, N, L + T): the rollout's. Same numbers as the full forward over prompt +
    completion (tested); the prompt's keys/values are repeated into the G rows, so gradients of
    all G rows flow back into one prompt pass.
    """
    g, length = group_size, prompt_ids.shape[1]
    embeds = model.embed(prompt_ids, pixel_values, image_grid_thw)  # (B, L, H)
    h_prompt, kvs = model.model.forward_with_kv(embeds, position_ids[:, ::g, :length],
                                                attention_mask[::g, :length])  # (B, L, H), per layer (nkv, B, L, hd)
    if g > 1:
        kvs = [(paddle.repeat_interleave(k, g, axis=1), paddle.repeat_interleave(v, g, axis=1)) for k, v in kvs]
    h_comp = model.model(model.model.embed_tokens(completion_ids), position_ids[:, :, length:], attention_mask,
                         PrefixKV(kvs))  # (N, T, H)
    last = h_prompt[:, -1:]  # (B, 1, H): the last prompt token (left padding) predicts completion token 0
    if g > 1:
        last = paddle.repeat_interleave(last, g, axis=0)  # (N, 1, H)
    return paddle.concat([last, h_comp[:, :-1]], axis=1)  # (N, T, H)


def full_sequence_hidden(model, prompt_ids, completion_ids, attention_mask, position_ids, group_size: int,
                         pixel_values=None, image_grid_thw=None) -> paddle.Tensor:
    """``shared_prefix_hidden``'s numbers from the plain forward over every row's prompt + completion (the
    reference the shared path is tested against), (N, T, H)."""
    length, t = prompt_ids.shape[1], completion_ids.shape[1]
    rows = paddle.repeat_interleave(prompt_ids, group_size, axis=0) if group_size > 1 else prompt_ids  # (N, L)
    full = paddle.concat([rows, completion_ids], axis=1)  # (N, L + T)
    # vision tower once per prompt (group_size), placeholders looked for in the prompt only (prompt_length)
    embeds = model.embed(full, pixel_values, image_grid_thw, group_size=group_size, prompt_length=length)
    hidden = model.model(embeds, position_ids, attention_mask)  # (N, L + T, H)
    return hidden[:, length - 1:length + t - 1]  # (N, T, H): positions that predict each token


def _run_pass(model, fn, *args):
    """``fn(model, *args)``; under sharding through the wrapper's forward (distributed/sharding.py), the only
    route by which its gradients are reduced and its parameters whole."""
    run = getattr(model, "run_pass", None)
    return run(fn, *args) if run is not None else fn(model, *args)


def completion_logprobs(
    model, inp: RolloutInputs, temperature: float, chunk_size: int = 512, with_entropy: bool = False,
    shared_prefix: bool = True,
) -> paddle.Tensor | tuple[paddle.Tensor, paddle.Tensor]:
    """log p(completion token t | prefix) / temperature-scaled, (N, T) fp32; with ``with_entropy``, also the
    entropy of each position's temperature-scaled distribution, (N, T) (one pass gives both).

    ``shared_prefix`` (default): each prompt's decoder pass runs once for its G completions
    (``shared_prefix_hidden``); False runs the plain forward over every row's prompt +
    completion, the reference the shared path is tested against.
    """
    n, t = inp.completion_ids.shape
    hidden_pass = shared_prefix_hidden if shared_prefix else full_sequence_hidden
    hidden = _run_pass(model, hidden_pass, inp.prompt_ids, inp.completion_ids, inp.attention_mask, inp.position_ids,
                       inp.group_size, inp.pixel_values, inp.image_grid_thw)  # (N, T, H)
    h = hidden.reshape([n * t, hidden.shape[-1]])  # (N*T, H)
    weight = model.lm_head.weight  # (V, H)
    index = inp.completion_ids.reshape([-1])  # (N*T,)
    if with_entropy:
        lp, ent = selective_log_softmax_and_entropy_from_hidden(h, weight, index, temperature, chunk_size,
                                                                transpose_weight=True)
        return lp.reshape([n, t]), ent.reshape([n, t])
    lp = selective_log_softmax_from_hidden(h, weight, index, temperature, chunk_size, transpose_weight=True)
    return lp.reshape([n, t])
