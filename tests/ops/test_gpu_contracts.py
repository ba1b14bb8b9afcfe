"""The GPU dispatch, checked on CPU: every fused implementation runs against the contract doubles of
Paddle's GPU kernels (ops/contracts.py), which refuse what the real kernels refuse, and gives the eager
reference's numbers. Each test names the audit item (../shared/reviews/gpu_audit.md) it would have caught."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlemix_r1 import ops
from paddlemix_r1.ops import contracts, dispatch
from paddlemix_r1.ops.contracts import ContractError

rng = np.random.default_rng(0)


def t(*shape, dtype="float32", grad=False):
    x = paddle.to_tensor(rng.standard_normal(shape).astype("float32")).astype(dtype)
    x.stop_gradient = not grad
    return x


def eager(op):
    return dispatch.implementations(op)["eager"]


def f32(x):
    return x.astype("float32").numpy()


def rope_tables(b, length, hd):
    pos = np.stack([np.arange(length) + 7 * i for i in range(b)])  # (B, L)
    pos = paddle.to_tensor(np.broadcast_to(pos, (3, b, length)).copy())
    return ops.mrope_cos_sin(pos, ops.inv_freq(hd, 10000.0), [hd // 4, hd // 8, hd // 8])  # (B, L, hd) each


def test_dispatch_inside_contracts_is_the_gpu_one():
    with contracts.gpu_contracts():
        assert ops.device_kind() == "gpu"
        for op in ("rotary", "attention", "varlen_attention", "vision_attention", "rms_norm", "swiglu"):
            assert ops.implementation(op) == "fused", op
    assert ops.device_kind() == "cpu"


# ----- B1: fused rotary with per-row M-RoPE tables -----
def test_rope_double_refuses_per_row_tables_as_the_kernel_does():
    q, k = t(2, 5, 4, 16), t(2, 5, 2, 16)
    cos, sin = rope_tables(2, 5, 16)
    with contracts.gpu_contracts():
        kernel = ops.gpu_kernels.kernel("fused_rotary_position_embedding")
        with pytest.raises(ContractError, match="batch_size and num_heads of sin must be 1"):
            kernel(q, k, None, sin=sin.unsqueeze(2), cos=cos.unsqueeze(2), use_neox_rotary_style=False)


@pytest.mark.parametrize("expanded", [False, True])
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-6), ("bfloat16", 2e-2)])
def test_fused_rotary_batch_of_rows_equals_eager(expanded, dtype, tol):
    """B1: decode steps, prefill of several prompts and log-prob passes all rotate B > 1 rows."""
    b, length, nh, nkv, hd = 3, 5, 4, 2, 16
    q, k = t(b, length, nh, hd, dtype=dtype), t(b, length, nkv, hd, dtype=dtype)
    cos, sin = rope_tables(b, length, hd)
    if expanded:
        cos, sin = ops.expand_tables(cos, sin, nh + nkv)
    with contracts.gpu_contracts() as log:
        got_q, got_k = ops.apply_rotary(q, k, cos, sin)
    assert log.calls["fused_rotary_position_embedding"] == 1
    assert got_q.dtype == q.dtype and got_q.shape == q.shape and got_k.shape == k.shape
    ref_q, ref_k = eager("rotary")(q.astype("float32"), k.astype("float32"), cos, sin)
    np.testing.assert_allclose(f32(got_q), ref_q.numpy(), atol=tol)
    np.testing.assert_allclose(f32(got_k), ref_k.numpy(), atol=tol)


# ----- B2 / B3: decoder attention through scaled_dot_product_attention -----
def _attention_inputs(b, lq, lk, nh, nkv, hd, dtype, grad=False):
    q, k, v = t(b, lq, nh, hd, dtype=dtype, grad=grad), t(nkv, b, lk, hd, dtype=dtype, grad=grad), \
        t(nkv, b, lk, hd, dtype=dtype, grad=grad)
    am = np.ones((b, lk), "int64")
    am[0, :3] = 0  # left padding in row 0
    return q, k, v, ops.causal_padding_mask(paddle.to_tensor(am), lq)


@pytest.mark.parametrize("lk", [13, 16])
def test_bf16_decoder_attention_takes_the_flash_branch(lk):
    """B2: a scale= argument disabled flash in Paddle's sdpa, whatever the mask."""
    q, k, v, mask = _attention_inputs(2, lk, lk, 4, 2, 16, "bfloat16")
    with contracts.gpu_contracts() as log:
        out = ops.attention(q, k, v, mask, 16**-0.5)
    assert log.calls["sdpa:flash_attn"] == 1, dict(log.calls)
    ref = eager("attention")(*(x.astype("float32") for x in (q, k, v)), mask, 16**-0.5)
    np.testing.assert_allclose(f32(out), ref.numpy(), atol=3e-2)


