"""Qwen2 / Qwen2.5 text-only causal LMs (``Qwen2ForCausalLM``: Qwen2.5-Instruct, DeepSeek-R1-Distill-Qwen).

The same decoder as the vision-language families (models/decoder.py) with no vision tower: q/k/v
projections with bias, o_proj without, SwiGLU MLP, RMSNorm, rotary embeddings over text positions
(the M-RoPE tables with all three axes equal are exactly 1-D RoPE), a tied or untied LM head.
Checkpoint keys are the published ones (``model.layers.N.self_attn.q_proj``, ``lm_head``), so
``from_pretrained`` loads them with the VL families' loader.

``build_tiny_text_checkpoint`` writes a tiny random one (tokenizer and chat template, no image processor)
for tests and the demos.
"""

from __future__ import annotations

import os

from paddlemix_r1.models.config import ModelConfig, TextConfig
from paddlemix_r1.models.decoder import CausalLMBase


class Qwen2ForCausalLM(CausalLMBase):
    """Decoder + LM head; ``model(input_ids=..., attention_mask=...).logits`` (B, L, V)."""


def tiny_text_config(vocab_size: int = 512, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                     intermediate: int | None = None, tie_word_embeddings: bool = True,
                     rope_theta: float = 10000.0) -> ModelConfig:
    """A small Qwen2ForCausalLM config (head_dim = hidden / heads)."""
    text = TextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      rms_norm_eps=1e-6, rope_theta=rope_theta, mrope_section=[hidden // heads // 2])
    return ModelConfig(model_type="qwen2", text=text, vision=None, tie_word_embeddings=tie_word_embeddings)


def build_tiny_text_checkpoint(out_dir: str, seed: int = 0, **config_kwargs) -> str:
    """Write a tiny random Qwen2ForCausalLM to ``out_dir``: tokenizer files with the Qwen special tokens and
    chat template (eos ``<|im_end|>``, pad ``<|endoftext|>``), config.json, random weights; return ``out_dir``.

    The tokenizer is the tiny VL one (processing/tiny.py) without its image processor config: a text
    checkpoint has no ``preprocessor_config.json``."""
    from paddlemix_r1.processing.tiny import build_tiny_tokenizer

    os.makedirs(out_dir, exist_ok=True)
    ids = build_tiny_tokenizer(out_dir)
    os.remove(os.path.join(out_dir, "preprocessor_config.json"))
    config = tiny_text_config(vocab_size=ids["vocab_size"], **config_kwargs)
    model = Qwen2ForCausalLM(config)
    model.init_weights(std=0.02, seed=seed)
    model.save_pretrained(out_dir)
    return out_dir
