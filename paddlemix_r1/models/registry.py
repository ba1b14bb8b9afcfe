"""The model class of each ``model_type`` in config.json (``checkpoint.from_pretrained``, ``tiny``)."""

from paddlemix_r1.models.qwen2 import Qwen2ForCausalLM
from paddlemix_r1.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from paddlemix_r1.models.qwen2_vl import Qwen2VLForConditionalGeneration

MODEL_CLASSES = {
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen2": Qwen2ForCausalLM,
}
