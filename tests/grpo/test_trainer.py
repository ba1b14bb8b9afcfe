"""The GRPO trainer end to end on a tiny model: log-prob consistency with the rollout, frozen
vision, learning, exact resume, non-finite handling, configs."""

from __future__ import annotations

import glob
import os

import numpy as np
import paddle
import pytest

from paddlemix_r1.data.synthetic import counting_rows
from paddlemix_r1.generation import generate
from paddlemix_r1.grpo import trainer as trainer_mod
from paddlemix_r1.grpo.config import GRPOConfig
from paddlemix_r1.grpo.logprobs import RolloutInputs, completion_logprobs
from paddlemix_r1.grpo.trainer import GRPOTrainer, NonFiniteError
from paddlemix_r1.models import from_pretrained
from paddlemix_r1.processing import Processor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def digit_fraction(completions, **_):
    """Share of characters that are digits: a dense synthetic reward a tiny model can climb."""
    return [sum(c.isdigit() for c in text) / max(1, len(text)) for text in completions]


def text_length(completions, **_):
    """Characters / 100: differs between samples, so every group has a non-zero advantage."""
    return [len(text) / 100 for text in completions]


@pytest.fixture(scope="module", autouse=True)
def _rewards(register_rewards):
    """This module's rewards, in the registry for its tests only (tests/conftest.py restores it)."""
    register_rewards(test_digit_fraction=digit_fraction, test_text_length=text_length)


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return tiny_ckpt  # tests/conftest.py: one tiny Qwen2.5-VL (seed 1) per session


def _cfg(tiny, out, **kw):
    base = dict(model_name_or_path=tiny, output_dir=str(out), prompts_per_step=2, num_generations=4,
                max_completion_length=8, num_train_samples=8, learning_rate=1e-3, beta=0.04,
                reward_funcs=["test_digit_fraction"], visualdl=False, progress_bar=False, log_completions_steps=0,
                max_steps=2, seed=3)
    base.update(kw)
    return GRPOConfig(**base)


def test_trainer_logprobs_equal_rollout_sampling_logprobs(tiny):
    """Same M-RoPE positions, pixels and temperature as the rollout: the trainer's log-probs equal the
    sampler's (PaddleMIX's trainer recomputes them with 1-D positions, which this also shows differ)."""
    proc = Processor.from_pretrained(tiny)
    model = from_pretrained(tiny)
    rows = counting_rows(2, seed=5)
    rows[1]["images"] = [rows[1]["images"][0].resize((200, 84))]  # different size -> left padding
    convs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["problem"]}]}] for r in rows]
    batch = proc(convs, [r["images"] for r in rows])
    assert int(batch["attention_mask"].sum(axis=1).min()) < batch["input_ids"].shape[1]
    out = generate(model, batch, max_new_tokens=10, do_sample=True, temperature=0.7, top_k=50,
                   num_return_sequences=3, eos_token_id=proc.eos_token_id, pad_token_id=proc.pad_token_id, seed=0)
    inp = RolloutInputs(out.prompt_ids, out.completion_ids, out.attention_mask, out.position_ids,
                        batch["pixel_values"], batch["image_grid_thw"], 3)
    mask = out.completion_mask.astype("float32")
    ours = completion_logprobs(model, inp, temperature=0.7, chunk_size=7) * mask
    np.testing.assert_allclose(ours.numpy(), out.logprobs.numpy(), atol=1e-4)

    flat = out.attention_mask.astype("int64").cumsum(axis=1) - 1  # 1-D positions, as PaddleMIX's trainer
    one_d = RolloutInputs(out.prompt_ids, out.completion_ids, out.attention_mask,
                          flat.clip(min=0).unsqueeze(0).expand([3, -1, -1]), batch["pixel_values"],
                          batch["image_grid_thw"], 3)
    wrong = completion_logprobs(model, one_d, temperature=0.7) * mask
    assert float((wrong - out.logprobs).abs().max()) > 1e-3
    untempered = completion_logprobs(model, inp, temperature=1.0) * mask
    assert float((untempered - out.logprobs).abs().max()) > 1e-3


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_vision(tiny, tmp_path, freeze):
    tr = GRPOTrainer(_cfg(tiny, tmp_path, freeze_vision=freeze, max_steps=2, learning_rate=1e-2,
                          reward_funcs=["test_text_length"]))
    before = {n: p.numpy().copy() for n, p in tr.model.visual.named_parameters()}
    dec_before = tr.model.model.layers[0].mlp.up_proj.weight.numpy().copy()
    tr.train()
    changed = [n for n, p in tr.model.visual.named_parameters() if not np.array_equal(before[n], p.numpy())]
    if freeze:
        assert changed == []
    else:
        assert len(changed) > 0
    assert not np.array_equal(dec_before, tr.model.model.layers[0].mlp.up_proj.weight.numpy())


