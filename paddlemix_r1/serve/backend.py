"""A loaded checkpoint as the server sees it: encode one chat into prompt ids (+ pixels), collate
prompts into one left-padded batch, run ``generation.generate``, decode.

A model without a vision tower plugs in through the same path: ``supports_images=False`` (image
parts are then a 400) and its prompts carry no pixels, so the collated batch has no
``pixel_values`` / ``image_grid_thw``; ``generate`` is called the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from paddlemix_r1.families import TEXT_FAMILIES, VISION_FAMILIES

DEFAULT_CONTEXT = 32768  # Qwen2-VL's max_position_embeddings, for configs that do not say


@dataclass
class PreparedPrompt:
    """One encoded prompt, ready to be collated with others."""

    input_ids: np.ndarray  # (L,) int64, image placeholders already expanded
    pixel_values: np.ndarray | None  # (N, C*T*P*P) float32, this prompt's images in order
    image_grid_thw: np.ndarray | None  # (num_images, 3) int64

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


class ChatModel:
    """Model + processor of one checkpoint.

    ``processor(conversations, images, return_tensors="np")`` must return ``input_ids`` (B, L) (and,
    for a vision model, ``pixel_values`` / ``image_grid_thw``); ``model`` must be what
    ``paddlemix_r1.generation.generate`` takes. Only the worker thread may call ``generate``.
    """

    def __init__(self, model: Any, processor: Any, name: str, max_model_len: int, supports_images: bool) -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.max_model_len = max_model_len
        self.supports_images = supports_images
        self.eos_token_id = processor.eos_token_id
        # Any id works for padding: padded prompt positions are masked out and padded completion positions
        # are cut off before decoding. A tokenizer without a pad token still needs one for the id arrays.
        self.pad_token_id = processor.pad_token_id if processor.pad_token_id is not None else 0

    def encode(self, messages: list[dict[str, Any]], images: list[Any]) -> PreparedPrompt:
        """One conversation (the Processor's message format, ``{"type": "image"}`` placeholders) -> ids."""
        if not self.supports_images:
            # A text model's chat template reads each message's content as one string (Qwen2's does).
            messages = [{**m, "content": _text_of(m["content"])} for m in messages]
        out = self.processor([messages], [images] if images else None, return_tensors="np")
        mask = out["attention_mask"][0].astype(bool)
        return PreparedPrompt(out["input_ids"][0][mask], out.get("pixel_values"), out.get("image_grid_thw"))

    def collate(self, prompts: list[PreparedPrompt]) -> dict[str, Any]:
        """Left-pad ids to the longest prompt, concatenate pixels in row order (the Processor's batch)."""
        import paddle

        longest = max(p.num_tokens for p in prompts)
        ids = np.full((len(prompts), longest), self.pad_token_id, np.int64)  # (B, L)
        mask = np.zeros((len(prompts), longest), np.int64)  # (B, L)
        for i, p in enumerate(prompts):
            ids[i, longest - p.num_tokens:] = p.input_ids
            mask[i, longest - p.num_tokens:] = 1
        batch: dict[str, Any] = {"input_ids": paddle.to_tensor(ids), "attention_mask": paddle.to_tensor(mask),
                                 "pixel_values": None, "image_grid_thw": None}
        with_images = [p for p in prompts if p.pixel_values is not None]
        if with_images:
            batch["pixel_values"] = paddle.to_tensor(np.concatenate([p.pixel_values for p in with_images]))  # (N, D)
            batch["image_grid_thw"] = paddle.to_tensor(np.concatenate([p.image_grid_thw for p in with_images]))
        return batch

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode(ids, skip_special_tokens=True)


def _text_of(content: Any) -> str:
    """A message's content as one string: its text parts joined (the schema has refused image parts)."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")


def context_length(config_json: dict[str, Any]) -> int:
    """``max_position_embeddings`` of either config layout (flat, or under ``text_config``)."""
    for d in (config_json, config_json.get("text_config") or {}):
        if "max_position_embeddings" in d:
            return int(d["max_position_embeddings"])
    return DEFAULT_CONTEXT


def load_chat_model(model_path: str, name: str, dtype: str = "float32", max_model_len: int | None = None) -> ChatModel:
    """Load a Qwen2-VL / Qwen2.5-VL checkpoint, or a text-only Qwen2 causal LM, for serving."""
    config_file = os.path.join(model_path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"no config.json in {model_path}: not a checkpoint directory")
    with open(config_file, encoding="utf-8") as f:
        config_json = json.load(f)
    model_type = config_json.get("model_type")
    if model_type is None and "Qwen2ForCausalLM" in (config_json.get("architectures") or []):
        model_type = "qwen2"  # as models.config reads a text config without model_type
    if model_type not in VISION_FAMILIES + TEXT_FAMILIES:
        raise ValueError(f"{config_file}: model_type {model_type!r}; the server serves "
                         f"{VISION_FAMILIES + TEXT_FAMILIES}")
    from paddlemix_r1.models import from_pretrained
    from paddlemix_r1.processing.processor import load_processor

    limit = context_length(config_json)
    if max_model_len is not None:
        if max_model_len > limit:
            raise ValueError(f"max_model_len {max_model_len} exceeds the checkpoint's max_position_embeddings {limit}")
        limit = max_model_len
    return ChatModel(from_pretrained(model_path, dtype=dtype), load_processor(model_path), name,
                     max_model_len=limit, supports_images=model_type in VISION_FAMILIES)
