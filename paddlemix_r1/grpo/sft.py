"""Supervised warm-up: cross-entropy on the assistant tokens only (the prompt, image tokens and
padding carry no loss). Used before GRPO to teach an answer format, and for rejection-sampling SFT
(Curr-ReFT): feed it the completions that scored well.

It reuses the log-prob pass of GRPO, so the same positions, pixels and chunked log-softmax apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import paddle

from paddlemix_r1.grpo.logprobs import RolloutInputs, completion_logprobs


def build_sft_inputs(model, processor, prompts: Sequence[list[dict]], images: Sequence[list], answers: Sequence[str]
                     ) -> tuple[RolloutInputs, paddle.Tensor]:
    """Left-padded prompts + right-padded answers (each ending in eos); returns inputs and the answer mask (B, T)."""
    batch = processor(list(prompts), list(images))
    eos, pad = processor.eos_token_id, processor.pad_token_id
    answer_ids = [processor.tokenizer.encode(a) + [eos] for a in answers]
    t = max(map(len, answer_ids))
    comp = np.full((len(answers), t), pad, np.int64)
    mask = np.zeros((len(answers), t), np.int64)
    for i, ids in enumerate(answer_ids):
        comp[i, :len(ids)] = ids
        mask[i, :len(ids)] = 1
    completion_ids, completion_mask = paddle.to_tensor(comp), paddle.to_tensor(mask)
    full_ids = paddle.concat([batch["input_ids"], completion_ids], axis=1)  # (B, L + T)
    full_mask = paddle.concat([batch["attention_mask"], completion_mask], axis=1)
    position_ids, _ = model.rope_index(full_ids, full_mask, batch.get("image_grid_thw"))
    inputs = RolloutInputs(batch["input_ids"], completion_ids, full_mask, position_ids, batch.get("pixel_values"),
                           batch.get("image_grid_thw"), 1)
    return inputs, completion_mask


def sft_loss(model, inputs: RolloutInputs, completion_mask: paddle.Tensor, chunk_size: int = 512) -> paddle.Tensor:
    """Mean negative log-likelihood over answer tokens."""
    logps = completion_logprobs(model, inputs, temperature=1.0, chunk_size=chunk_size)  # (B, T)
    mask = completion_mask.astype(logps.dtype)
    return -(logps * mask).sum() / mask.sum().clip(min=1.0)


def run_sft(model, processor, rows: Sequence[dict], conversation: Callable[[dict], list[dict]],
            answer: Callable[[dict, np.random.Generator], str], steps: int, batch_size: int = 8,
            learning_rate: float = 1e-3, seed: int = 0, log: Callable[[int, float], None] | None = None) -> list[float]:
    """``steps`` AdamW steps on random mini-batches of ``rows``; returns the loss of each step.

    Trains the parameters without stop_gradient: after ``models.lora.apply_lora`` only the adapters (then
    ``model.save_pretrained`` writes the merged weights and ``lora.save_adapter`` the PEFT adapter)."""
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if not p.stop_gradient]
    opt = paddle.optimizer.AdamW(learning_rate=learning_rate, parameters=params, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        picked = [rows[i] for i in rng.choice(len(rows), size=min(batch_size, len(rows)), replace=False)]
        inputs, mask = build_sft_inputs(model, processor, [conversation(r) for r in picked],
                                        [r["images"] for r in picked], [answer(r, rng) for r in picked])
        loss = sft_loss(model, inputs, mask)
        loss.backward()
        opt.step()
        opt.clear_grad(set_to_zero=False)
        losses.append(float(loss))
        if log is not None:
            log(step, losses[-1])
    model.eval()
    return losses