@pytest.mark.slow
def test_grpo_learns_a_synthetic_reward(tiny, tmp_path):
    """Stated margin: mean reward of the last 5 steps exceeds the first 5 steps' by >= 0.3 within 30 steps
    (seeded; measured 0.01 -> 0.6 in about 6 s on 2 cores)."""
    cfg = _cfg(tiny, tmp_path, max_steps=30, prompts_per_step=2, num_generations=8, learning_rate=5e-3,
               beta=0.0, max_completion_length=8, temperature=1.0, save_steps=0)
    hist = GRPOTrainer(cfg).train()
    rewards = [h["reward"] for h in hist]
    first, last = float(np.mean(rewards[:5])), float(np.mean(rewards[-5:]))
    assert last - first >= 0.3, f"reward {first:.3f} -> {last:.3f}"


def _params(model):
    return {n: p.numpy().copy() for n, p in model.named_parameters()}


@pytest.mark.slow
def test_exact_resume(tiny, tmp_path):
    kw = dict(save_steps=2, reward_funcs=["test_text_length", "test_digit_fraction"], lr_scheduler_type="cosine",
              warmup_steps=1)
    full = GRPOTrainer(_cfg(tiny, tmp_path / "full", max_steps=4, **kw))
    full.train()
    ref = _params(full.model)

    first = GRPOTrainer(_cfg(tiny, tmp_path / "split", max_steps=4, **kw))
    first.train(num_steps=2)  # stopped after the step-2 checkpoint, as by an interruption
    resumed = GRPOTrainer(_cfg(tiny, tmp_path / "split", max_steps=4, resume_from_checkpoint="latest", **kw))
    assert resumed.step == 2
    resumed.train()
    got = _params(resumed.model)
    for n in ref:
        np.testing.assert_array_equal(got[n], ref[n], err_msg=n)
    assert [h["reward"] for h in resumed.history] == [h["reward"] for h in full.history]


def test_checkpoints_atomic_and_pruned(tiny, tmp_path):
    tr = GRPOTrainer(_cfg(tiny, tmp_path, max_steps=3, save_steps=1, save_total_limit=2))
    tr.train()
    names = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "checkpoint-*")))
    assert names == ["checkpoint-2", "checkpoint-3"]
    assert not glob.glob(str(tmp_path / ".tmp-*"))
    ckpt = tmp_path / "checkpoint-3"
    assert {"optimizer.pdopt", "scheduler.pdopt", "rng.pdopt", "trainer_state.json", "model"} <= set(os.listdir(ckpt))
    Processor.from_pretrained(str(ckpt / "model"))  # the saved policy is a usable checkpoint directory
    from_pretrained(str(ckpt / "model"))


