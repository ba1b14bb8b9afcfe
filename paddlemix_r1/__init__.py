"""paddlemix_r1: R1-style GRPO for Qwen2-VL and Qwen2.5-VL, native PaddlePaddle.

Importing the package only checks that a Paddle >= 3.3 is installed; it changes no process state.
``configure_runtime()`` applies the CPU runtime settings (MKL variables, malloc thresholds, a Paddle
flag: see ``paddlemix_r1._runtime``), returns what it set, and ``restore_runtime()`` undoes it. The
``paddlemix-r1`` command line calls it first; call it first in your own scripts and notebooks.
"""

from paddlemix_r1._runtime import check_paddle_installed, configure_runtime, restore_runtime, runtime_settings

check_paddle_installed()

__version__ = "0.1.0"
__all__ = ["configure_runtime", "restore_runtime", "runtime_settings", "__version__"]
