"""Checkpoint I/O: round trips with transformers and with ourselves, sharding, clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import paddle
import pytest
from hf_reference import IMAGE_TOKEN, VISION_END, VISION_START, HFModel, build_hf_checkpoint
from safetensors.numpy import load_file, save_file

from paddlemix_r1.models import ModelConfig, from_pretrained

FAMILIES = ["qwen2_vl", "qwen2_5_vl"]


def _batch():
    rng = np.random.default_rng(0)
    ids = [5, 6, VISION_START] + [IMAGE_TOKEN] * 6 + [VISION_END, 7, 8]
    return {
        "input_ids": np.array([ids]),
        "attention_mask": np.ones((1, len(ids)), np.int64),
        "pixel_values": rng.standard_normal((24, 1176)).astype("float32"),
        "image_grid_thw": np.array([[1, 4, 6]]),
    }


def _logits(model, batch):
    return model(**{k: paddle.to_tensor(v) for k, v in batch.items()}).logits.numpy()


def _perturb(model, seed=1):
    """Move every weight so a saved model differs from the checkpoint it came from."""
    paddle.seed(seed)
    for p in model.parameters():
        p.set_value(p + 0.01 * paddle.randn(p.shape))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tie", [False, True])
def test_save_loads_in_transformers_with_identical_logits(tmp_path, family, tie):
    src = build_hf_checkpoint(str(tmp_path / "src"), family, tie=tie)
    model = from_pretrained(src)
    _perturb(model)
    out = str(tmp_path / "out")
    model.save_pretrained(out)
    batch = _batch()
    ours = _logits(model, batch)
    ref = HFModel(out, family).logits(batch)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    again = from_pretrained(out)  # ours -> HF files -> ours is exact
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), again.named_parameters()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.numpy(), p2.numpy(), err_msg=n1)


def test_published_key_layout_and_sharding(tmp_path):
    src = build_hf_checkpoint(str(tmp_path / "src"), "qwen2_vl")
    model = from_pretrained(src)
    out = str(tmp_path / "sharded")
    model.save_pretrained(out, max_shard_bytes=64 * 1024)
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    files = set(index["weight_map"].values())
    assert len(files) > 1
    keys = set(index["weight_map"])
    assert "model.layers.0.self_attn.q_proj.weight" in keys and "visual.merger.mlp.0.weight" in keys
    assert not any(k.startswith("model.language_model.") for k in keys)
    again = from_pretrained(out)
    np.testing.assert_array_equal(_logits(model, _batch()), _logits(again, _batch()))


def test_save_keeps_tokenizer_files_and_is_atomic(tmp_path):
    src = build_hf_checkpoint(str(tmp_path / "src"), "qwen2_vl")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.json").write_text("{}")
    model = from_pretrained(src)
    model.save_pretrained(str(out))
    assert (out / "tokenizer.json").read_text() == "{}"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-save-")]


def test_bfloat16_load(tmp_path):
    src = build_hf_checkpoint(str(tmp_path / "src"), "qwen2_5_vl")
    model = from_pretrained(src, dtype="bfloat16")
    assert all(p.dtype == paddle.bfloat16 for p in model.parameters())


def _rewrite(path, fn):
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    fn(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def test_transformers5_module_key_layout_loads(tmp_path):
    """Keys named after transformers 5's modules (model.language_model.*, model.visual.*) load too."""
    src = build_hf_checkpoint(str(tmp_path / "src"), "qwen2_5_vl")
    before = _logits(from_pretrained(src), _batch())

    def rename(t):
        for k in list(t):
            if k.startswith("model."):
                t["model.language_model." + k[len("model."):]] = t.pop(k)
            elif k.startswith("visual."):
                t["model." + k] = t.pop(k)

    _rewrite(src, rename)
    assert any(k.startswith("model.visual.") for k in load_file(os.path.join(src, "model.safetensors")))
    np.testing.assert_array_equal(_logits(from_pretrained(src), _batch()), before)


def test_missing_key_names_it(tmp_path):
    src = build_hf_checkpoint(str(tmp_path / "src"), "qwen2_vl")
    key = "model.layers.1.mlp.up_proj.weight"
    _rewrite(src, lambda t: t.pop(key))
    with pytest.raises(KeyError, match=r"model\.layers\.1\.mlp\.up_proj\.weight \[64, 112\]"):
        from_pretrained(src)


def test_misshaped_key_names_both_shapes(tmp_path):
    src = build_hf_checkpoint(str(tmp_path / "src"), "qwen2_vl")
    key = "model.layers.0.self_attn.k_proj.weight"

    def shrink(t):
        t[key] = t[key][:16]

    _rewrite(src, shrink)
    with pytest.raises(ValueError, match=r"k_proj\.weight.*\[64, 16\].*\[64, 32\]"):
        from_pretrained(src)


def test_unexpected_key_is_an_error(tmp_path):
    src = build_hf_checkpoint(str(tmp_path / "src"), "qwen2_vl")
    _rewrite(src, lambda t: t.__setitem__("model.extra.weight", np.zeros(3, np.float32)))
    with pytest.raises(KeyError, match="model.extra.weight"):
        from_pretrained(src)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        ModelConfig.from_dict({"model_type": "llama"})
    src = build_hf_checkpoint(str(tmp_path / "src"), "qwen2_5_vl")
    cfg = json.load(open(os.path.join(src, "config.json")))
    del cfg["text_config"]["hidden_size"]
    with pytest.raises(KeyError, match="text_config.hidden_size"):
        ModelConfig.from_dict(cfg, source="x/config.json")


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoint_runs_in_transformers_end_to_end(tmp_path, family):
    """Our tiny checkpoint (published config layout, our tokenizer) through our Processor: same logits
    in transformers, including an image smaller than min_pixels and a left-padded pair."""
    from PIL import Image

    from paddlemix_r1.models import build_tiny_checkpoint
    from paddlemix_r1.processing import Processor

    ckpt = build_tiny_checkpoint(str(tmp_path / "tiny"), family=family, seed=3)
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))  # 10x12 < min_pixels
    big = Image.fromarray(rng.integers(0, 255, (90, 130, 3), dtype=np.uint8))
    convs = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many shapes?"}]}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]}],
    ]
    batch = Processor.from_pretrained(ckpt)(convs, [[small], [big, small]])
    ours = from_pretrained(ckpt)(**batch).logits.numpy()
    ids = batch["input_ids"].numpy()
    ref_model = HFModel(ckpt, family)
    ref = ref_model.logits({k: v.numpy() for k, v in batch.items()})
    keep = batch["attention_mask"].numpy().astype(bool)
    assert (ids == ref_model.model.config.image_token_id).sum() == batch["pixel_values"].shape[0] // 4
    assert np.abs(ours - ref)[keep].max() <= 1e-4
