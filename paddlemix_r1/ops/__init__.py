"""Every fast path in one place; see ``dispatch`` for how an implementation is chosen."""

from paddlemix_r1.ops.activations import ACTIVATIONS, gelu, quick_gelu, swiglu, swiglu_packed
from paddlemix_r1.ops.attention import (
    attention,
    causal_padding_mask,
    grouped_decode_attention,
    varlen_attention,
    vision_attention,
)
from paddlemix_r1.ops.dispatch import device_kind, implementation, override, reset
from paddlemix_r1.ops.linear import linear
from paddlemix_r1.ops.norms import layer_norm, rms_norm
from paddlemix_r1.ops.rotary import (
    apply_rotary,
    expand_tables,
    inv_freq,
    mrope_cos_sin,
    rotate_half_matrix,
    vision_cos_sin,
)
from paddlemix_r1.ops.softmax import categorical, log_softmax, softmax

__all__ = [
    "ACTIVATIONS",
    "apply_rotary",
    "attention",
    "categorical",
    "causal_padding_mask",
    "device_kind",
    "expand_tables",
    "gelu",
    "grouped_decode_attention",
    "implementation",
    "inv_freq",
    "layer_norm",
    "linear",
    "log_softmax",
    "mrope_cos_sin",
    "override",
    "quick_gelu",
    "reset",
    "rms_norm",
    "rotate_half_matrix",
    "softmax",
    "swiglu",
    "swiglu_packed",
    "varlen_attention",
    "vision_attention",
    "vision_cos_sin",
]