def test_nonfinite_steps_are_skipped_then_stop(tiny, tmp_path, monkeypatch):
    real = trainer_mod.grpo_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] in (2, 4, 5, 6) else loss), metrics

    monkeypatch.setattr(trainer_mod, "grpo_loss", flaky)
    tr = GRPOTrainer(_cfg(tiny, tmp_path, max_steps=10, max_consecutive_nonfinite=3, reward_funcs=["test_text_length"]))
    before = _params(tr.model)
    with pytest.raises(NonFiniteError, match="3 consecutive"):
        tr.train()
    skipped = [h["skipped"] for h in tr.history]
    assert skipped == [0.0, 1.0, 0.0, 1.0, 1.0]  # step 6 raised before being recorded
    assert tr.nonfinite_total == 4
    assert any(not np.array_equal(before[n], p.numpy()) for n, p in tr.model.named_parameters())


def test_config_yaml_and_overrides(tmp_path):
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml"))):
        if os.path.basename(path).startswith("curr_reft_reject_sft_"):
            continue  # RejectSampleConfig recipes (tests/grpo/test_reject_sample.py parses them)
        if os.path.basename(path).startswith("curr_reft_qwen"):
            continue  # CurriculumConfig recipes (tests/grpo/test_curriculum.py parses them)
        if os.path.basename(path).startswith("visrl_"):
            continue  # SFT / DPO / generation / focus-GRPO recipes (tests/focus/test_recipes.py parses them)
        GRPOConfig.load(path)  # every shipped recipe parses into the dataclass
    y = tmp_path / "c.yaml"
    y.write_text("num_generations: 4\nlearning_rate: 1.0e-5\nreward_funcs: [counting]\n")
    cfg = GRPOConfig.load(str(y), ["learning_rate=2e-6", "freeze_vision=true", "output_dir=123"])
    assert (cfg.num_generations, cfg.learning_rate, cfg.freeze_vision, cfg.output_dir) == (4, 2e-6, True, "123")
    assert cfg.reward_weights == [1.0] and cfg.epsilon_high == cfg.epsilon_low
    with pytest.raises(ValueError, match="unknown config field 'nope'"):
        GRPOConfig.load(None, ["nope=1"])
    with pytest.raises(ValueError, match="divisible"):
        GRPOConfig(prompts_per_step=3, gradient_accumulation_steps=2)


@pytest.mark.parametrize("recompute", [False, True])
def test_shared_prefix_logprobs_and_gradients_equal_full_forward(tiny, recompute):
    """Each prompt computed once for its G completions gives the plain forward's log-probs and gradients."""
    proc = Processor.from_pretrained(tiny)
    model = from_pretrained(tiny)
    rows = counting_rows(2, seed=7)
    rows[0]["images"] = [rows[0]["images"][0].resize((150, 90))]  # different sizes -> left padding
    convs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["problem"]}]}] for r in rows]
    batch = proc(convs, [r["images"] for r in rows])
    out = generate(model, batch, max_new_tokens=7, do_sample=True, num_return_sequences=3,
                   eos_token_id=proc.eos_token_id, pad_token_id=proc.pad_token_id, seed=1)
    inp = RolloutInputs(out.prompt_ids, out.completion_ids, out.attention_mask, out.position_ids,
                        batch["pixel_values"], batch["image_grid_thw"], 3)
    mask = out.completion_mask.astype("float32")
    model.train()
    model.model.recompute = recompute
    results = []
    for shared in (True, False):
        model.clear_gradients(set_to_zero=False)
        lp = completion_logprobs(model, inp, temperature=0.9, shared_prefix=shared)
        (lp * mask).sum().backward()
        grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
        results.append(((lp * mask).numpy(), grads))
    (lp_s, g_s), (lp_f, g_f) = results
    np.testing.assert_allclose(lp_s, lp_f, atol=1e-5)
    assert g_s.keys() == g_f.keys() and any(n.startswith("visual.") for n in g_s)
    for n in g_f:
        np.testing.assert_allclose(g_s[n], g_f[n], rtol=1e-3, atol=1e-5, err_msg=n)


