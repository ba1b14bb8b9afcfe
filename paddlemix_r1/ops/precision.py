"""fp32 regions: statistics, rotary tables, softmax and log-softmax stay in fp32 under AMP."""

from __future__ import annotations

import contextlib

import paddle


def fp32_region() -> contextlib.AbstractContextManager:
    """``paddle.amp.auto_cast(enable=False)`` while AMP is on; a no-op otherwise.

    Entering the AMP guard costs ~25 us; a CPU decode step (fp32, AMP off) would enter ~40 of them
    for nothing, about 1 ms of its ~9 ms.
    """
    return paddle.amp.auto_cast(enable=False) if paddle.amp.is_autocast_enabled() else contextlib.nullcontext()
