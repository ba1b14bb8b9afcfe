"""Qwen2-VL, Qwen2.5-VL and text-only Qwen2 LMs in Paddle; ``from_pretrained`` picks the family from config.json."""

from paddlemix_r1.models.checkpoint import from_pretrained, save_pretrained
from paddlemix_r1.models.config import ModelConfig, TextConfig, VisionConfig
from paddlemix_r1.models.decoder import CausalLMBase, ModelOutput, PastKeyValues, VLModelBase
from paddlemix_r1.models.qwen2 import Qwen2ForCausalLM, build_tiny_text_checkpoint, tiny_text_config
from paddlemix_r1.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from paddlemix_r1.models.qwen2_vl import Qwen2VLForConditionalGeneration
from paddlemix_r1.models.registry import MODEL_CLASSES
from paddlemix_r1.models.rope_index import get_rope_index
from paddlemix_r1.models.tiny import build_tiny_checkpoint, tiny_config

__all__ = [
    "CausalLMBase",
    "MODEL_CLASSES",
    "ModelConfig",
    "ModelOutput",
    "PastKeyValues",
    "Qwen2ForCausalLM",
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "TextConfig",
    "VLModelBase",
    "VisionConfig",
    "build_tiny_checkpoint",
    "build_tiny_text_checkpoint",
    "from_pretrained",
    "get_rope_index",
    "save_pretrained",
    "tiny_config",
    "tiny_text_config",
]
