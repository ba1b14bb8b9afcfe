"""Prompt sampler: every prompt once per epoch in a seeded order; its state is two integers."""

from __future__ import annotations

import numpy as np


class PromptSampler:
    """Yields indices into a dataset of ``n`` rows, reshuffled each epoch with ``seed + epoch``.

    ``num_replicas``/``rank`` split each step's prompts across ranks (rank r takes every
    num_replicas-th index of the step), so prompts are distinct across ranks within an epoch.
    """

    def __init__(self, n: int, seed: int, num_replicas: int = 1, rank: int = 0):
        if n < 1:
            raise ValueError("the training dataset is empty")
        self.n, self.seed, self.num_replicas, self.rank = n, seed, num_replicas, rank
        self.epoch, self.position = 0, 0

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(self.seed + epoch).permutation(self.n)

    def next_global(self, k: int) -> list[int]:
        """The next k indices of the global stream (all ranks), crossing epochs as needed."""
        out: list[int] = []
        while len(out) < k:
            order = self._order(self.epoch)
            take = min(k - len(out), self.n - self.position)
            out.extend(order[self.position:self.position + take].tolist())
            self.position += take
            if self.position == self.n:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def next(self, k_per_rank: int) -> list[int]:
        """This rank's k indices of the next step (the step takes k * num_replicas globally)."""
        step = self.next_global(k_per_rank * self.num_replicas)
        return step[self.rank::self.num_replicas]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(f"sampler state is for n={state['n']}, seed={state['seed']}; this run has n={self.n}, "
                             f"seed={self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
