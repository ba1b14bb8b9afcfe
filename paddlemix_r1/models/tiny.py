"""Tiny random checkpoints built locally (no downloads): the demo, the quick start and tests use them.

A tiny checkpoint is a real one: HF file layout, the Qwen2-VL chat template and special tokens, and
the same architecture as the published models at a small width.
"""

from __future__ import annotations

import os

from paddlemix_r1.models.config import ModelConfig, TextConfig, VisionConfig
from paddlemix_r1.models.registry import MODEL_CLASSES


def tiny_config(family: str = "qwen2_5_vl", vocab_size: int = 512, token_ids: dict | None = None,
                hidden: int = 64, layers: int = 2, vision_dim: int = 32, vision_depth: int = 2,
                tie_word_embeddings: bool = True) -> ModelConfig:
    """A small ModelConfig of either family (head_dim 16, mrope_section [2, 3, 3])."""
    ids = token_ids or {}
    heads = hidden // 16
    text = TextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), rms_norm_eps=1e-6,
                      rope_theta=10000.0, mrope_section=[2, 3, 3])
    if family == "qwen2_vl":
        vision = VisionConfig(depth=vision_depth, embed_dim=vision_dim, num_heads=vision_dim // 16, out_hidden_size=hidden,
                              hidden_act="quick_gelu", intermediate_size=vision_dim * 2)
    elif family == "qwen2_5_vl":
        vision = VisionConfig(depth=vision_depth, embed_dim=vision_dim, num_heads=vision_dim // 16, out_hidden_size=hidden,
                              hidden_act="silu", intermediate_size=vision_dim * 2, window_size=56,
                              fullatt_block_indexes=[vision_depth - 1])
    else:
        raise ValueError(f"family must be 'qwen2_vl' or 'qwen2_5_vl', got {family!r}")
    return ModelConfig(
        model_type=family, text=text, vision=vision,
        image_token_id=ids.get("image_token_id", vocab_size - 2),
        video_token_id=ids.get("video_token_id", vocab_size - 1),
        vision_start_token_id=ids.get("vision_start_token_id", vocab_size - 5),
        vision_end_token_id=ids.get("vision_end_token_id", vocab_size - 4),
        tie_word_embeddings=tie_word_embeddings,
    )


def build_tiny_checkpoint(out_dir: str, family: str = "qwen2_5_vl", seed: int = 0, min_pixels: int = 56 * 56,
                          max_pixels: int = 28 * 28 * 16, **config_kwargs) -> str:
    """Write tokenizer, processor config, config.json and random weights to ``out_dir``; return it."""
    from paddlemix_r1.processing.tiny import build_tiny_tokenizer

    os.makedirs(out_dir, exist_ok=True)
    processor_class = "Qwen2_5_VLProcessor" if family == "qwen2_5_vl" else "Qwen2VLProcessor"
    ids = build_tiny_tokenizer(out_dir, min_pixels=min_pixels, max_pixels=max_pixels, processor_class=processor_class)
    config = tiny_config(family, vocab_size=ids["vocab_size"], token_ids=ids, **config_kwargs)
    model = MODEL_CLASSES[family](config)
    model.init_weights(std=0.02, seed=seed)
    model.save_pretrained(out_dir)
    # save_pretrained renames a tempfile.mkdtemp directory into place, which is 0700 whatever the umask.
    mask = os.umask(0o022)
    os.umask(mask)
    for dirpath, _, _ in os.walk(out_dir):
        os.chmod(dirpath, 0o777 & ~mask)
    return out_dir
