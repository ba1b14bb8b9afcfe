"""The records one GRPO step passes from stage to stage (rows group-major: completion i*G + j belongs
to prompt i). Each is complete when it is built; a later stage builds a new record, it never patches one.

``Rollout``        GRPOTrainer.rollout: G sampled completions per prompt, their texts, the dataset rows and
                   the exact inputs a log-prob pass needs (``RolloutInputs``, each prompt once)
``ScoredRollout``  score_rollouts: its advantages, from the rewards of the whole step over all ranks, and the
                   step's token normaliser
``TrainBatch``     GRPOTrainer.logprob_inputs: old-policy and reference log-probs where the step uses them;
                   what ``grpo_loss`` reads
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import paddle

from paddlemix_r1.grpo.logprobs import RolloutInputs


@dataclass(frozen=True)
class Rollout:
    """One rollout micro-batch as sampled: B prompts, G completions each."""

    inputs: RolloutInputs
    completion_mask: paddle.Tensor  # (N, T) 1 up to and including eos
    texts: list[str]  # (N,) decoded completions
    rows: list[dict]  # (B,) one dataset row per group

    @property
    def num_completions(self) -> int:
        return int(self.completion_mask.shape[0])


@dataclass(frozen=True)
class ScoredRollout:
    """A rollout with its advantages."""

    rollout: Rollout
    advantages: paddle.Tensor  # (N,) fp32
    num_items: float  # dapo normalizer: active tokens of the step over all ranks / W


@dataclass(frozen=True)
class TrainBatch:
    """Everything the loss needs about one micro-batch."""

    scored: ScoredRollout
    old_logps: paddle.Tensor | None  # (N, T) under the policy that sampled; None: the step is on-policy
    ref_logps: paddle.Tensor | None  # (N, T) under the reference; None: no KL term (beta 0)

    @property
    def inputs(self) -> RolloutInputs:
        return self.scored.rollout.inputs

    @property
    def completion_mask(self) -> paddle.Tensor:
        return self.scored.rollout.completion_mask

    @property
    def advantages(self) -> paddle.Tensor:
        return self.scored.advantages

    @property
    def num_items(self) -> float:
        return self.scored.num_items

    @property
    def texts(self) -> list[str]:
        return self.scored.rollout.texts

    @property
    def rows(self) -> list[dict]:
        return self.scored.rollout.rows


def score_rollouts(rollouts: Sequence[Rollout], advantages: np.ndarray, num_items: float) -> list[ScoredRollout]:
    """Split this rank's advantages (sum of the rollouts' N,) over its rollouts, in order."""
    sizes = [r.num_completions for r in rollouts]
    if sum(sizes) != len(advantages):
        raise ValueError(f"{len(advantages)} advantages for {sum(sizes)} completions")
    bounds = np.cumsum([0, *sizes])
    return [ScoredRollout(r, paddle.to_tensor(advantages[a:b].astype("float32")), num_items)
            for r, a, b in zip(rollouts, bounds[:-1], bounds[1:])]
