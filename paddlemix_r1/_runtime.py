"""Process start-up settings that must be in place before paddle is imported.

Paddle's CPU build uses Intel MKL, which on AMD cores picks slow generic kernels unless
``MKL_DEBUG_CPU_TYPE=5`` is set, and which runs one thread unless told otherwise. Both are
set here as defaults; a value the user already exported wins.
"""

from __future__ import annotations

import os
import sys


def configure_cpu_runtime() -> None:
    if "paddle" in sys.modules:
        # Too late to influence MKL's dispatch; keep whatever the process has.
        return
    os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    cores = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", cores)
    os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
