"""A whole GRPO step (rollout, rewards, old/ref log-probs, loss, backward, optimizer step) through the GPU
dispatch on CPU: every fused implementation runs against the contract doubles of Paddle's GPU kernels
(ops/contracts.py), so a call shape or dtype the real kernels refuse fails here, and the step gives the
CPU step's weights."""

from __future__ import annotations

import numpy as np
import pytest

from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.trainer import GRPOTrainer
from paddlemix_r1.models import from_pretrained
from paddlemix_r1.ops import contracts
from paddlemix_r1.rewards import list_rewards, register_reward

if "test_gpu_text_length" not in list_rewards():  # differs between samples: every group has an advantage
    register_reward("test_gpu_text_length", lambda completions, **_: [len(c) / 100 for c in completions])


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return tiny_ckpt  # tests/conftest.py: one tiny Qwen2.5-VL (seed 1) per session


def _step(tiny, out, **kw):
    cfg = GRPOConfig(model_name_or_path=tiny, output_dir=str(out), prompts_per_step=2, num_generations=3,
                     max_completion_length=6, num_train_samples=4, learning_rate=1e-3, beta=0.04,
                     reward_funcs=["test_gpu_text_length"], visualdl=False, progress_bar=False, log_completions_steps=0,
                     max_steps=1, seed=5, num_iterations=2,
                     # Adam's first step is lr * g / (|g| + eps): with eps 1e-8 a coordinate whose gradient is
                     # ~0 moves by up to lr on float noise (as test_distributed_equivalence.py explains)
                     adam_epsilon=1e-4, **kw)
    trainer = GRPOTrainer(cfg)
    history = trainer.train(num_steps=1)
    return {n: p.numpy().copy() for n, p in trainer.model.named_parameters()}, history[-1]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_grpo_step_through_gpu_dispatch_equals_cpu_step(tiny, tmp_path, checkpointing):
    ref, ref_metrics = _step(tiny, tmp_path / "cpu", gradient_checkpointing=checkpointing)
    with contracts.gpu_contracts() as log:
        got, metrics = _step(tiny, tmp_path / "gpu", gradient_checkpointing=checkpointing)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-4, atol=1e-6)
    initial = {n: p.numpy() for n, p in from_pretrained(tiny).named_parameters()}
    moved = [n for n in ref if not np.allclose(ref[n], initial[n], atol=1e-6)]
    assert len(moved) > len(ref) // 2  # the step trained the policy, vision tower included
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value, atol=2e-5, rtol=1e-4, err_msg=name)
    for kernel in ("fused_rotary_position_embedding", "scaled_dot_product_attention", "fused_rms_norm", "swiglu"):
        assert log.calls[kernel] > 0, kernel
    assert log.calls["sdpa:flash_attn"] == 0  # an fp32 policy: Paddle's flash kernels take fp16/bf16 only
    assert log.calls["flash_attn_unpadded"] == 0