@pytest.mark.parametrize("dtype,branch,tol", [("bfloat16", "flash_attn", 3e-2), ("float32", "math", 1e-5)])
def test_attention_with_another_scale_keeps_the_branch_and_the_scale(dtype, branch, tol):
    q, k, v, mask = _attention_inputs(2, 6, 6, 4, 2, 16, dtype)
    with contracts.gpu_contracts() as log:
        out = ops.attention(q, k, v, mask, 0.37)
    assert log.calls[f"sdpa:{branch}"] == 1, dict(log.calls)  # fp32 never has flash; K = 6: not mem_efficient
    ref = eager("attention")(*(x.astype("float32") for x in (q, k, v)), mask, 0.37)
    np.testing.assert_allclose(f32(out), ref.numpy(), atol=tol)


@pytest.mark.parametrize("lk", [8, 16])  # key length % 8 == 0: Paddle takes the memory-efficient kernel
def test_attention_backward_through_mem_efficient_kernel(lk):
    """B3: training=False made the mem-efficient kernel skip the log-sum-exp its backward reads."""
    q, k, v, mask = _attention_inputs(2, lk, lk, 4, 2, 16, "float32", grad=True)
    up = t(2, lk, 4, 16)
    with contracts.gpu_contracts() as log:
        out = ops.attention(q, k, v, mask, 16**-0.5)
        got = paddle.grad(out, [q, k, v], up)
    assert log.calls["sdpa:mem_efficient"] == 1, dict(log.calls)
    ref_out = eager("attention")(q, k, v, mask, 16**-0.5)
    ref = paddle.grad(ref_out, [q, k, v], up)
    np.testing.assert_allclose(out.numpy(), ref_out.numpy(), atol=1e-5)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g.numpy(), r.numpy(), atol=1e-5)


def test_sdpa_double_refuses_inference_mode_kernels_under_backward():
    q, k, v, mask = _attention_inputs(1, 8, 8, 2, 2, 16, "float32", grad=True)
    kernel_args = (q, k.transpose([1, 2, 0, 3]), v.transpose([1, 2, 0, 3]))  # fp32, K % 8 == 0: mem_efficient
    with contracts.gpu_contracts():
        sdpa = ops.gpu_kernels.kernel("scaled_dot_product_attention")
        with pytest.raises(ContractError, match="training=False while gradients flow"):
            sdpa(*kernel_args, attn_mask=mask, training=False)
        with paddle.no_grad():
            sdpa(*kernel_args, attn_mask=mask, training=False)  # no backward: allowed


