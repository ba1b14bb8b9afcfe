"""SwiGLU and the GELU variants the vision towers use."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from paddlemix_r1.ops.dispatch import get, implementation, register


@register("swiglu", "eager")
def swiglu_eager(gate: paddle.Tensor, up: paddle.Tensor) -> paddle.Tensor:
    return F.silu(gate) * up


@register("swiglu", "fused")
def swiglu_fused(gate: paddle.Tensor, up: paddle.Tensor | None = None) -> paddle.Tensor:
    return F.swiglu(gate, up)


def swiglu(gate: paddle.Tensor, up: paddle.Tensor) -> paddle.Tensor:
    """silu(gate) * up."""
    return get("swiglu")(gate, up)


def swiglu_packed(gate_up: paddle.Tensor) -> paddle.Tensor:
    """silu(x1) * x2 for x = [x1 | x2] along the last axis (the packed gate/up projection)."""
    if implementation("swiglu") == "fused":
        return F.swiglu(gate_up)  # one op, no split
    gate, up = gate_up.chunk(2, axis=-1)
    return swiglu_eager(gate, up)


def quick_gelu(x: paddle.Tensor) -> paddle.Tensor:
    return x * F.sigmoid(1.702 * x)


def gelu(x: paddle.Tensor) -> paddle.Tensor:
    """Exact (erf) GELU, as torch.nn.GELU()."""
    return F.gelu(x, approximate=False)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": gelu, "silu": F.silu}
