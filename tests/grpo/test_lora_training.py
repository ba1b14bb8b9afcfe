"""LoRA in training: GRPO and SFT steps move only the adapters; the reference is the policy with its adapters
off and equals the base model; checkpoints hold merged weights + a PEFT adapter; a LoRA run resumes exactly."""

from __future__ import annotations

import os

import numpy as np
import paddle
import pytest

from paddlemix_r1.data.synthetic import counting_rows
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.logprobs import completion_logprobs
from paddlemix_r1.grpo.sft import run_sft
from paddlemix_r1.grpo.trainer import GRPOTrainer
from paddlemix_r1.models import from_pretrained
from paddlemix_r1.models.lora import LoraConfig, adapter_parameters, adapters_disabled, apply_lora
from paddlemix_r1.processing import Processor
from paddlemix_r1.rewards import list_rewards, register_reward


def _text_length(completions, **_):
    """Characters / 100: differs between samples, so every group has a non-zero advantage."""
    return [len(text) / 100 for text in completions]


if "test_lora_text_length" not in list_rewards():
    register_reward("test_lora_text_length", _text_length)


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return tiny_ckpt  # tests/conftest.py: one tiny Qwen2.5-VL (seed 1) per session


def _cfg(tiny, out, **kw) -> GRPOConfig:
    base = dict(model_name_or_path=tiny, output_dir=str(out), prompts_per_step=2, num_generations=4,
                max_completion_length=8, num_train_samples=8, learning_rate=2e-2, beta=0.04,
                reward_funcs=["test_lora_text_length"], visualdl=False, progress_bar=False, log_completions_steps=0,
                max_steps=2, seed=3, use_peft=True, lora_r=4, lora_alpha=8.0, lora_dropout=0.1)
    base.update(kw)
    return GRPOConfig(**base)


def _params(model) -> dict[str, np.ndarray]:
    return {n: p.numpy().copy() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A LoRA GRPO run with a KL term: 2 steps, each its own generation round."""
    tr = GRPOTrainer(_cfg(tiny, tmp_path_factory.mktemp("lora-run")))
    before = _params(tr.model)
    tr.train()
    return tr, before


def test_grpo_steps_train_only_the_adapters(trained):
    tr, before = trained
    after = _params(tr.model)
    adapters = set(adapter_parameters(tr.model))
    changed = {n for n in after if not np.array_equal(before[n], after[n])}
    assert changed and changed <= adapters, sorted(changed - adapters)[:5]
    assert any(n.endswith("lora_B.weight") for n in changed)
    assert {id(p) for p in tr.params} == {id(p) for p in adapter_parameters(tr.model).values()}
    assert tr.ref_model is None  # no second model: the reference is the policy with its adapters off
    assert all(np.isfinite(h["kl"]) for h in tr.history)
    assert tr.history[-1]["kl"] > 0  # the second round's policy differs from its reference


def test_reference_with_adapters_off_equals_the_base_model(trained, tiny):
    """The last round's reference log-probs (taken with the adapters off, after step 1 moved them) equal the
    base checkpoint's log-probs, while the adapted policy's differ."""
    tr, _ = trained
    tr.model.eval()  # no adapter dropout in these passes (the trainer leaves the policy in train mode)
    mb = tr._buffer[0][0]
    base = from_pretrained(tiny)
    cfg = tr.cfg
    with paddle.no_grad():
        base_lp = completion_logprobs(base, mb.inputs, cfg.temperature, cfg.logprob_chunk_size).numpy()
        policy_lp = completion_logprobs(tr.model, mb.inputs, cfg.temperature, cfg.logprob_chunk_size).numpy()
        with adapters_disabled(tr.model):
            off_lp = completion_logprobs(tr.model, mb.inputs, cfg.temperature, cfg.logprob_chunk_size).numpy()
    mask = mb.completion_mask.numpy().astype(bool)
    np.testing.assert_array_equal(off_lp[mask], base_lp[mask])
    np.testing.assert_array_equal(mb.ref_logps.numpy()[mask], base_lp[mask])
    assert np.abs(policy_lp - base_lp)[mask].max() > 1e-4


@pytest.mark.slow
def test_lora_checkpoint_layout_and_exact_resume(tiny, tmp_path):
    kw = dict(save_steps=2, max_steps=4, lr_scheduler_type="cosine", warmup_steps=1)
    full = GRPOTrainer(_cfg(tiny, tmp_path / "full", **kw))
    full.train()
    ref = _params(full.model)

    first = GRPOTrainer(_cfg(tiny, tmp_path / "split", **kw))
    first.train(num_steps=2)  # stopped after the step-2 checkpoint, as by an interruption
    ckpt = tmp_path / "split" / "checkpoint-2"
    assert {"config.json", "model.safetensors"} <= set(os.listdir(ckpt / "model"))
    assert not (ckpt / "model" / "adapter_config.json").exists()  # transformers would stack the adapter on it
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(ckpt / "adapter"))
    merged = from_pretrained(str(ckpt / "model"))  # the merged weights compute what the adapted policy does
    ids = paddle.to_tensor([[3, 4, 5, 6, 7]])
    first.model.eval()  # the trainer leaves the policy in train mode (adapter dropout on)
    with paddle.no_grad():
        np.testing.assert_allclose(merged(input_ids=ids).logits.numpy(), first.model(input_ids=ids).logits.numpy(),
                                   atol=1e-5)

    resumed = GRPOTrainer(_cfg(tiny, tmp_path / "split", resume_from_checkpoint="latest", **kw))
    assert resumed.step == 2
    resumed.train()
    got = _params(resumed.model)
    for n in ref:
        np.testing.assert_array_equal(got[n], ref[n], err_msg=n)
    assert [h["reward"] for h in resumed.history] == [h["reward"] for h in full.history]

    with pytest.raises(ValueError, match="saved by a LoRA run"):
        GRPOTrainer(_cfg(tiny, tmp_path / "split", resume_from_checkpoint=str(ckpt), use_peft=False))


@pytest.mark.parametrize("overrides,match", [
    (["lora_r=0"], "rank"),
    (["lora_target_modules=[q_proj, lm_head]"], "subset"),
    (["ref_model_offload=true"], "policy itself"),
    (["ref_model_dtype=bfloat16"], "policy itself"),
])
def test_lora_config_fields_are_validated(overrides, match):
    with pytest.raises(ValueError, match=match):
        GRPOConfig.load(None, ["use_peft=true", *overrides])


def test_sft_trains_only_the_adapters(tiny):
    model = from_pretrained(tiny)
    apply_lora(model, LoraConfig(r=4, alpha=8.0, dropout=0.1))
    before = _params(model)
    rows = counting_rows(4, seed=0)

    def conversation(r):
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["problem"]}]}]

    losses = run_sft(model, Processor.from_pretrained(tiny), rows, conversation,
                     lambda r, rng: f"<answer>{r['solution']}</answer>", steps=2, batch_size=2, learning_rate=1e-2)
    assert all(np.isfinite(losses))
    after = _params(model)
    changed = {n for n in after if not np.array_equal(before[n], after[n])}
    assert changed and changed <= set(adapter_parameters(model))