# ----- B5 / R12: vision attention through flash_attn_unpadded -----
CU = np.array([0, 16, 40, 64])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_vision_attention_reaches_flash_only_in_half_precision(dtype):
    """B5: flash_attn_unpadded is registered for float16/bfloat16 only; an fp32 policy crashed there."""
    n, nh, hd = 64, 2, 16
    qkv = t(n, 3, nh, hd, dtype=dtype, grad=True)
    hw = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2)
    cos, sin = ops.vision_cos_sin(paddle.to_tensor(hw), ops.inv_freq(hd // 2, 10000.0))
    cos, sin = ops.expand_tables(cos.unsqueeze(0), sin.unsqueeze(0), 2 * nh)  # (1, N, 2 nh, hd)
    up = t(n, nh, hd)
    with contracts.gpu_contracts() as log:
        out = ops.vision_attention(qkv, cos, sin, CU, hd**-0.5)
        (grad,) = paddle.grad(out, [qkv], up.astype(dtype))
    assert log.calls["flash_attn_unpadded"] == (1 if dtype == "bfloat16" else 0)
    x32 = qkv.astype("float32").detach()
    x32.stop_gradient = False
    ref = eager("vision_attention")(x32, cos, sin, CU, hd**-0.5)
    tol = 1e-5 if dtype == "float32" else 5e-2
    np.testing.assert_allclose(f32(out), ref.numpy(), atol=tol)
    (ref_grad,) = paddle.grad(ref, [x32], up)
    np.testing.assert_allclose(f32(grad), ref_grad.numpy(), atol=tol, rtol=tol)


def test_flash_double_refuses_fp32_and_old_gpus():
    q = t(64, 2, 16)
    cu = paddle.to_tensor(CU.astype("int32"))
    with contracts.gpu_contracts():
        flash = ops.gpu_kernels.kernel("flash_attn_unpadded")
        with pytest.raises(ContractError, match="not registered for float32"):
            flash(q, q, q, cu, cu, 24, 24, 0.25)
    with contracts.gpu_contracts(capability=(7, 0)):
        with pytest.raises(ContractError, match="sm8x or sm90"):
            ops.gpu_kernels.kernel("flash_attn_unpadded")(*(q.astype("bfloat16"),) * 3, cu, cu, 24, 24, 0.25)
    # R12: the dispatch only calls flash where the fork runs (V100 / Blackwell: the eager path)
    for capability, runs in (((7, 0), False), ((8, 0), True), ((8, 9), True), ((9, 0), True), ((10, 0), False)):
        with contracts.gpu_contracts(capability=capability):
            assert ops.gpu_kernels.flash_attention_runs("bfloat16", 80) is runs, capability
            assert not ops.gpu_kernels.flash_attention_runs("bfloat16", 84)  # head_dim % 8
            assert not ops.gpu_kernels.flash_attention_runs("float32", 80)


# ----- rms_norm, swiglu -----
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_fused_rms_norm_and_swiglu_equal_eager(dtype, tol):
    x, w = t(3, 5, 32, dtype=dtype), t(32, dtype=dtype)
    gate, up = t(3, 5, 32, dtype=dtype), t(3, 5, 32, dtype=dtype)
    with contracts.gpu_contracts() as log:
        y = ops.rms_norm(x, w, 1e-6)
        s = ops.swiglu(gate, up)
        p = ops.swiglu_packed(paddle.concat([gate.astype("float32"), up.astype("float32")], -1).astype(dtype))
    assert log.calls["fused_rms_norm"] == 1 and log.calls["swiglu"] == 2
    np.testing.assert_allclose(f32(y), eager("rms_norm")(x.astype("float32"), w.astype("float32"), 1e-6).numpy(),
                               atol=tol, rtol=tol)
    ref = eager("swiglu")(gate.astype("float32"), up.astype("float32")).numpy()
    np.testing.assert_allclose(f32(s), ref, atol=tol, rtol=tol)
    np.testing.assert_allclose(f32(p), ref, atol=tol, rtol=tol)


def test_rms_norm_double_refuses_mixed_dtypes():
    with contracts.gpu_contracts():
        with pytest.raises(ContractError, match="must equal x's"):
            ops.gpu_kernels.kernel("fused_rms_norm")(t(4, 8, dtype="bfloat16"), t(8), None, 1e-6, 1)
