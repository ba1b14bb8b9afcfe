"""Gradient checkpointing (recompute) changes memory, not numbers."""

from __future__ import annotations

import numpy as np
import paddle

from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained


def _grads(model, batch):
    model.train()
    model.clear_gradients(set_to_zero=False)
    model(**batch).logits.square().mean().backward()
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


def test_recompute_gives_the_same_gradients(tmp_path):
    ckpt = build_tiny_checkpoint(str(tmp_path / "tiny"), family="qwen2_vl", seed=2)
    model = from_pretrained(ckpt)
    rng = np.random.default_rng(0)
    ids = np.array([[5, 6, 507] + [510] * 4 + [508, 7, 8, 9]])
    batch = {"input_ids": paddle.to_tensor(ids), "attention_mask": paddle.ones(ids.shape, "int64"),
             "pixel_values": paddle.to_tensor(rng.standard_normal((16, 1176)).astype("float32")),
             "image_grid_thw": paddle.to_tensor(np.array([[1, 4, 4]]))}
    plain = _grads(model, batch)
    model.model.recompute = True
    recomputed = _grads(model, batch)
    assert plain.keys() == recomputed.keys() and len(plain) > 10
    for n in plain:
        np.testing.assert_allclose(recomputed[n], plain[n], rtol=1e-5, atol=1e-7, err_msg=n)