def test_gradient_checkpointing_recomputes_and_gives_the_same_step(tiny, tmp_path, monkeypatch):
    """B10: from_pretrained returns eval mode and Decoder recomputes only ``if self.recompute and
    self.training``: the policy must be in train mode for its gradient pass (and in eval mode for
    rollouts and no-grad passes; the reference always). Recompute changes memory, not numbers."""
    import paddle.distributed.fleet.utils as fleet_utils

    real_recompute = fleet_utils.recompute
    calls = {"n": 0}

    def counting_recompute(*args, **kwargs):
        calls["n"] += 1
        return real_recompute(*args, **kwargs)

    modes = []
    real_logprobs, real_generate = trainer_mod.completion_logprobs, trainer_mod.generate

    def recording_logprobs(model, *args, **kwargs):
        modes.append(("logprobs", paddle.is_grad_enabled(), model.training))
        return real_logprobs(model, *args, **kwargs)

    def recording_generate(model, *args, **kwargs):
        modes.append(("generate", paddle.is_grad_enabled(), model.training))
        return real_generate(model, *args, **kwargs)

    monkeypatch.setattr(fleet_utils, "recompute", counting_recompute)
    monkeypatch.setattr(trainer_mod, "completion_logprobs", recording_logprobs)
    monkeypatch.setattr(trainer_mod, "generate", recording_generate)
    kw = dict(max_steps=1, adam_epsilon=1e-4, steps_per_generation=1, num_iterations=2)
    plain = GRPOTrainer(_cfg(tiny, tmp_path / "plain", **kw))
    plain.train()
    assert calls["n"] == 0
    ckpt = GRPOTrainer(_cfg(tiny, tmp_path / "ckpt", gradient_checkpointing=True, **kw))
    assert not ckpt.ref_model.training
    ckpt.train()
    assert calls["n"] > 0
    # per run: generate (no grad), old log-probs (no grad), reference log-probs (no grad), policy pass (grad)
    assert modes[:4] == [("generate", False, False), ("logprobs", False, False), ("logprobs", False, False),
                         ("logprobs", True, True)]
    assert modes[4:] == modes[:4]
    want = _params(plain.model)
    got = _params(ckpt.model)
    for n in want:
        np.testing.assert_allclose(got[n], want[n], atol=1e-6, rtol=0, err_msg=n)


def test_grad_norm_keeps_one_fp32_copy_alive(monkeypatch):
    """B12: the norm of bf16 gradients casts one gradient at a time (a list of fp32 copies of every
    gradient costs 4 bytes per parameter at once)."""
    import types
    import weakref

    real_astype = paddle.Tensor.astype
    copies: list = []
    alive_at_cast: list[int] = []

    def tracking_astype(self, dtype):
        alive_at_cast.append(sum(r() is not None for r in copies))
        out = real_astype(self, dtype)
        copies.append(weakref.ref(out))
        return out

    grads = [paddle.full([64, 32], float(i + 1)).astype("bfloat16") for i in range(6)]
    holder = types.SimpleNamespace(params=[types.SimpleNamespace(grad=g) for g in grads])
    monkeypatch.setattr(paddle.Tensor, "astype", tracking_astype)
    norm = GRPOTrainer._grad_norm(holder)
    monkeypatch.undo()
    assert len(alive_at_cast) == len(grads)
    assert max(alive_at_cast) == 0, alive_at_cast  # no earlier copy alive when the next is made
    expected = float(np.sqrt(sum(64 * 32 * (i + 1) ** 2 for i in range(6))))
    assert norm == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("field_name", ["dtype", "ref_model_dtype"])
@pytest.mark.parametrize("value", ["float16", "fp16"])
def test_config_refuses_float16(field_name, value):
    """R11: Paddle's GPU repeat_interleave has no fp16 kernel, and group-sharded runs have no GradScaler."""
    with pytest.raises(ValueError, match=rf"{field_name}={value!r}[\s\S]*repeat_interleave[\s\S]*GradScaler"):
        GRPOConfig(**{field_name: value})
    GRPOConfig(**{field_name: "bfloat16"})
