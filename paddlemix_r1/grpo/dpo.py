"""Direct preference optimisation: the pairwise losses as pure functions of summed log-probabilities.

A pair is one prompt with a chosen and a rejected completion; ``*_logps`` are the summed log-probs of
each completion's tokens under the policy or the frozen reference, shape (P,) for P pairs. The
losses are TRL's (``DPOTrainer._compute_loss``, TRL 1.16) with ``f_divergence_type="reverse_kl"``,
no length desensitisation and no weighting; ``tests/grpo/test_dpo.py`` runs TRL's own method on the
same numbers and compares the value and the gradient.

``loss_type``:
- ``sigmoid``: -log σ(β Δ), Δ = (π_c - ref_c) - (π_r - ref_r). With ``label_smoothing`` ε > 0 it is
  the conservative DPO of LLaMA-Factory and of TRL before 1.0, -(1-ε) log σ(βΔ) - ε log σ(-βΔ)
  (TRL 1.16 moved that to ``robust`` and dropped it from ``sigmoid``: at ε = 0 all three agree).
- ``robust``: the unbiased noisy-label form, ((1-ε)(-log σ(βΔ)) + ε log σ(-βΔ)) / (1 - 2ε).
- ``hinge``: relu(1 - βΔ).
- ``ipo``: (Δ̄ - 1/(2β))² where Δ̄ uses the per-token average log-ratio (TRL normalises by the
  completion lengths, which must then be given).

``sft_weight`` w > 0 adds w x the chosen completions' mean token NLL over the batch, -Σ π_c / Σ len_c:
TRL's ``loss_type=[<type>, "sft"]`` with ``loss_weights=[1, w]`` (RPO's α). DPO alone can lower the
chosen log-prob as long as the rejected one falls faster; the NLL term holds the chosen text up.

Step-level DPO (focus-region trajectories) adds two such losses, one for the box step and one for
the answer step: ``combine_steps`` takes their weights (0.5 / 0.5 in the stage-2 recipe).
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo")


def dpo_loss(
    policy_chosen_logps: paddle.Tensor,
    policy_rejected_logps: paddle.Tensor,
    ref_chosen_logps: paddle.Tensor,
    ref_rejected_logps: paddle.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: paddle.Tensor | None = None,
    rejected_lengths: paddle.Tensor | None = None,
    sft_weight: float = 0.0,
) -> tuple[paddle.Tensor, dict[str, float]]:
    """Mean pairwise loss over P pairs (+ ``sft_weight`` x the chosen NLL) and TRL's metrics. All log-prob
    inputs (P,); lengths (P,) token counts, needed by ``ipo`` and ``sft_weight`` only. Returns
    ``(loss scalar, metrics)``."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"dpo loss_type {loss_type!r}: expected one of {', '.join(LOSS_TYPES)}")
    if not beta > 0:
        raise ValueError(f"dpo beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if sft_weight < 0:
        raise ValueError(f"dpo sft_weight must be >= 0, got {sft_weight}")
    if sft_weight > 0 and chosen_lengths is None:
        raise ValueError("dpo sft_weight averages the chosen NLL per token: pass chosen_lengths")
    chosen_ratio = policy_chosen_logps - ref_chosen_logps  # (P,)
    rejected_ratio = policy_rejected_logps - ref_rejected_logps  # (P,)
    delta = chosen_ratio - rejected_ratio  # (P,)
    eps = label_smoothing
    if loss_type == "sigmoid":
        per_pair = -(1 - eps) * F.log_sigmoid(beta * delta) - eps * F.log_sigmoid(-beta * delta)
    elif loss_type == "robust":
        per_pair = ((1 - eps) * -F.log_sigmoid(beta * delta) + eps * F.log_sigmoid(-beta * delta)) / (1 - 2 * eps)
    elif loss_type == "hinge":
        per_pair = F.relu(1 - beta * delta)
    else:  # ipo
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("dpo loss_type 'ipo' averages per token: pass chosen_lengths and rejected_lengths")
        avg_delta = (chosen_ratio / chosen_lengths.astype(delta.dtype).clip(min=1.0)
                     - rejected_ratio / rejected_lengths.astype(delta.dtype).clip(min=1.0))  # (P,)
        per_pair = (avg_delta - 1 / (2 * beta)) ** 2
    loss = per_pair.mean()
    if sft_weight > 0:
        loss = loss + sft_weight * sft_loss(policy_chosen_logps, chosen_lengths)
    chosen_rewards = beta * chosen_ratio.detach()  # (P,)
    rejected_rewards = beta * rejected_ratio.detach()  # (P,)
    metrics = {
        "rewards/chosen": float(chosen_rewards.mean()),
        "rewards/rejected": float(rejected_rewards.mean()),
        "rewards/accuracies": float((chosen_rewards > rejected_rewards).astype("float32").mean()),
        "rewards/margins": float((chosen_rewards - rejected_rewards).mean()),
        "logps/chosen": float(policy_chosen_logps.detach().mean()),
        "logps/rejected": float(policy_rejected_logps.detach().mean()),
    }
    return loss, metrics


def sft_loss(chosen_logps: paddle.Tensor, chosen_lengths: paddle.Tensor) -> paddle.Tensor:
    """Mean NLL per chosen token over the batch (TRL's ``sft`` loss type): summed log-probs (P,) and token
    counts (P,) -> scalar -Σ logps / Σ lengths."""
    return -chosen_logps.sum() / chosen_lengths.astype(chosen_logps.dtype).sum().clip(min=1.0)


def combine_steps(step_losses: dict[str, tuple[paddle.Tensor, dict[str, float]]],
                  weights: dict[str, float]) -> tuple[paddle.Tensor, dict[str, float]]:
    """Weighted sum of per-step DPO losses, e.g. ``{"box": ..., "answer": ...}`` with 0.5 / 0.5; each
    step's metrics are kept under its name (``box/rewards/margins``)."""
    missing = set(step_losses) ^ set(weights)
    if missing:
        raise ValueError(f"combine_steps: steps and weights differ in {sorted(missing)}")
    total = None
    metrics: dict[str, float] = {}
    for name, (loss, step_metrics) in step_losses.items():
        term = weights[name] * loss
        total = term if total is None else total + term
        metrics[f"{name}/loss"] = float(loss)
        metrics.update({f"{name}/{k}": v for k, v in step_metrics.items()})
    return total, metrics
