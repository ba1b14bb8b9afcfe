"""paddlemix_r1: R1-style GRPO for Qwen2-VL and Qwen2.5-VL, native PaddlePaddle."""

from paddlemix_r1._runtime import check_paddle_installed, configure_cpu_runtime

check_paddle_installed()
configure_cpu_runtime()

__version__ = "0.1.0"
