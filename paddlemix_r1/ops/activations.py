"""SwiGLU and the GELU variants the vision towers use."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from paddlemix_r1.ops.dispatch import get, register


@register("swiglu", "eager")
def swiglu_eager(gate: paddle.Tensor, up: paddle.Tensor) -> paddle.Tensor:
    return F.silu(gate) * up


@register("swiglu", "fused")
def swiglu_fused(gate: paddle.Tensor, up: paddle.Tensor) -> paddle.Tensor:
    return F.swiglu(gate, up)


def swiglu(gate: paddle.Tensor, up: paddle.Tensor) -> paddle.Tensor:
    """silu(gate) * up."""
    return get("swiglu")(gate, up)


def quick_gelu(x: paddle.Tensor) -> paddle.Tensor:
    return x * F.sigmoid(1.702 * x)


def gelu(x: paddle.Tensor) -> paddle.Tensor:
    """Exact (erf) GELU, as torch.nn.GELU()."""
    return F.gelu(x, approximate=False)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": gelu, "silu": F.silu}
