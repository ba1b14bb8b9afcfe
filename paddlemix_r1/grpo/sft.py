"""Supervised warm-up: cross-entropy on the assistant tokens only (the prompt, image tokens and
padding carry no loss). Used before GRPO to teach an answer format, and for rejection-sampling SFT
(Curr-ReFT): feed it the completions that scored well (``grpo.reject_sample`` writes them).

It reuses the log-prob pass of GRPO, so the same positions, pixels and chunked log-softmax apply.

SFT files (``read_sft_jsonl``) are ms-swift's "messages" JSONL, the format Curr-ReFT's rejection-sampling
SFT trains on, one example a line::

    {"messages": [{"role": "system", "content": "..."},          # optional
                  {"role": "user", "content": "<image>How many ...? First output ..."},
                  {"role": "assistant", "content": "<think>...</think><answer>3</answer>"}],
     "images": ["/data/img/0001.png"]}                            # optional; one per <image> tag

Exactly one user turn and one assistant turn (after an optional system turn): the loss is on the
assistant turn, as ms-swift's default. ``<image>`` tags mark where the images go in the user turn
(tags and ``images`` must agree in number); relative image paths are resolved against ``image_root``
(default: the working directory, as ms-swift does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import paddle

from paddlemix_r1.grpo.logprobs import RolloutInputs, completion_logprobs

IMAGE_TAG = "<image>"


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
            learning_rate: float = 1e-3, seed: int = 0, log: Callable[[int, float], None] | None = None,
            freeze_vision: bool = False) -> list[float]:
    """``steps`` AdamW steps on random mini-batches of ``rows``; returns the loss of each step.

    Trains the parameters without stop_gradient: after ``models.lora.apply_lora`` only the adapters (then
    ``model.save_pretrained`` writes the merged weights and ``lora.save_adapter`` the PEFT adapter).
    ``freeze_vision``: the vision tower (and merger) is frozen for the run (ms-swift's ``freeze_vit``;
    Curr-ReFT's rejection-sampling SFT leaves it trainable); its stop_gradient flags are restored after."""
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps} and {batch_size}")
    if not rows:
        raise ValueError("run_sft needs at least one row")
    rng = np.random.default_rng(seed)
    frozen = [p for p in model.visual.parameters() if not p.stop_gradient] if freeze_vision else []
    for p in frozen:
        p.stop_gradient = True
    try:
        return _sft_steps(model, processor, rows, conversation, answer, steps, batch_size, learning_rate, rng, log)
    finally:
        for p in frozen:
            p.stop_gradient = False


def _sft_steps(model, processor, rows, conversation, answer, steps, batch_size, learning_rate, rng, log) -> list[float]:
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


def _example(obj: Any, where: str, image_root: str | None) -> dict:
    """One ms-swift "messages" record as an SFT row: {"id", "images", "conversation", "answer"}."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: an SFT record must be a JSON object, got {type(obj).__name__}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError(f"{where}: field 'messages' must be a list of {{role, content}} objects, got {messages!r}")
    roles = [m.get("role") for m in messages]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise ValueError(f"{where}: field 'messages' must be [system,] user, assistant (one exchange), got roles {roles}")
    for m in messages:
        if not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: the {m['role']} message's 'content' must be a string, got {m.get('content')!r}")
    images = obj.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise ValueError(f"{where}: field 'images' must be a list of image paths, got {images!r}")
    user = messages[-2]["content"]
    if user.count(IMAGE_TAG) != len(images):
        raise ValueError(f"{where}: the user turn has {user.count(IMAGE_TAG)} {IMAGE_TAG} tags for {len(images)} images")
    text = user.replace(IMAGE_TAG, "").strip()
    if not text and not images:
        raise ValueError(f"{where}: the user turn is empty")
    paths = [p if os.path.isabs(p) or image_root is None else os.path.join(image_root, p) for p in images]
    for p in paths:
        if not os.path.isfile(p):
            raise ValueError(f"{where}: field 'images': image file not found: {p}")
    conversation: list[dict] = []
    if roles[0] == "system":
        conversation.append({"role": "system", "content": messages[0]["content"]})
    conversation.append({"role": "user", "content": [{"type": "image"}] * len(images) + [{"type": "text", "text": text}]})
    return {"id": where, "images": paths, "conversation": conversation, "answer": messages[-1]["content"]}


def read_sft_jsonl(path: str, image_root: str | None = None) -> list[dict]:
    """The examples of an ms-swift "messages" JSONL (module docstring) as rows for ``run_sft``:
    ``{"id": "<file>:<line>", "images": [paths], "conversation": [messages], "answer": str}``.

    ValueError naming ``<file>:<line>`` and the field for a malformed record or a missing image."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON: {e.msg}") from None
            rows.append(_example(obj, where, image_root))
    if not rows:
        raise ValueError(f"{path}: no SFT records")
    return rows

