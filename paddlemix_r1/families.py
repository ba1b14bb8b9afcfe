"""The model families, by config.json's ``model_type``: one list for the whole package."""

QWEN2_VL = "qwen2_vl"
QWEN2_5_VL = "qwen2_5_vl"
VISION_FAMILIES = (QWEN2_VL, QWEN2_5_VL)
"""Vision-language families: their box frames differ (rewards/coords.py)."""
TEXT_FAMILIES = ("qwen2",)
"""Text-only causal LMs in Qwen2ForCausalLM's layout (R1-Distill-Qwen, Qwen2.5-Instruct: models/qwen2.py)."""
