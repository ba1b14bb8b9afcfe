"""Run TRL 1.16's own ``DPOTrainer._compute_loss`` on given log-probs; tests/grpo/test_dpo.py starts this
in a subprocess (torch stays out of the Paddle test process, as in trl_reference.py).

    python trl_dpo_reference.py cases.pkl results.pkl

Each case: ``{"loss_type", "beta", "label_smoothing", "sft_weight" (optional: TRL's ``sft`` loss type
added with that weight), "logps": (2P,) policy log-probs [chosen; rejected],
"ref_chosen_logps": (P,), "ref_rejected_logps": (P,), "lengths": (2P,) completion token counts}``.
The method is called unbound on a ``SimpleNamespace`` carrying the attributes it reads for a
single-process run with precomputed reference log-probs. The model is replaced by a stub whose
per-token log-probs sum, row by row, to the case's log-probs (spread evenly over the completion's
tokens, from a leaf tensor, so the gradient w.r.t. each summed log-prob is read off after
``loss.backward()``; the ``sft`` term's token mean sees the same per-token values).
Everything between, TRL's loss arithmetic, is TRL's code as installed.
"""

from __future__ import annotations

import pickle
import sys
from collections import defaultdict
from types import SimpleNamespace

import torch
from accelerate import Accelerator
from trl.trainer.dpo_trainer import DPOTrainer


def run(case: dict, accelerator: Accelerator) -> dict:
    logps = torch.tensor(case["logps"], dtype=torch.float64, requires_grad=True)  # (2P,)
    lengths = torch.tensor(case["lengths"], dtype=torch.long)  # (2P,)
    width = int(lengths.max()) + 2
    completion_mask = (torch.arange(width)[None, :] >= width - lengths[:, None]).long()  # (2P, T) right-aligned
    rows = logps.shape[0]

    shift_mask = completion_mask[:, 1:].to(logps.dtype)  # (2P, T-1)

    def model(**kwargs):
        per_token = logps[:, None] * shift_mask / lengths[:, None].to(logps.dtype)  # (2P, T-1), each row sums to logps
        return SimpleNamespace(log_probs=per_token, entropy=torch.zeros(rows, width - 1),
                               mean_logits=torch.zeros(rows, width - 1),
                               is_top1=torch.zeros(rows, width - 1, dtype=torch.bool))

    model.training = True
    stub = SimpleNamespace(
        model=model, accelerator=accelerator, aux_loss_enabled=False, precompute_ref_logps=True, ld_alpha=None,
        f_divergence_type="reverse_kl", loss_types=[case["loss_type"], *(["sft"] if case.get("sft_weight") else [])],
        loss_weights=[1.0, *([case["sft_weight"]] if case.get("sft_weight") else [])], beta=case["beta"],
        label_smoothing=case["label_smoothing"], use_weighting=False, _tp_size=1, _total_train_tokens=0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, args=SimpleNamespace())
    inputs = {
        "input_ids": torch.zeros(rows, width, dtype=torch.long),
        "attention_mask": torch.ones(rows, width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": torch.tensor(case["ref_chosen_logps"], dtype=torch.float64),
        "ref_rejected_logps": torch.tensor(case["ref_rejected_logps"], dtype=torch.float64),
    }
    loss = DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)
    loss.backward()
    metrics = {k: v[-1] for k, v in stub._metrics["train"].items() if k.startswith(("rewards/", "logps/"))}
    return {"loss": float(loss), "grad": logps.grad.numpy(), "metrics": metrics}


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        cases = pickle.load(f)
    accelerator = Accelerator(cpu=True)
    with open(sys.argv[2], "wb") as f:
        pickle.dump([run(case, accelerator) for case in cases], f)


if __name__ == "__main__":
    main()
