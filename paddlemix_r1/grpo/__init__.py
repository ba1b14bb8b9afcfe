"""GRPO: config, advantages, loss variants as pure functions, the trainer loop, checkpoints, SFT warm-up."""

from paddlemix_r1.grpo.advantages import compute_advantages
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.loss import LOSS_REDUCTIONS, grpo_loss

__all__ = ["LOSS_REDUCTIONS", "GRPOConfig", "compute_advantages", "grpo_loss"]
