"""The models on the GPU path, checked on CPU: bf16 loading (audit B4), parameters used only inside their
owner's forward (B8, what stage-3 sharding needs), and a whole model (forward, backward, generate) through
the GPU dispatch with the contract doubles of Paddle's GPU kernels (ops/contracts.py)."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlemix_r1 import ops
from paddlemix_r1.generation import generate, pack_decoder
from paddlemix_r1.models import build_tiny_checkpoint, from_pretrained
from paddlemix_r1.ops import contracts

FAMILIES = ["qwen2_vl", "qwen2_5_vl"]


@pytest.fixture(scope="module", params=FAMILIES)
def ckpt(request, tmp_path_factory):
    return build_tiny_checkpoint(str(tmp_path_factory.mktemp(request.param)), family=request.param, seed=3)


def _batch(model, rows=2):
    """Two left-padded prompts with one 4 x 4-patch image each (lengths 12 and 10)."""
    rng = np.random.default_rng(0)
    img, pad, start = model.config.image_token_id, 0, model.config.vision_start_token_id
    end = start + 1  # <|vision_end|>
    body = [5, 6, start] + [img] * 4 + [end]
    ids = np.array([body + [7, 8, 9, 10], [pad, pad] + body + [11, 12]][:rows])
    mask = (np.arange(ids.shape[1])[None] >= np.array([[0], [2]])[:rows]).astype("int64")
    dim = model.config.vision.in_channels * model.config.vision.temporal_patch_size * model.config.vision.patch_size**2
    return {"input_ids": paddle.to_tensor(ids), "attention_mask": paddle.to_tensor(mask),
            "pixel_values": paddle.to_tensor(rng.standard_normal((16 * rows, dim)).astype("float32")),
            "image_grid_thw": paddle.to_tensor(np.array([[1, 4, 4]] * rows))}


def test_bf16_load_keeps_every_buffer_fp32(ckpt):
    """B4: Layer.to(dtype) cast inv_freq to bf16 (1.2 rad phase error at position 1000 on Qwen2.5)."""
    fp32, bf16 = from_pretrained(ckpt), from_pretrained(ckpt, dtype="bfloat16")
    buffers = dict(bf16.named_buffers())
    assert {"model.inv_freq", "visual.inv_freq"} <= set(buffers)
    ref = dict(fp32.named_buffers())
    for name, buf in buffers.items():
        assert buf.dtype == paddle.float32, name
        np.testing.assert_array_equal(buf.numpy(), ref[name].numpy(), err_msg=name)
    assert {p.dtype for p in bf16.parameters()} == {paddle.bfloat16}
    assert bf16.lm_head.weight is bf16.model.embed_tokens.weight or not bf16.config.tie_word_embeddings


def test_every_parameter_is_used_inside_its_owners_forward(ckpt):
    """B8: stage-3 sharding gathers a parameter only between the forward hooks of the layer that owns it;
    PatchEmbed's weight belonged to a layer that was never called."""
    model = from_pretrained(ckpt)
    called, hooks = set(), []
    for name, layer in model.named_sublayers(include_self=True):
        if layer._parameters:
            hooks.append(layer.register_forward_pre_hook(lambda lyr, inp, n=name: called.add(n)))
    model(**_batch(model))
    for h in hooks:
        h.remove()
    owners = {name for name, layer in model.named_sublayers(include_self=True) if layer._parameters}
    assert "visual.patch_embed.proj" in owners
    assert owners - called == set()


def test_packing_is_cpu_only(ckpt):
    """R10 / R4(e): no packed bf16 weight copies (and no weight reads outside a forward) on a GPU."""
    model = from_pretrained(ckpt)
    assert pack_decoder(model.model) is not None
    with contracts.gpu_contracts():
        assert pack_decoder(model.model) is None


def _loss_and_grads(model, batch):
    model.clear_gradients(set_to_zero=False)
    logits = model(**batch).logits  # (B, L, V)
    loss = (logits * logits).mean()
    loss.backward()
    return logits.numpy(), {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


def test_whole_model_through_gpu_dispatch_equals_cpu(ckpt):
    """Forward, backward and greedy generation of a tiny model through every fused implementation, with the
    kernels' preconditions enforced (B1 rotary of B > 1 rows, B3 attention backward, B5 fp32 vision)."""
    model = from_pretrained(ckpt)
    model.train()
    batch = _batch(model)
    ref_logits, ref_grads = _loss_and_grads(model, batch)
    with contracts.gpu_contracts() as log:
        logits, grads = _loss_and_grads(model, batch)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)
    assert grads.keys() == ref_grads.keys() and len(grads) > 20
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, err_msg=name)
    assert log.calls["fused_rotary_position_embedding"] == model.config.text.num_hidden_layers
    assert log.calls["scaled_dot_product_attention"] == model.config.text.num_hidden_layers
    assert log.calls["fused_rms_norm"] > 0 and log.calls["swiglu"] > 0
    assert log.calls["flash_attn_unpadded"] == 0  # fp32 vision attention: the exact eager path

    model.eval()
    kwargs = {"max_new_tokens": 6, "do_sample": False, "num_return_sequences": 2, "eos_token_id": None, "seed": 0}
    ref = generate(model, batch, **kwargs)
    with contracts.gpu_contracts() as log:
        out = generate(model, batch, **kwargs)
    np.testing.assert_array_equal(out.completion_ids.numpy(), ref.completion_ids.numpy())
    np.testing.assert_allclose(out.logprobs.numpy(), ref.logprobs.numpy(), atol=1e-4)
    assert log.calls["fused_rotary_position_embedding"] > 0
    assert ops.device_kind() == "cpu"
