"""LoRA adapters (models/lora.py): decoder-only targets, identity at init, the adapters-off switch, packed
decoding, and the two HF outputs (merged checkpoint, PEFT adapter) against transformers + peft.

transformers, torch and peft run in a subprocess (tests/hf_reference.py ``lora``), never in this process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from safetensors.numpy import load_file, save_file

from paddlemix_r1.generation import generate, pack_decoder
from paddlemix_r1.generation.engine import forward
from paddlemix_r1.grpo.logprobs import RolloutInputs, completion_logprobs
from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained
from paddlemix_r1.models.lora import (
    DEFAULT_TARGET_MODULES,
    LoraConfig,
    LoraLinear,
    adapter_parameters,
    adapters_disabled,
    apply_lora,
    load_adapter,
    lora_layers,
    save_adapter,
)

HF_REFERENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hf_reference.py")
TOL = 1e-4
LAYERS = 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Both families; Qwen2-VL untied, Qwen2.5-VL tied (its vision MLP also has gate/up/down_proj layers)."""
    root = tmp_path_factory.mktemp("lora-tiny")
    return {
        "qwen2_vl": build_tiny_checkpoint(str(root / "qwen2_vl"), family="qwen2_vl", seed=2, tie_word_embeddings=False),
        "qwen2_5_vl": build_tiny_checkpoint(str(root / "qwen2_5_vl"), family="qwen2_5_vl", seed=3),
    }


def _batch(model) -> dict[str, np.ndarray]:
    """Row 0: text + one 4x6-patch image; row 1: text only, left-padded."""
    c = model.config
    ids0 = [5, 6, c.vision_start_token_id] + [c.image_token_id] * 6 + [c.vision_end_token_id, 7, 8]
    ids1 = [9, 10, 11, 12, 13]
    length = len(ids0)
    ids = np.zeros((2, length), np.int64)
    mask = np.zeros((2, length), np.int64)
    ids[0], mask[0] = ids0, 1
    ids[1, -len(ids1):], mask[1, -len(ids1):] = ids1, 1
    rng = np.random.default_rng(0)
    return {"input_ids": ids, "attention_mask": mask,
            "pixel_values": rng.standard_normal((24, 3 * 2 * 14 * 14)).astype("float32"),
            "image_grid_thw": np.array([[1, 4, 6]], np.int64)}


def _assert_close_on_tokens(ours: np.ndarray, ref: np.ndarray, batch: dict) -> None:
    """Logits at non-padding positions (what a padded position computes is implementation-defined)."""
    keep = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[keep], ref[keep], atol=TOL)


def _logits(model, batch) -> np.ndarray:
    with paddle.no_grad():
        return model(**{k: paddle.to_tensor(v) for k, v in batch.items()}).logits.numpy()


def _adapted(path: str, seed: int = 0, **cfg):
    """The checkpoint with adapters whose B factors are moved off zero (a visible delta)."""
    model = from_pretrained(path)
    apply_lora(model, LoraConfig(**{"r": 4, "alpha": 8.0, "dropout": 0.1, **cfg}))
    paddle.seed(seed)
    for layer in lora_layers(model).values():
        layer.lora_B.weight.set_value(paddle.normal(0.0, 0.2, layer.lora_B.weight.shape))
    return model


