"""Rollout engine: batched KV-cache generation with group prefix sharing."""

from paddlemix_r1.generation.engine import GenerationOutput, decode_one_token, generate, prefill
from paddlemix_r1.generation.sampling import sample, top_k_filter, top_p_filter

__all__ = ["GenerationOutput", "decode_one_token", "generate", "prefill", "sample", "top_k_filter", "top_p_filter"]
