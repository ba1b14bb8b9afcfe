"""SwiGLU and the GELU variants the vision towers use."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from paddlemix_r1.ops import cpu_ext
from paddlemix_r1.ops.dispatch import get, implementation, register
from paddlemix_r1.ops.gpu_kernels import kernel


@register("swiglu", "eager")
def swiglu_eager(gate: paddle.Tensor, up: paddle.Tensor) -> paddle.Tensor:
    return F.silu(gate) * up


@register("swiglu", "cpu_kernel")
def swiglu_cpu_kernel(gate: paddle.Tensor, up: paddle.Tensor) -> paddle.Tensor:
    """``swiglu_eager`` in one pass forward and one backward (ops/csrc/cpu_kernels.cc); fp32/fp64,
    ``cpu_ext.MIN_NUMEL`` elements or more (else eager)."""
    if not cpu_ext.takes("swiglu", gate, up) or gate.shape != up.shape:
        return swiglu_eager(gate, up)
    return cpu_ext.kernels().swiglu_cpu(gate, up)


@register("swiglu", "fused")
def swiglu_fused(gate: paddle.Tensor, up: paddle.Tensor | None = None) -> paddle.Tensor:
    """Paddle's ``F.swiglu`` (one kernel); ``up`` None: silu(x1) * x2 over the halves of ``gate``."""
    return kernel("swiglu")(gate, up)


def swiglu(gate: paddle.Tensor, up: paddle.Tensor) -> paddle.Tensor:
    """silu(gate) * up."""
    return get("swiglu")(gate, up)


def swiglu_packed(gate_up: paddle.Tensor) -> paddle.Tensor:
    """silu(x1) * x2 for x = [x1 | x2] along the last axis (the packed gate/up projection)."""
    if implementation("swiglu") == "fused":
        return swiglu_fused(gate_up)  # one op, no split
    gate, up = gate_up.chunk(2, axis=-1)
    return swiglu(gate, up)


@register("quick_gelu", "eager")
def quick_gelu_eager(x: paddle.Tensor) -> paddle.Tensor:
    return x * F.sigmoid(1.702 * x)


@register("quick_gelu", "cpu_kernel")
def quick_gelu_cpu_kernel(x: paddle.Tensor) -> paddle.Tensor:
    """``quick_gelu_eager`` in one pass forward and one backward (ops/csrc/cpu_kernels.cc); fp32/fp64,
    ``cpu_ext.MIN_NUMEL`` elements or more (else eager)."""
    return cpu_ext.kernels().quick_gelu_cpu(x) if cpu_ext.takes("quick_gelu", x) else quick_gelu_eager(x)


def quick_gelu(x: paddle.Tensor) -> paddle.Tensor:
    """x * sigmoid(1.702 x), as transformers' QuickGELUActivation."""
    return get("quick_gelu")(x)


def gelu(x: paddle.Tensor) -> paddle.Tensor:
    """Exact (erf) GELU, as torch.nn.GELU()."""
    return F.gelu(x, approximate=False)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": gelu, "silu": F.silu}
