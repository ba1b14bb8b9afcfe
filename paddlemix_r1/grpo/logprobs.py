"""Per-token log-probs of completions under a model, with exactly the rollout's inputs.

The forward pass gets the rollout's M-RoPE position ids and attention mask, the same pixel inputs
(vision tower once per prompt, features shared by its G rows) and the sampling temperature. Only
the completion positions reach the LM head, and the log-softmax is chunked (ops/logprobs.py): no
[B, L, V] tensor exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import paddle

from paddlemix_r1.ops.logprobs import (
    selective_log_softmax_and_entropy_from_hidden,
    selective_log_softmax_from_hidden,
)


@dataclass
class RolloutInputs:
    """What a log-prob pass needs from one rollout micro-batch (group-major rows)."""

    prompt_ids: paddle.Tensor  # (N, L)
    completion_ids: paddle.Tensor  # (N, T)
    attention_mask: paddle.Tensor  # (N, L + T) prompt mask + completion mask
    position_ids: paddle.Tensor  # (3, N, L + T)
    pixel_values: paddle.Tensor | None  # patches of the B prompts' images, each prompt once
    image_grid_thw: paddle.Tensor | None  # (n_images, 3)
    group_size: int  # G


def completion_logprobs(
    model, inp: RolloutInputs, temperature: float, chunk_size: int = 512, with_entropy: bool = False,
    shared_prefix: bool = True,
) -> paddle.Tensor | tuple[paddle.Tensor, paddle.Tensor]:
    """log p(completion token t | prefix) / temperature-scaled, (N, T) fp32 (and entropies (N, T)).

    ``shared_prefix`` (default): each prompt's decoder pass runs once for its G completions
    (``model.shared_prefix_hidden``); False runs the plain forward over every row's prompt +
    completion, the reference the shared path is tested against.
    """
    n, length = inp.prompt_ids.shape
    t = inp.completion_ids.shape[1]
    if shared_prefix:
        hidden = model.shared_prefix_hidden(inp.prompt_ids, inp.completion_ids, inp.attention_mask,
                                            inp.position_ids, inp.group_size, inp.pixel_values,
                                            inp.image_grid_thw)  # (N, T, H)
    else:
        full = paddle.concat([inp.prompt_ids, inp.completion_ids], axis=1)  # (N, L + T)
        out = model(input_ids=full, attention_mask=inp.attention_mask, position_ids=inp.position_ids,
                    pixel_values=inp.pixel_values, image_grid_thw=inp.image_grid_thw, group_size=inp.group_size,
                    prompt_length=length, return_logits=False)
        hidden = out.hidden_states[:, length - 1:length + t - 1]  # (N, T, H): positions that predict each token
    h = hidden.reshape([n * t, hidden.shape[-1]])  # (N*T, H)
    weight = model.lm_head.weight  # (V, H)
    index = inp.completion_ids.reshape([-1])  # (N*T,)
    if with_entropy:
        lp, ent = selective_log_softmax_and_entropy_from_hidden(h, weight, index, temperature, chunk_size,
                                                                transpose_weight=True)
        return lp.reshape([n, t]), ent.reshape([n, t])
    lp = selective_log_softmax_from_hidden(h, weight, index, temperature, chunk_size, transpose_weight=True)
    return lp.reshape([n, t])
