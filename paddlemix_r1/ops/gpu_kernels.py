"""The Paddle GPU kernels that the ``fused`` implementations call, looked up in one place.

A fused implementation never imports a Paddle kernel itself; it asks ``kernel(name)``. On a CUDA build
that is Paddle's function. ``ops/contracts.py`` can put a CPU stand-in in its place (``substituted``)
that enforces what Paddle's GPU kernel checks, so the fused implementations' call shapes, dtypes and
arguments run in the CPU test suite.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator

# name -> (module, attribute) of Paddle 3.3's function
PADDLE_KERNELS = {
    "fused_rotary_position_embedding": ("paddle.incubate.nn.functional", "fused_rotary_position_embedding"),
    "scaled_dot_product_attention": ("paddle.nn.functional", "scaled_dot_product_attention"),
    "flash_attn_unpadded": ("paddle.nn.functional.flash_attention", "flash_attn_unpadded"),
    "fused_rms_norm": ("paddle.incubate.nn.functional", "fused_rms_norm"),
    "swiglu": ("paddle.nn.functional", "swiglu"),
    "get_device_capability": ("paddle.device.cuda", "get_device_capability"),
}
# Paddle's flash-attention fork (csrc/capi/flash_attn.cu, CHECK_FWD_EXECTUABLE): sm8x or sm90 only, head_dim a
# multiple of 8 and at most 256; its kernels are registered for float16 and bfloat16 only (flash_attn_kernel.cu).
FLASH_DTYPES = ("float16", "bfloat16")
FLASH_MAX_HEAD_DIM = 256
_substitutes: dict[str, Callable] = {}


def kernel(name: str) -> Callable:
    """Paddle's GPU kernel ``name`` (or its substitute inside ``substituted``)."""
    fn = _substitutes.get(name)
    if fn is not None:
        return fn
    module, attr = PADDLE_KERNELS[name]
    return getattr(importlib.import_module(module), attr)


@contextlib.contextmanager
def substituted(fns: dict[str, Callable]) -> Iterator[None]:
    """Use ``fns`` in place of the named Paddle kernels inside the block."""
    unknown = sorted(set(fns) - set(PADDLE_KERNELS))
    if unknown:
        raise KeyError(f"no Paddle kernel named {unknown}; known: {sorted(PADDLE_KERNELS)}")
    saved = dict(_substitutes)
    _substitutes.update(fns)
    try:
        yield
    finally:
        _substitutes.clear()
        _substitutes.update(saved)


def flash_attention_runs(dtype: str, head_dim: int) -> bool:
    """Whether Paddle's flash-attention kernels accept this dtype and head_dim on the current GPU."""
    if dtype not in FLASH_DTYPES or head_dim % 8 or head_dim > FLASH_MAX_HEAD_DIM:
        return False
    major, minor = kernel("get_device_capability")()
    return major == 8 or (major, minor) == (9, 0)
