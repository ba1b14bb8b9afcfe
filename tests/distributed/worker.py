"""A GRPO run for the distributed tests, started by ``paddle.distributed.launch`` (or alone).

    python worker.py spec.json

``spec.json``: {"runs": [run, ...]}; each run: {"cfg": GRPOConfig fields, "inject": bool,
"num_steps": int | null, "dump": path prefix, "fail": {"rank": r, "step": s, "mode": "raise" | "hang"}}.
Each rank writes ``<dump>.rank<r>.npz`` (its parameters after the run) and ``<dump>.rank<r>.json``
(history and, per rollout call, the step, the prompt ids and the number of completions).

``inject``: completions are fixed token ids drawn from a generator seeded by the prompt's row id
and the completion's index in its group (eos at a row-dependent place), whatever the batch, rank
or sampling seed; a one-process run and a two-process run then train on identical completions.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib

import numpy as np
import paddle

from paddlemix_r1 import distributed as dist
from paddlemix_r1.distributed import sharding
from paddlemix_r1.generation import GenerationOutput, engine
from paddlemix_r1.grpo import trainer as trainer_mod
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.rewards import list_rewards, register_reward

TOKEN_RANGE = (20, 480)  # ordinary tokens of the tiny tokenizer (specials sit at 490..511)


def text_length(completions, **_):
    return [len(text) / 100 for text in completions]


if "test_text_length" not in list_rewards():
    register_reward("test_text_length", text_length)


class RecordingTrainer(trainer_mod.GRPOTrainer):
    """Records which prompts each rollout call got; optionally injects completions or a failure."""

    def __init__(self, cfg: GRPOConfig, inject: bool, fail: dict | None):
        self.inject, self.fail, self.rollouts = inject, fail, []
        super().__init__(cfg)

    def rollout(self, rows, seed):
        if self.fail and self.fail["rank"] == self.dist.rank and self.fail["step"] == self.step:
            if self.fail["mode"] == "hang":
                time.sleep(3600)
            raise RuntimeError(f"injected failure on rank {self.dist.rank} at step {self.step}")
        self._rows = rows
        mb, total, per_fn = super().rollout(rows, seed)
        self.rollouts.append({"step": self.step, "rank": self.dist.rank, "ids": [r["id"] for r in rows],
                              "completions": len(mb.texts)})
        return mb, total, per_fn


def make_injected_generate(trainer: RecordingTrainer):
    real = engine.generate

    def injected(model, batch, max_new_tokens=8, num_return_sequences=1, eos_token_id=None, pad_token_id=0, **_):
        g, t = num_return_sequences, max_new_tokens
        # Greedy, no eos: the real engine supplies prompt ids and M-RoPE positions for T tokens.
        out = real(model, batch, max_new_tokens=t, do_sample=False, num_return_sequences=g, eos_token_id=None,
                   pad_token_id=pad_token_id)
        ids = np.full((len(trainer._rows) * g, t), pad_token_id, dtype=np.int64)
        for i, row in enumerate(trainer._rows):
            key = zlib.crc32(str(row["id"]).encode())
            for j in range(g):
                rng = np.random.default_rng([key, j, 7])
                stop = int(rng.integers(2, t + 1))  # tokens up to and including eos
                ids[i * g + j, :stop] = rng.integers(*TOKEN_RANGE, size=stop)
                if stop < t:
                    ids[i * g + j, stop - 1] = eos_token_id
        completion = paddle.to_tensor(ids)
        mask = engine._completion_mask(completion, [eos_token_id], t)
        prompt_len = out.prompt_ids.shape[1]
        return GenerationOutput(completion_ids=completion, completion_mask=mask,
                                logprobs=paddle.zeros([ids.shape[0], t]), prompt_ids=out.prompt_ids,
                                attention_mask=paddle.concat([out.attention_mask[:, :prompt_len], mask], axis=1),
                                position_ids=out.position_ids)

    return injected


def run(spec: dict) -> None:
    cfg = GRPOConfig(**spec["cfg"])
    tr = RecordingTrainer(cfg, spec.get("inject", False), spec.get("fail"))
    if spec.get("inject"):
        trainer_mod.generate = make_injected_generate(tr)
    try:
        history = tr.train(num_steps=spec.get("num_steps"))
    finally:
        trainer_mod.generate = engine.generate
    rank = tr.dist.rank
    sharding.full_state_for_save(tr.train_model, cfg.sharding_stage)
    np.savez(f"{spec['dump']}.rank{rank}.npz", **{n: p.numpy() for n, p in tr.model.named_parameters()})
    with open(f"{spec['dump']}.rank{rank}.json", "w", encoding="utf-8") as f:
        json.dump({"history": history, "rollouts": tr.rollouts, "world_size": tr.dist.world_size,
                   "step": tr.step}, f)


def main() -> int:
    import paddlemix_r1

    paddlemix_r1.configure_runtime()  # as `paddlemix-r1 train` runs (the MKL variables come from the parent)
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    for r in spec["runs"]:
        os.makedirs(os.path.dirname(r["dump"]) or ".", exist_ok=True)
        run(r)
    return 0


if __name__ == "__main__":
    sys.exit(dist.run_guarded(main))
