"""A GRPO run in its own process, for the signal and kill tests.

    python training_worker.py spec.json

``spec.json``: {"cfg": GRPOConfig fields, "dump": path of an .npz for the final parameters (optional),
"signal_at_step": [signum, step] (optional: the process sends itself ``signum`` during that step)}.
The run goes through ``run_guarded``, as ``paddlemix-r1 train`` does.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from paddlemix_r1.distributed import run_guarded  # noqa: E402


def text_length(completions, **_):
    return [len(text) / 100 for text in completions]


def main() -> int:
    import numpy as np

    import paddlemix_r1

    paddlemix_r1.configure_runtime()  # as `paddlemix-r1 train` runs

    from paddlemix_r1.grpo import trainer as trainer_mod
    from paddlemix_r1.grpo.config import GRPOConfig
    from paddlemix_r1.rewards import list_rewards, register_reward

    if "test_text_length" not in list_rewards():
        register_reward("test_text_length", text_length)
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    cfg = GRPOConfig(**spec["cfg"])
    print("starting the trainer", flush=True)  # the kill test times its SIGTERM from here
    tr = trainer_mod.GRPOTrainer(cfg)
    announced = tr.train_step

    def announce_then_step(micro):
        print(f"step {tr.step + 1}", flush=True)  # the kill test times its signals from these lines
        return announced(micro)

    tr.train_step = announce_then_step
    if spec.get("signal_at_step"):
        signum, at = spec["signal_at_step"]
        real = tr.train_step

        def step_then_signal(micro):
            if tr.step == at:
                os.kill(os.getpid(), signum)
            return real(micro)

        tr.train_step = step_then_signal
    tr.train()
    if spec.get("dump"):
        np.savez(spec["dump"], **{n: p.numpy() for n, p in tr.model.named_parameters()})
    print(f"finished at step {tr.step}")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))
