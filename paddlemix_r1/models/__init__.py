"""Qwen2-VL and Qwen2.5-VL in Paddle; ``from_pretrained`` picks the family from config.json."""

from paddlemix_r1.models.config import ModelConfig, TextConfig, VisionConfig
from paddlemix_r1.models.decoder import KVCache, ModelOutput, VLModelBase
from paddlemix_r1.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from paddlemix_r1.models.qwen2_vl import Qwen2VLForConditionalGeneration
from paddlemix_r1.models.rope_index import get_rope_index

MODEL_CLASSES = {
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
}

from paddlemix_r1.models.checkpoint import from_pretrained, save_pretrained  # noqa: E402
from paddlemix_r1.models.tiny import build_tiny_checkpoint, tiny_config  # noqa: E402

__all__ = [
    "KVCache",
    "MODEL_CLASSES",
    "ModelConfig",
    "ModelOutput",
    "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "TextConfig",
    "VLModelBase",
    "VisionConfig",
    "build_tiny_checkpoint",
    "from_pretrained",
    "get_rope_index",
    "save_pretrained",
    "tiny_config",
]