def test_apply_lora_adapts_decoder_projections_only_and_starts_unchanged(tiny):
    model = from_pretrained(tiny["qwen2_5_vl"])
    batch = _batch(model)
    base = _logits(model, batch)
    names = apply_lora(model, LoraConfig(r=4, alpha=8.0))
    expected = [f"model.layers.{i}.{block}.{proj}" for i in range(LAYERS)
                for block, projs in (("self_attn", DEFAULT_TARGET_MODULES[:4]), ("mlp", DEFAULT_TARGET_MODULES[4:]))
                for proj in projs]
    assert sorted(names) == sorted(expected)
    assert not [n for n, layer in model.named_sublayers() if isinstance(layer, LoraLinear) and "visual" in n]
    trainable = {n for n, p in model.named_parameters() if not p.stop_gradient}
    assert trainable == set(adapter_parameters(model)) and len(trainable) == 2 * len(expected)
    for layer in lora_layers(model).values():
        a, b = layer.lora_A.weight.numpy(), layer.lora_B.weight.numpy()
        bound = 1.0 / math.sqrt(a.shape[0])  # kaiming-uniform with a = sqrt(5) over fan_in = in, as PEFT
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.5 * bound
        assert not b.any()
        assert layer.training == model.training  # eval model: the new adapters' dropout is off too
    np.testing.assert_array_equal(_logits(model, batch), base)  # B = 0: the model is unchanged

    only_q = from_pretrained(tiny["qwen2_5_vl"])
    assert apply_lora(only_q, LoraConfig(r=2, target_modules=("v_proj", "q_proj"))) == [
        f"model.layers.{i}.self_attn.{p}" for i in range(LAYERS) for p in ("q_proj", "v_proj")]
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(only_q, LoraConfig(r=2))


@pytest.mark.parametrize("kwargs,match", [
    (dict(r=0), "rank"), (dict(alpha=0.0), "alpha"), (dict(dropout=1.0), "dropout"),
    (dict(target_modules=("qkv",)), "subset"), (dict(target_modules=()), "subset"),
])
def test_lora_config_is_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoraConfig(**kwargs)


def test_adapters_disabled_gives_the_base_model(tiny):
    path = tiny["qwen2_vl"]
    batch = _batch(from_pretrained(path))
    base = _logits(from_pretrained(path), batch)
    model = _adapted(path)
    adapted = _logits(model, batch)
    assert np.abs(adapted - base).max() > 1e-2
    with adapters_disabled(model):
        np.testing.assert_array_equal(_logits(model, batch), base)
    np.testing.assert_array_equal(_logits(model, batch), adapted)  # switched back on exit
    with pytest.raises(ValueError, match="no LoRA adapters"):
        with adapters_disabled(from_pretrained(path)):
            pass


def test_packed_decoding_folds_the_adapters(tiny):
    """The packed decoder copy folds the adapter deltas into its packed weights: the same logits as the unpacked
    forward, and a rollout's sampled tokens and log-probs equal the unpacked path's (also with adapters off)."""
    path = tiny["qwen2_5_vl"]
    model = _adapted(path, seed=1)
    np_batch = _batch(model)
    batch = {k: paddle.to_tensor(v) for k, v in np_batch.items()}
    unpacked = _logits(model, np_batch)
    with paddle.no_grad():
        packed = forward(model, batch, packed=pack_decoder(model.model)).logits.numpy()
    np.testing.assert_allclose(packed, unpacked, atol=TOL)
    assert np.abs(unpacked - _logits(from_pretrained(path), np_batch)).max() > 1e-2

    def rollout(pack: bool):
        return generate(model, batch, max_new_tokens=6, do_sample=True, temperature=0.9, num_return_sequences=2,
                        pad_token_id=0, seed=7, pack_weights=pack)

    for ctx in (None, adapters_disabled):
        if ctx is None:
            fast, slow = rollout(True), rollout(False)
        else:
            with ctx(model):
                fast, slow = rollout(True), rollout(False)
        np.testing.assert_array_equal(fast.completion_ids.numpy(), slow.completion_ids.numpy())
        np.testing.assert_allclose(fast.logprobs.numpy(), slow.logprobs.numpy(), atol=TOL)
    out = rollout(True)
    inp = RolloutInputs(out.prompt_ids, out.completion_ids, out.attention_mask, out.position_ids,
                        batch["pixel_values"], batch["image_grid_thw"], 2)
    with paddle.no_grad():
        ours = completion_logprobs(model, inp, temperature=0.9) * out.completion_mask.astype("float32")
    np.testing.assert_allclose(ours.numpy(), out.logprobs.numpy(), atol=TOL)


