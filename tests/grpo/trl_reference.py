"""Run TRL 1.16's own GRPOTrainer code on given inputs; the GRPO parity tests start this in a subprocess.

    python trl_reference.py cases.pkl results.pkl

``cases.pkl`` holds a list of dicts, each ``{"kind": "loss" | "advantages", ...}`` with numpy
arrays; ``results.pkl`` receives one dict per case.

How TRL is called: the methods are called unbound, ``GRPOTrainer._compute_loss(stub, None, inputs)``
and ``GRPOTrainer._generate_and_score_completions(stub, inputs)``, where ``stub`` is a
``SimpleNamespace`` carrying exactly the attributes those methods read (as ``GRPOTrainer.__init__``
would set them for a single-process run with ``gradient_accumulation_steps=1``,
``steps_per_generation=1``, no vLLM, token-level importance sampling and every optional TRL feature
off) and a real ``accelerate.Accelerator``. Only the model-facing parts are replaced:
``_get_per_token_logps_and_entropies`` returns the test's log-prob tensor (a leaf, so the gradient
w.r.t. it is read off after ``loss.backward()``), ``_generate`` returns fixed token ids and
``_calculate_rewards`` returns the test's rewards. Everything between, including TRL's reductions,
clipping, KL, metrics and advantage normalization, is TRL's code as installed.

Why a separate process: TRL runs in a fresh interpreter, so nothing the Paddle test process has
imported (PaddleFormers switches transformers' torch detection off) can change what TRL does, and
the result does not depend on import order. (The transformers parity tests do import torch into the
test process: tests/hf_reference.py.)
"""

from __future__ import annotations

import pickle
import sys
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import torch
from accelerate import Accelerator
from trl.trainer.grpo_trainer import GRPOTrainer


def _metrics_store() -> dict:
    return {"train": defaultdict(list), "eval": defaultdict(list)}


def run_loss(case: dict, accelerator: Accelerator) -> dict:
    dtype = getattr(torch, case["dtype"])
    per_token_logps = torch.tensor(case["per_token_logps"], dtype=dtype, requires_grad=True)
    batch, width = per_token_logps.shape
    completion_mask = torch.tensor(case["completion_mask"], dtype=torch.long)
    num_items = case["num_items_in_batch"]
    inputs = {
        "prompt_ids": torch.zeros(batch, 1, dtype=torch.long),
        "prompt_mask": torch.ones(batch, 1, dtype=torch.long),
        "completion_ids": torch.zeros(batch, width, dtype=torch.long),
        "completion_mask": completion_mask,
        "advantages": torch.tensor(case["advantages"], dtype=dtype),
        # As _generate_and_score_completions builds it: an integer token count.
        "num_items_in_batch": torch.tensor(int(completion_mask.sum()) if num_items is None else num_items),
    }
    if case["old_per_token_logps"] is not None:
        inputs["old_per_token_logps"] = torch.tensor(case["old_per_token_logps"], dtype=dtype)
    if case["ref_per_token_logps"] is not None:
        inputs["ref_per_token_logps"] = torch.tensor(case["ref_per_token_logps"], dtype=dtype)

    def model_forward(model, input_ids, attention_mask, logits_to_keep, **kwargs):
        if logits_to_keep != width or input_ids.shape != (batch, 1 + width):
            raise AssertionError("TRL asked for other positions than the completion")
        return per_token_logps, torch.zeros_like(per_token_logps), None

    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=model_forward,
        accelerator=accelerator,
        model=SimpleNamespace(training=True),
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        loss_type=case["loss_type"],
        beta=case["beta"],
        epsilon_low=case["epsilon_low"],
        epsilon_high=case["epsilon_high"],
        max_completion_length=case["max_completion_length"],
        importance_sampling_level="token",
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        current_gradient_accumulation_steps=1,
        _metrics=_metrics_store(),
    )
    loss = GRPOTrainer._compute_loss(stub, None, inputs)
    loss.backward()
    metrics = {k: float(v[-1]) for k, v in stub._metrics["train"].items() if k != "entropy"}
    return {"loss": float(loss.detach()), "grad": per_token_logps.grad.numpy(), "metrics": metrics}


def run_advantages(case: dict, accelerator: Accelerator) -> dict:
    rewards = np.asarray(case["rewards"])
    num_rows = rewards.shape[0]
    completion_ids = [[5, 6, 7]] * num_rows

    stub = SimpleNamespace(
        accelerator=accelerator,
        model=SimpleNamespace(training=True, is_gradient_checkpointing=False),
        args=SimpleNamespace(
            steps_per_generation=1,
            gradient_accumulation_steps=1,
            per_device_train_batch_size=num_rows,
            gradient_checkpointing_kwargs=None,
        ),
        num_generations=case["num_generations"],
        scale_rewards=case["scale_rewards"],
        multi_objective_aggregation="sum_then_normalize",
        reward_weights=torch.tensor([1.0]),
        reward_func_names=["reward"],
        num_iterations=1,
        beta=0.0,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        mask_truncated_completions=False,
        pad_to_multiple_of=None,
        environment_factories=None,
        environments=[],
        tools=None,
        log_multimodal=False,
        _tokenizer=SimpleNamespace(pad_token_id=0),
        _generate=lambda prompts: (
            [[1, 2]] * len(prompts),
            completion_ids,
            None,
            ["c"] * len(prompts),
            None,
            {},
            None,
            None,
        ),
        _calculate_rewards=lambda *a: torch.tensor(rewards, dtype=getattr(torch, case["dtype"])).unsqueeze(1),
        _metrics=_metrics_store(),
        _logs={
            "prompt": [],
            "completion": [],
            "rewards": defaultdict(list),
            "advantages": [],
            "extra": defaultdict(list),
        },
        _pending_extra_logs={},
        _pending_metrics={},
    )
    out = GRPOTrainer._generate_and_score_completions(stub, [{"prompt": "p"}] * num_rows)
    return {"advantages": out["advantages"].double().numpy()}


RUNNERS = {"loss": run_loss, "advantages": run_advantages}


def main(cases_path: str, results_path: str) -> None:
    with open(cases_path, "rb") as f:
        cases = pickle.load(f)
    accelerator = Accelerator(cpu=True)
    if accelerator.num_processes != 1:
        raise RuntimeError("the reference runs single-process")
    results = [RUNNERS[case["kind"]](case, accelerator) for case in cases]
    with open(results_path, "wb") as f:
        pickle.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
