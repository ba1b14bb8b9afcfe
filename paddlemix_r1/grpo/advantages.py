"""Group-relative advantages, as TRL 1.16's ``GRPOTrainer`` computes them.

TRL (``multi_objective_aggregation="sum_then_normalize"``, the default) does, on the rewards of the
whole generation batch gathered from all ranks, in group-major order:

    mean_g = nanmean of the group's rewards                              (always per group)
    std    = "group": unbiased (Bessel) nanstd of the group's rewards
             "batch": unbiased nanstd of ALL rewards of the batch  (the mean stays per group)
             "none":  no division
    A      = (r - mean_g) / (std + 1e-4),   NaN advantages -> 0

A std over a single value is NaN in TRL's nanstd; with G == 1 ("group"/"none") or a batch of one
("batch") TRL uses std = 0 instead, and so does this module. A reward of NaN marks an unscorable
completion: it is left out of means and stds and gets advantage 0.

Departures from TRL, deliberate and at rounding level only:
- Computed in float64 numpy (TRL: float32, the dtype of its rewards tensor). Callers cast the
  result to the training dtype. (TRL's ``nanstd`` forms its Bessel factor count / (count - 1) from
  integer tensors, i.e. in float32, so even a float64 TRL run is only float32-accurate there.)
- A group whose non-NaN rewards are all equal gets advantage exactly 0. In TRL the group mean of,
  e.g., eight float32 0.1s is off by an ulp, and (r - mean) / (0 + 1e-4) then leaves ~1e-4 of noise.
- Infinite rewards raise instead of propagating; they are a reward-function bug.

``eps`` is a parameter here; TRL 1.16 hard-codes 1e-4.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["SCALE_REWARDS", "compute_advantages"]

ScaleRewards = Literal["group", "batch", "none"]
SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")


def _nanmean(x: np.ndarray, axis: int | None) -> np.ndarray:
    """Mean over non-NaN entries; NaN where there are none (torch.nanmean, without numpy's warning)."""
    count = np.sum(~np.isnan(x), axis=axis, keepdims=True)
    total = np.nansum(x, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nanstd(x: np.ndarray, axis: int | None) -> np.ndarray:
    """Unbiased std over non-NaN entries; NaN with fewer than two (trl.trainer.utils.nanstd)."""
    count = np.sum(~np.isnan(x), axis=axis, keepdims=True)
    sq_dev = np.nansum((x - _nanmean(x, axis)) ** 2, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 1, np.sqrt(sq_dev / np.maximum(count - 1, 1)), np.nan)


def compute_advantages(
    rewards: np.ndarray | Sequence[float],
    num_generations: int,
    scale_rewards: ScaleRewards = "group",
    eps: float = 1e-4,
) -> np.ndarray:
    """Advantages for a group-major batch of rewards.

    Args:
        rewards: [B * G] total (weighted-sum) reward per completion; rows ``i*G .. i*G+G-1`` are
            the completions of prompt ``i``. NaN marks an unscorable completion.
        num_generations: G, completions per prompt.
        scale_rewards: "group" (divide by the group's std), "batch" (by the whole batch's std;
            the baseline is still the group mean) or "none" (Dr. GRPO: centre only).
        eps: added to the std before dividing.

    Returns:
        float64 array [B * G]. Finite; 0 for unscorable completions and for groups whose rewards
        are all equal.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    r = np.asarray(rewards, dtype=np.float64)  # (N,) with N = B * G
    if r.ndim != 1 or r.size % num_generations != 0:
        raise ValueError(f"rewards must be 1-D with a multiple of G={num_generations} entries, got {r.shape}")
    if np.isinf(r).any():
        raise ValueError("rewards contain +-inf; a reward function returned a non-finite score")

    grouped = r.reshape(-1, num_generations)  # (B, G)
    mean = np.broadcast_to(_nanmean(grouped, axis=1), grouped.shape)  # (B, G)
    if scale_rewards == "batch":
        std = _nanstd(r, axis=None) if r.size > 1 else np.zeros(1)  # (1,)
        std = np.broadcast_to(std.reshape(1, 1), grouped.shape)  # (B, G)
    elif num_generations > 1:
        std = np.broadcast_to(_nanstd(grouped, axis=1), grouped.shape)  # (B, G)
    else:
        std = np.zeros_like(grouped)  # (B, 1)

    advantages = grouped - mean  # (B, G)
    if scale_rewards != "none":
        advantages = advantages / (std + eps)  # (B, G)

    # Exact zero for constant groups: (r - mean) is rounding noise there, and /(0 + eps) amplifies it.
    constant = _constant_groups(grouped)  # (B, 1)
    advantages = np.where(constant | np.isnan(advantages), 0.0, advantages)  # (B, G)
    return advantages.reshape(-1)  # (N,)


def _constant_groups(grouped: np.ndarray) -> np.ndarray:
    """[B, 1] True where a group's non-NaN rewards are all equal (all-NaN groups count as constant)."""
    nan = np.isnan(grouped)  # (B, G)
    hi = np.where(nan, -np.inf, grouped).max(axis=1, keepdims=True)  # (B, 1)
    lo = np.where(nan, np.inf, grouped).min(axis=1, keepdims=True)  # (B, 1)
    return (hi == lo) | nan.all(axis=1, keepdims=True)