def test_adapter_round_trip_and_strict_loading(tiny, tmp_path):
    path = tiny["qwen2_vl"]
    model = _adapted(path, seed=2, target_modules=("q_proj", "v_proj", "down_proj"))
    batch = _batch(model)
    save_adapter(model, str(tmp_path / "adapter"), base_model_name_or_path=path)
    fresh = from_pretrained(path)
    load_adapter(fresh, str(tmp_path / "adapter"))  # adds the adapters the file describes
    assert list(lora_layers(fresh)) == list(lora_layers(model))
    for (n1, p1), (n2, p2) in zip(adapter_parameters(model).items(), adapter_parameters(fresh).items()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.numpy(), p2.numpy(), err_msg=n1)
    np.testing.assert_array_equal(_logits(fresh, batch), _logits(model, batch))

    model.save_pretrained(str(tmp_path / "merged"))  # merged weights, no adapter files beside them
    assert not os.path.exists(tmp_path / "merged" / "adapter_config.json")
    np.testing.assert_allclose(_logits(from_pretrained(str(tmp_path / "merged")), batch), _logits(model, batch),
                               atol=1e-5)

    other_rank = from_pretrained(path)
    apply_lora(other_rank, LoraConfig(r=2, alpha=8.0, target_modules=("q_proj", "v_proj", "down_proj")))
    with pytest.raises(ValueError, match="r=4"):
        load_adapter(other_rank, str(tmp_path / "adapter"))
    weights = str(tmp_path / "adapter" / "adapter_model.safetensors")
    state = load_file(weights)
    state["base_model.model.model.visual.blocks.0.attn.qkv.lora_A.weight"] = np.zeros((4, 32), np.float32)
    save_file(state, weights)
    with pytest.raises(KeyError, match="not a lora_A/lora_B weight of a decoder layer"):
        load_adapter(from_pretrained(path), str(tmp_path / "adapter"))


@pytest.fixture(scope="module")
def hf_lora(tiny, tmp_path_factory):
    """Per family: our adapted model's logits, and transformers' logits of the merged checkpoint and of the
    base checkpoint + our adapter loaded by HF peft (one subprocess for both families)."""
    for module in ("torch", "transformers", "peft"):
        if importlib.util.find_spec(module) is None:  # find_spec, not import: they stay out of this process
            pytest.skip(f"{module} (test extra) is not installed; it is the reference implementation")
    work = tmp_path_factory.mktemp("lora-hf")
    ours, cases = {}, []
    for family, path in tiny.items():
        model = _adapted(path, seed=4)
        batch = _batch(model)
        ours[family] = (_logits(model, batch), batch)
        d = work / family
        model.save_pretrained(str(d / "merged"))
        save_adapter(model, str(d / "adapter"), base_model_name_or_path=path)
        np.savez(d / "batch.npz", **batch)
        cases.append({"name": family, "family": family, "base": path, "merged": str(d / "merged"),
                      "adapter": str(d / "adapter"), "batch": str(d / "batch.npz")})
    (work / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, HF_REFERENCE, "lora", str(work / "cases.json"), str(work / "ref.npz")],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"transformers/peft reference run failed:\n{proc.stderr[-4000:]}")
    return ours, dict(np.load(work / "ref.npz")), work


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_merged_checkpoint_loads_in_transformers_with_identical_logits(hf_lora, family):
    ours, ref, _ = hf_lora
    _assert_close_on_tokens(ours[family][0], ref[f"{family}/merged"], ours[family][1])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_adapter_loads_in_hf_peft_with_identical_logits(hf_lora, family):
    ours, ref, work = hf_lora
    _assert_close_on_tokens(ours[family][0], ref[f"{family}/peft"], ours[family][1])
    adapted = list(ref[f"{family}/adapted"])  # peft's own module names: the decoder projections only
    assert len(adapted) == LAYERS * len(DEFAULT_TARGET_MODULES)
    assert all(n.startswith("base_model.model.model.language_model.layers.") for n in adapted), adapted[:3]
    state = load_file(str(work / family / "adapter" / "adapter_model.safetensors"))
    a = state["base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = state["base_model.model.model.language_model.layers.0.mlp.down_proj.lora_B.weight"]
    assert a.shape == (4, 64) and b.shape == (64, 4)  # torch layout: A (r, in), B (out, r)
    with open(work / family / "adapter" / "adapter_config.json") as f:
        cfg = json.load(f)
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"], cfg["task_type"]) == ("LORA", 4, 8.0, "CAUSAL_LM")
