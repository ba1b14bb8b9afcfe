"""GRPO policy loss: clipped importance ratio + beta * k3 KL, with TRL 1.16's normalizations.

The per-token objective is the same for every loss type here; the types differ only in how the
masked per-token losses are reduced to a scalar, so each type is one pure reduction function in
``LOSS_REDUCTIONS``. All definitions follow ``trl.GRPOTrainer._compute_loss`` (TRL 1.16) with
``importance_sampling_level="token"`` and no vLLM importance-sampling correction:

    ratio          = exp(logp - old_logp)                                   (B, T)
    per_token_loss = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)
                     + beta * (exp(ref - logp) - (ref - logp) - 1)          (B, T)

    grpo     mean over sequences of (sum_t loss * mask) / max(sum_t mask, 1)
    bnpo     sum(loss * mask) / max(sum(mask), 1)                   (local batch)
    dr_grpo  sum(loss * mask) / (B * max_completion_length)
    dapo     sum(loss * mask) / max(num_items_in_batch, 1)         (global active-token count)

Departures from TRL's method, all deliberate:
- TRL divides grpo / bnpo / dr_grpo by the gradient-accumulation step count inside the loss, and
  rescales dapo's normalizer by ``num_processes`` and ``gradient_accumulation_steps /
  steps_per_generation``. Those are properties of the training loop, not of the objective, so the
  caller applies them: divide the returned loss by the number of accumulated micro-batches for
  grpo / bnpo / dr_grpo, and pass dapo's normalizer already rescaled (see ``grpo_loss``).
- The KL metric is reported whenever a reference is given, also for beta = 0 (TRL logs it only
  for beta != 0).
- Metrics are local-batch statistics; TRL all-reduces sums and counts across ranks before dividing.
  ``num_tokens`` is returned so a caller can form the same token-weighted global mean.

TRL 1.16 options that are not implemented here (the seed recipes do not use them): ``delta``
(INTELLECT-2 two-sided clipping, ``ratio = min(ratio, delta)`` on the unclipped branch),
``importance_sampling_level="sequence"`` (GSPO), ``use_bias_correction_kl`` (KL times the ratio),
``off_policy_mask_threshold`` (DeepSeek-V3.2 off-policy sequence mask), ``top_entropy_quantile``
(high-entropy token mask), the entropy bonus, the vLLM importance-sampling correction, and the
loss types ``cispo``, ``sapo``, ``luspo`` and ``vespo``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import paddle

__all__ = ["LOSS_REDUCTIONS", "clipped_surrogate", "grpo_loss", "per_token_kl"]


class Reduction(Protocol):
    def __call__(
        self,
        per_token_loss: paddle.Tensor,
        mask: paddle.Tensor,
        *,
        max_completion_length: int | None,
        num_items_in_batch: float | paddle.Tensor | None,
    ) -> paddle.Tensor: ...


def _reduce_grpo(
    per_token_loss: paddle.Tensor,
    mask: paddle.Tensor,
    *,
    max_completion_length: int | None,
    num_items_in_batch: float | paddle.Tensor | None,
) -> paddle.Tensor:
    """Per-sequence token mean, then mean over sequences (the GRPO paper's 1/G sum 1/|o_i| sum_t).

    The clamp keeps an empty completion at zero loss instead of NaN; it still counts in the batch mean.
    """
    seq_loss = (per_token_loss * mask).sum(-1) / mask.sum(-1).clip(min=1.0)  # (B,)
    return seq_loss.mean()  # ()


def _reduce_bnpo(
    per_token_loss: paddle.Tensor,
    mask: paddle.Tensor,
    *,
    max_completion_length: int | None,
    num_items_in_batch: float | paddle.Tensor | None,
) -> paddle.Tensor:
    """Token mean over the local batch."""
    return (per_token_loss * mask).sum() / mask.sum().clip(min=1.0)  # ()


def _reduce_dr_grpo(
    per_token_loss: paddle.Tensor,
    mask: paddle.Tensor,
    *,
    max_completion_length: int | None,
    num_items_in_batch: float | paddle.Tensor | None,
) -> paddle.Tensor:
    """Token sum over a constant budget B * max_completion_length (Dr. GRPO: no length bias)."""
    if max_completion_length is None:
        # The padded width T changes from batch to batch; using it would make the loss scale
        # batch-dependent, which is exactly what the constant is there to avoid.
        raise ValueError("loss_type='dr_grpo' needs max_completion_length (the generation budget).")
    return (per_token_loss * mask).sum() / (per_token_loss.shape[0] * max_completion_length)  # ()


def _reduce_dapo(
    per_token_loss: paddle.Tensor,
    mask: paddle.Tensor,
    *,
    max_completion_length: int | None,
    num_items_in_batch: float | paddle.Tensor | None,
) -> paddle.Tensor:
    """Token sum over the active-token count of the (global) batch (DAPO's token-level mean)."""
    if num_items_in_batch is None:
        normalizer = mask.sum()  # ()
    elif isinstance(num_items_in_batch, paddle.Tensor):
        normalizer = num_items_in_batch.astype(per_token_loss.dtype).reshape([])  # ()
    else:
        normalizer = paddle.to_tensor(float(num_items_in_batch), dtype=per_token_loss.dtype)  # ()
    return (per_token_loss * mask).sum() / normalizer.clip(min=1.0)  # ()


LOSS_REDUCTIONS: dict[str, Reduction] = {
    "grpo": _reduce_grpo,
    "bnpo": _reduce_bnpo,
    "dr_grpo": _reduce_dr_grpo,
    "dapo": _reduce_dapo,
}


def per_token_kl(per_token_logps: paddle.Tensor, ref_per_token_logps: paddle.Tensor) -> paddle.Tensor:
    """k3 estimator of KL(pi || pi_ref) per token: exp(ref - logp) - (ref - logp) - 1 (>= 0). [B, T]."""
    delta = ref_per_token_logps - per_token_logps  # (B, T)
    return paddle.exp(delta) - delta - 1.0  # (B, T)


def clipped_surrogate(
    per_token_logps: paddle.Tensor,
    old_per_token_logps: paddle.Tensor,
    advantages: paddle.Tensor,
    epsilon_low: float,
    epsilon_high: float,
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """PPO clipped surrogate per token, negated to be minimised.

    Args: log-probs [B, T] (gradient flows through ``per_token_logps`` only), advantages [B].
    Returns ``(per_token_loss [B, T], ratio [B, T])``.
    """
    ratio = paddle.exp(per_token_logps - old_per_token_logps)  # (B, T)
    clipped_ratio = paddle.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)  # (B, T)
    adv = advantages.unsqueeze(1)  # (B, 1)
    per_token_loss = -paddle.minimum(ratio * adv, clipped_ratio * adv)  # (B, T)
    return per_token_loss, ratio


def _masked_mean(x: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
    return (x * mask).sum() / mask.sum().clip(min=1.0)  # ()


def _seq_means(x: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
    """Per-sequence masked mean; NaN for a sequence without active tokens (TRL's masked_seq_mean)."""
    return (x * mask).sum(-1) / mask.sum(-1)  # (B,)


def _nan_reduce(x: paddle.Tensor, reduce: Callable[[paddle.Tensor], paddle.Tensor]) -> paddle.Tensor:
    """min / max over the non-NaN entries, NaN if there are none (TRL's nanmin / nanmax)."""
    finite = x[~paddle.isnan(x)]
    if finite.shape[0] == 0:
        return paddle.full([], float("nan"), dtype=x.dtype)
    return reduce(finite)


def _check_shapes(
    per_token_logps: paddle.Tensor,
    old_per_token_logps: paddle.Tensor | None,
    ref_per_token_logps: paddle.Tensor | None,
    advantages: paddle.Tensor,
    completion_mask: paddle.Tensor,
) -> None:
    if per_token_logps.ndim != 2:
        raise ValueError(f"per_token_logps must be [B, T], got shape {list(per_token_logps.shape)}")
    bt = list(per_token_logps.shape)
    for name, t in (
        ("old_per_token_logps", old_per_token_logps),
        ("ref_per_token_logps", ref_per_token_logps),
        ("completion_mask", completion_mask),
    ):
        if t is not None and list(t.shape) != bt:
            raise ValueError(f"{name} must have the shape of per_token_logps {bt}, got {list(t.shape)}")
    if list(advantages.shape) != bt[:1]:
        raise ValueError(f"advantages must be [B] = {bt[:1]}, got {list(advantages.shape)}")


def grpo_loss(
    per_token_logps: paddle.Tensor,
    old_per_token_logps: paddle.Tensor | None,
    ref_per_token_logps: paddle.Tensor | None,
    advantages: paddle.Tensor,
    completion_mask: paddle.Tensor,
    loss_type: str = "grpo",
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    beta: float = 0.0,
    max_completion_length: int | None = None,
    num_items_in_batch: float | paddle.Tensor | None = None,
) -> tuple[paddle.Tensor, dict[str, paddle.Tensor]]:
    """GRPO loss of one micro-batch, TRL 1.16's ``_compute_loss`` for the token-level loss types.

    Args:
        per_token_logps: [B, T] log-probs of the completion tokens under the policy being trained.
        old_per_token_logps: [B, T] log-probs under the policy that sampled the completions, or
            None: then ``per_token_logps.detach()`` is used (ratio 1; TRL's shortcut when
            num_iterations == 1 and generation is aligned with the optimizer step).
        ref_per_token_logps: [B, T] reference-model log-probs; required when ``beta != 0``.
        advantages: [B] one advantage per completion.
        completion_mask: [B, T] 1 for completion tokens that count, 0 for padding (any dtype).
        loss_type: a key of ``LOSS_REDUCTIONS``: "grpo", "bnpo", "dr_grpo" or "dapo".
        epsilon_low, epsilon_high: the ratio is clipped to [1 - epsilon_low, 1 + epsilon_high].
        beta: weight of the per-token k3 KL to the reference, added before the reduction.
        max_completion_length: the generation budget; required for "dr_grpo", unused otherwise.
        num_items_in_batch: "dapo" only: the normalizer. None means the active tokens of this
            micro-batch. To reproduce TRL, pass the active-token count of the whole generation batch
            over all ranks, divided by the number of ranks and multiplied by
            gradient_accumulation_steps / steps_per_generation; when those two are equal and
            micro-batch losses are summed over the accumulation window while ranks average their
            gradients, the update is the token mean over the whole generation batch.

    Returns:
        ``(loss, metrics)``: ``loss`` a 0-D tensor in ``per_token_logps``' dtype with gradient
        w.r.t. ``per_token_logps`` (not divided by any accumulation count, see the module doc).
        ``metrics`` maps names to detached 0-D tensors (no host sync here; call ``float()`` when
        logging), local to this micro-batch and named as TRL logs them:
        ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean`` (masked
        token fractions with ratio < 1 - eps_low and A < 0, ratio > 1 + eps_high and A > 0, either),
        ``clip_ratio/low_min`` / ``clip_ratio/high_max`` (min / max over sequences of the
        per-sequence fractions; NaN if no sequence has active tokens), ``kl`` (masked mean k3 KL,
        present when ``ref_per_token_logps`` is given), ``num_tokens`` (active-token count).
    """
    if loss_type not in LOSS_REDUCTIONS:
        raise ValueError(f"Unknown loss_type {loss_type!r}; expected one of {sorted(LOSS_REDUCTIONS)}")
    if beta != 0.0 and ref_per_token_logps is None:
        raise ValueError(f"beta={beta} needs ref_per_token_logps (the reference model's log-probs); got None.")
    _check_shapes(per_token_logps, old_per_token_logps, ref_per_token_logps, advantages, completion_mask)

    dtype = per_token_logps.dtype
    # Ratios are exponentials of log-prob differences: keep them out of any low-precision autocast.
    with paddle.amp.auto_cast(enable=False):
        mask = completion_mask.astype(dtype)  # (B, T)
        advantages = advantages.astype(dtype)  # (B,)
        if old_per_token_logps is None:
            old_per_token_logps = per_token_logps.detach()  # (B, T)

        per_token_loss, ratio = clipped_surrogate(
            per_token_logps, old_per_token_logps.astype(dtype), advantages, epsilon_low, epsilon_high
        )  # (B, T), (B, T)
        kl = None
        if ref_per_token_logps is not None:
            kl = per_token_kl(per_token_logps, ref_per_token_logps.astype(dtype))  # (B, T)
        if beta != 0.0:
            per_token_loss = per_token_loss + beta * kl  # (B, T)

        loss = LOSS_REDUCTIONS[loss_type](
            per_token_loss, mask, max_completion_length=max_completion_length, num_items_in_batch=num_items_in_batch
        )  # ()

        with paddle.no_grad():
            ratio = ratio.detach()  # (B, T)
            adv = advantages.unsqueeze(1)  # (B, 1)
            is_low = ((ratio < 1.0 - epsilon_low) & (adv < 0)).astype(dtype)  # (B, T)
            is_high = ((ratio > 1.0 + epsilon_high) & (adv > 0)).astype(dtype)  # (B, T)
            is_region = paddle.maximum(is_low, is_high)  # (B, T) logical or
            metrics: dict[str, paddle.Tensor] = {
                "clip_ratio/low_mean": _masked_mean(is_low, mask),
                "clip_ratio/high_mean": _masked_mean(is_high, mask),
                "clip_ratio/region_mean": _masked_mean(is_region, mask),
                "clip_ratio/low_min": _nan_reduce(_seq_means(is_low, mask), paddle.min),
                "clip_ratio/high_max": _nan_reduce(_seq_means(is_high, mask), paddle.max),
                "num_tokens": mask.sum(),
            }
            if kl is not None:
                metrics["kl"] = _masked_mean(kl.detach(), mask)
    return loss, metrics
