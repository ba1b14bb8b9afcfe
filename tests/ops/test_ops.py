"""ops: eager implementations against plain formulas, the device dispatch, and GPU kernels where
CUDA Paddle exists (skipped with the reason elsewhere)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddlemix_r1 import ops
from paddlemix_r1.ops import cpu_ext, dispatch
from paddlemix_r1.ops.rotary import rotate_half_matrix

HAS_GPU = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs CUDA Paddle and a GPU (this build: "
                         f"compiled_with_cuda={paddle.is_compiled_with_cuda()})")
rng = np.random.default_rng(0)


def t(*shape):
    return paddle.to_tensor(rng.standard_normal(shape).astype("float32"))


@pytest.mark.skipif(ops.device_kind() != "cpu", reason=f"the CPU dispatch table (this process runs on "
                    f"{ops.device_kind()}; test_fused_matches_eager_on_gpu covers the GPU one)")
def test_cpu_uses_eager_except_measured_cpu_choices():
    for op in ("rotary", "attention", "varlen_attention", "log_softmax"):
        assert ops.implementation(op) == "eager", op
    assert ops.implementation("linear") == "gemm_grad"
    kernel = cpu_ext.available()
    for op in ("layer_norm", "rms_norm"):
        assert ops.implementation(op) == ("cpu_kernel" if kernel else "gemm_grad"), cpu_ext.status()
    for op in ("softmax", "swiglu", "quick_gelu"):
        assert ops.implementation(op) == ("cpu_kernel" if kernel else "eager"), cpu_ext.status()
    for op in ("vision_attention", "grouped_decode_attention"):
        assert ops.implementation(op) == ("cpu_kernel" if cpu_ext.provides(op) else "eager"), cpu_ext.status()


def _values_and_grads(fn, *tensors):
    for x in tensors:
        x.stop_gradient = False
    out = fn(*tensors)
    upstream = paddle.to_tensor(np.random.default_rng(1).standard_normal(out.shape).astype("float32"))
    grads = paddle.grad(out, list(tensors), upstream)
    return out.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("shape", [(7, 16), (2, 5, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gemm_grad_equals_eager(shape, bias):
    x, w, b = t(*shape), t(16, 24), t(24)
    args = (x, w, b) if bias else (x, w)
    with ops.override(linear="gemm_grad"):
        got = _values_and_grads(lambda *a: ops.linear(*a) if bias else ops.linear(*a, None), *args)
    with ops.override(linear="eager"):
        ref = _values_and_grads(lambda *a: ops.linear(*a) if bias else ops.linear(*a, None), *args)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    for g, r in zip(got[1], ref[1]):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[0], x.numpy() @ w.numpy() + (b.numpy() if bias else 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 5, 16), (300, 64)])  # the larger one takes ops.expand_to's expand path
def test_rms_norm_gemm_grad_equals_eager(shape):
    x, w = t(*shape), t(shape[-1])
    with ops.override(rms_norm="gemm_grad"):
        got = _values_and_grads(lambda a, b: ops.rms_norm(a, b, 1e-6), x, w)
    with ops.override(rms_norm="eager"):
        ref = _values_and_grads(lambda a, b: ops.rms_norm(a, b, 1e-6), x, w)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6, atol=1e-6)
    for g, r in zip(got[1], ref[1]):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


needs_cpu_kernels = pytest.mark.skipif(not cpu_ext.available(), reason=f"CPU kernels: {cpu_ext.status()}")


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="no C++ compiler on this machine")
@pytest.mark.skipif(ops.device_kind() != "cpu", reason="the CPU kernels are built for CPU runs only")
@pytest.mark.skipif(os.environ.get("PADDLEMIX_R1_CPU_KERNELS", "1") == "0",
                    reason="CPU kernels switched off by PADDLEMIX_R1_CPU_KERNELS=0")
def test_cpu_kernels_build_here():
    """With a C++ compiler the kernels must build (a failure would otherwise only show as slowness)."""
    assert cpu_ext.available(), cpu_ext.status()
    assert cpu_ext.build_key() in cpu_ext.status()


@needs_cpu_kernels
@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 9, 33), (4, 64, 1024), (1, 1)])  # (4, 64, 1024): the threaded path
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cpu_kernel_equals_eager(shape, dtype, monkeypatch):
    monkeypatch.setitem(cpu_ext.MIN_NUMEL, "softmax", 0)  # the kernel on every shape, not only large ones
    x = paddle.to_tensor((rng.standard_normal(shape) * 4).astype(dtype))
    x[..., 0] = -1e30  # a masked key, as the attention masks write them
    if shape[-1] > 2:
        x[..., 1] = float("-inf")  # a token removed by top-k / top-p
    up = paddle.to_tensor(rng.standard_normal(shape).astype(dtype))
    res = {}
    for impl in ("cpu_kernel", "eager"):
        xi = x.detach()
        xi.stop_gradient = False
        with ops.override(softmax=impl):
            y = ops.softmax(xi)
        (dx,) = paddle.grad(y, [xi], up)
        res[impl] = (y.numpy(), dx.numpy())
    tol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(res["cpu_kernel"][0], res["eager"][0], rtol=tol * 10, atol=tol)
    np.testing.assert_allclose(res["cpu_kernel"][1], res["eager"][1], rtol=tol * 10, atol=tol * 10)
    xs = x.numpy().astype("float64")
    e = np.exp(xs - xs.max(-1, keepdims=True))
    np.testing.assert_allclose(res["cpu_kernel"][0], e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


@needs_cpu_kernels
def test_softmax_cpu_kernel_other_axis_and_non_contiguous_input(monkeypatch):
    monkeypatch.setitem(cpu_ext.MIN_NUMEL, "softmax", 0)
    x = t(5, 6, 7)
    xs = x.numpy().astype("float64")
    e = np.exp(xs - xs.max(1, keepdims=True))
    with ops.override(softmax="cpu_kernel"):
        # not the last axis: the op must normalise over axis 1 (the kernel covers the last axis only)
        np.testing.assert_allclose(ops.softmax(x, axis=1).numpy(), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
        xt = x.transpose([0, 2, 1])  # (5, 7, 6)
        np.testing.assert_allclose(ops.softmax(xt).numpy(), paddle.nn.functional.softmax(xt, -1).numpy(), atol=1e-6)


@needs_cpu_kernels
@pytest.mark.parametrize("shape", [(3, 7), (2, 70, 352), (1,)])  # (2, 70, 352): the threaded path
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_swiglu_and_quick_gelu_cpu_kernels_equal_eager(shape, dtype, monkeypatch):
    monkeypatch.setattr(cpu_ext, "MIN_NUMEL", {"swiglu": 0, "quick_gelu": 0})
    gate = paddle.to_tensor((rng.standard_normal(shape) * 6).astype(dtype))  # into both tails of the sigmoid
    up = paddle.to_tensor(rng.standard_normal(shape).astype(dtype))
    res = {}
    for impl in ("cpu_kernel", "eager"):
        with ops.override(swiglu=impl, quick_gelu=impl):
            res[impl] = (_values_and_grads(ops.swiglu, gate.detach(), up.detach()),
                         _values_and_grads(ops.quick_gelu, gate.detach()))
    tol = 1e-6 if dtype == "float32" else 1e-12
    for got, ref in zip(res["cpu_kernel"], res["eager"]):
        np.testing.assert_allclose(got[0], ref[0], rtol=tol * 10, atol=tol)
        for g, r in zip(got[1], ref[1]):
            np.testing.assert_allclose(g, r, rtol=tol * 10, atol=tol * 10)
    x = gate.numpy().astype("float64")
    np.testing.assert_allclose(res["cpu_kernel"][1][0], x / (1 + np.exp(-1.702 * x)), rtol=1e-5, atol=1e-6)


@needs_cpu_kernels
@pytest.mark.parametrize("shape", [(3, 16), (2, 300, 64), (1024, 256)])  # the latter two: threaded paths
def test_layer_norm_cpu_kernel_equals_eager(shape, monkeypatch):
    monkeypatch.setitem(cpu_ext.MIN_NUMEL, "layer_norm", 0)
    x = paddle.to_tensor((rng.standard_normal(shape) * 3 + 1).astype("float32"))
    w, b = (paddle.to_tensor(rng.standard_normal(shape[-1]).astype("float32")) for _ in range(2))
    res = {}
    for impl in ("cpu_kernel", "eager"):
        with ops.override(layer_norm=impl):
            res[impl] = _values_and_grads(lambda a, c, d: ops.layer_norm(a, c, d, 1e-6), x.detach(), w.detach(), b.detach())
    np.testing.assert_allclose(res["cpu_kernel"][0], res["eager"][0], rtol=1e-5, atol=1e-5)
    for got, ref in zip(res["cpu_kernel"][1], res["eager"][1]):  # dx, dw (a sum over rows), db
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    xs = x.numpy().astype("float64")
    xh = (xs - xs.mean(-1, keepdims=True)) / np.sqrt(xs.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(res["cpu_kernel"][0], xh * w.numpy() + b.numpy(), rtol=1e-5, atol=1e-5)


@needs_cpu_kernels
@pytest.mark.parametrize("shape", [(3, 16), (2, 300, 64), (342, 512)])  # the latter two: threaded paths
def test_rms_norm_cpu_kernel_equals_eager(shape, monkeypatch):
    monkeypatch.setitem(cpu_ext.MIN_NUMEL, "rms_norm", 0)
    x, w = t(*shape), t(shape[-1])
    res = {}
    for impl in ("cpu_kernel", "eager"):
        with ops.override(rms_norm=impl):
            res[impl] = _values_and_grads(lambda a, c: ops.rms_norm(a, c, 1e-6), x.detach(), w.detach())
    np.testing.assert_allclose(res["cpu_kernel"][0], res["eager"][0], rtol=1e-5, atol=1e-6)
    for got, ref in zip(res["cpu_kernel"][1], res["eager"][1]):  # dx, dw (a sum over rows)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.slow
def test_cpu_kernels_off_switch_and_failed_build_fall_back_to_eager_with_reason(tmp_path, monkeypatch, request):
    """PADDLEMIX_R1_CPU_KERNELS=0, or a build that fails, leaves softmax on its eager reference; a failed
    build warns once and ``status()`` says why."""
    request.addfinalizer(dispatch.reset)  # even if an assert fails: later tests choose again, unpatched
    monkeypatch.setattr(cpu_ext, "_module", None)
    monkeypatch.setattr(cpu_ext, "_status", "not loaded")
    monkeypatch.setenv("PADDLEMIX_R1_CPU_KERNELS", "0")
    dispatch.reset()
    assert not cpu_ext.available() and "disabled" in cpu_ext.status()
    if ops.device_kind() == "cpu":
        assert ops.implementation("softmax") == "eager"
    monkeypatch.setattr(cpu_ext, "_status", "not loaded")
    monkeypatch.setenv("PADDLEMIX_R1_CPU_KERNELS", "1")
    monkeypatch.setenv("PADDLEMIX_R1_EXT_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_ext, "SOURCE", str(tmp_path / "broken.cc"))
    (tmp_path / "broken.cc").write_text("this is not C++\n")
    with pytest.warns(RuntimeWarning, match="CPU kernels unavailable"):
        assert cpu_ext.module() is None
    assert "build failed" in cpu_ext.status()
    with pytest.raises(RuntimeError, match="unavailable"), ops.override(softmax="cpu_kernel"):
        ops.softmax(t(300, 300))  # above MIN_NUMEL: smaller inputs take the eager path anyway


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="no C++ compiler on this machine")
def test_cpu_kernels_without_mkl_build_all_but_the_vision_attention(tmp_path):
    """A Paddle build that ships no libmklml_intel.so still gets the other kernels; the vision attention
    then stays eager and ``status()`` says so. (In a subprocess: a process can load only one library
    that registers these operator names.)"""
    script = (
        "from paddlemix_r1 import ops\n"
        "from paddlemix_r1.ops import cpu_ext\n"
        "cpu_ext._mkl_library = lambda: None\n"
        "assert cpu_ext.provides('softmax') and not cpu_ext.provides('vision_attention'), cpu_ext.status()\n"
        "assert 'vision_attention and grouped_decode_attention stay eager' in cpu_ext.status(), cpu_ext.status()\n"
        "assert ops.implementation('vision_attention') == 'eager'\n"
        "assert ops.implementation('grouped_decode_attention') == 'eager'\n"
        "assert ops.implementation('softmax') == 'cpu_kernel'\n"
    )
    env = {**os.environ, "PADDLEMIX_R1_CPU_KERNELS": "1", "PADDLEMIX_R1_EXT_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("b,g,nh,nkv", [(1, 4, 4, 2), (2, 3, 2, 1), (2, 1, 4, 4)])
def test_grouped_decode_attention_equals_attention_over_repeated_prompt(b, g, nh, nkv):
    hd, length, slots = 8, 7, 5
    q, kp, vp = t(b * g, 1, nh, hd), t(nkv, b, length, hd), t(nkv, b, length, hd)
    kn, vn = t(nkv, b * g, slots, hd), t(nkv, b * g, slots, hd)
    pad = np.ones((b, length), "float32")
    pad[-1, :2] = 0  # left padding in the last prompt
    written = 3  # slots 0..2 hold generated tokens, 3..4 not yet
    keys = np.concatenate([pad, np.tile((np.arange(slots) < written).astype("float32"), (b, 1))], axis=1)  # (B, K)
    mask = paddle.to_tensor(np.repeat((keys - 1.0) * 1e30, g, axis=0).reshape(b * g, 1, length + slots))
    got = ops.grouped_decode_attention(q, kp, vp, kn, vn, mask, 0.3).numpy()
    k_full = paddle.concat([paddle.repeat_interleave(kp, g, axis=1), kn], axis=2)  # (nkv, N, K, hd)
    v_full = paddle.concat([paddle.repeat_interleave(vp, g, axis=1), vn], axis=2)
    ref = ops.attention(q, k_full, v_full, mask.unsqueeze(1), 0.3).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def _grouped_decode_reference(q, kp, vp, kn, vn, mask, scale):
    """float64 numpy: each row's queries against its prompt's keys and its own slots, softmax, values."""
    n, _, nh, hd = q.shape
    nkv, b, length, _ = kp.shape
    g, rows = nh // nkv, n // b
    out = np.zeros((n, 1, nh, hd))
    for row in range(n):
        for head in range(nh):
            h = head // g
            keys = np.concatenate([kp[h, row // rows], kn[h, row]])  # (L + T, hd)
            values = np.concatenate([vp[h, row // rows], vn[h, row]])
            m = mask[row, 0] if mask.ndim == 3 else mask[h, row, head % g]
            s = keys @ (q[row, 0, head] * scale) + m
            p = np.exp(s - s.max())
            out[row, 0, head] = (p / p.sum()) @ values
    return out


@needs_cpu_kernels
@pytest.mark.parametrize("b,g,nh,nkv,hd,length,slots,written,per_head,dtype", [
    (1, 1, 2, 1, 4, 3, 2, 1, False, "float32"),
    (2, 8, 16, 8, 16, 85, 64, 30, True, "float32"),   # the rollout benchmark's step
    (2, 3, 4, 2, 32, 40, 16, 16, False, "float32"),   # every slot written
    (3, 2, 8, 2, 24, 9, 7, 0, True, "float64"),       # no slot written yet: prompt keys only
    (2, 4, 16, 2, 128, 50, 33, 5, True, "float32"),   # Qwen2.5-VL-3B's head layout
])
def test_grouped_decode_attention_cpu_kernel_equals_float64_reference_and_eager(
        b, g, nh, nkv, hd, length, slots, written, per_head, dtype):
    """The compiled step (closed slots skipped, GEMMs against the prompt) against float64 numpy and the eager
    op; left padding in one prompt, a fully padded (pad) row, both mask layouts."""
    from paddlemix_r1.ops.attention import grouped_decode_attention_cpu_kernel, grouped_decode_attention_eager

    r = np.random.default_rng(hd + length)
    n = b * g
    q, kp, vp = r.standard_normal((n, 1, nh, hd)), r.standard_normal((nkv, b, length, hd)), r.standard_normal(
        (nkv, b, length, hd))
    kn, vn = r.standard_normal((nkv, n, slots, hd)), r.standard_normal((nkv, n, slots, hd))
    mask = np.zeros((n, 1, length + slots))
    mask[:, :, length + written:] = -1e30
    mask[-g:, :, :2] = -1e30  # the last prompt is left-padded
    if written == 0:
        mask[0] = -1e30  # a pad row: every key closed (the eager path's uniform-ish answer is kept)
    if per_head:
        mask = np.broadcast_to(mask[None, :, :, :], (nkv, n, nh // nkv, length + slots)).copy()
    args = [paddle.to_tensor(a.astype(dtype)) for a in (q, kp, vp, kn, vn, mask)]
    with paddle.no_grad():
        got = grouped_decode_attention_cpu_kernel(*args, 0.25).numpy()  # 0.25: the op's scale attribute is fp32
        eager = grouped_decode_attention_eager(*args, 0.25).numpy()
    tol = 1e-5 if dtype == "float32" else 1e-12
    live = slice(1, None) if written == 0 else slice(None)  # the pad row: compared with eager only
    np.testing.assert_allclose(got[live], _grouped_decode_reference(q, kp, vp, kn, vn, mask, 0.25)[live],
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-5)  # eager's softmax is fp32 for fp64 inputs


@needs_cpu_kernels
def test_grouped_decode_attention_cpu_kernel_leaves_gradients_to_eager():
    """No backward is compiled: with a gradient wanted the eager path runs, and the gradient flows."""
    from paddlemix_r1.ops.attention import grouped_decode_attention_cpu_kernel

    q = t(4, 1, 2, 8)
    q.stop_gradient = False
    kp, vp, kn, vn = t(1, 2, 3, 8), t(1, 2, 3, 8), t(1, 4, 2, 8), t(1, 4, 2, 8)
    out = grouped_decode_attention_cpu_kernel(q, kp, vp, kn, vn, paddle.zeros([4, 1, 5]), 1.0)
    out.sum().backward()
    assert q.grad is not None and float(q.grad.abs().sum()) > 0


@pytest.mark.parametrize("shape", [(3, 5, 16), (300, 64)])
def test_layer_norm_gemm_grad_equals_eager(shape):
    x, w, b = t(*shape), t(shape[-1]), t(shape[-1])
    with ops.override(layer_norm="gemm_grad"):
        got = _values_and_grads(lambda *a: ops.layer_norm(*a, 1e-6), x, w, b)
    with ops.override(layer_norm="eager"):
        ref = _values_and_grads(lambda *a: ops.layer_norm(*a, 1e-6), x, w, b)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6, atol=1e-6)
    for g, r in zip(got[1], ref[1]):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_malloc_keeps_large_blocks_in_the_heap():
    """Paddle's CPU tensors come from glibc malloc; the start-up raises the mmap threshold so that
    large activations reuse freed heap memory instead of page-faulting fresh mmap pages."""
    import ctypes
    import ctypes.util
    import os
    import sys

    from paddlemix_r1 import _runtime

    if not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None:
        pytest.skip("glibc malloc tunables are Linux-only")
    if any(k in os.environ for k in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        pytest.skip("malloc tuned by the environment: left to the user")
    assert _runtime.configure_malloc() is True
    os.environ["PADDLEMIX_R1_MALLOC"] = "0"
    try:
        assert _runtime.configure_malloc() is False
    finally:
        del os.environ["PADDLEMIX_R1_MALLOC"]


@pytest.mark.parametrize("impl", ["eager", "fused"])
def test_swiglu_packed(impl):
    x = t(3, 2, 16)
    with ops.override(swiglu=impl):
        got = ops.swiglu_packed(x).numpy()
    g, u = x.numpy()[..., :8], x.numpy()[..., 8:]
    np.testing.assert_allclose(got, g / (1 + np.exp(-g)) * u, atol=1e-6)


def test_override_pins_and_restores():
    before = ops.implementation("swiglu")
    with ops.override(swiglu="fused"):
        assert ops.implementation("swiglu") == "fused"
        g, u = t(4, 8), t(4, 8)
        np.testing.assert_allclose(ops.swiglu(g, u).numpy(), (paddle.nn.functional.silu(g) * u).numpy(), atol=1e-6)
    assert ops.implementation("swiglu") == before
    with pytest.raises(KeyError, match="no implementation"):
        with ops.override(swiglu="nope"):
            pass


def test_rms_norm_formula():
    x, w = t(3, 5, 16), t(16)
    ref = w.numpy() * x.numpy() / np.sqrt((x.numpy() ** 2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(ops.rms_norm(x, w, 1e-6).numpy(), ref, rtol=1e-5, atol=1e-6)


def test_rotate_half_matrix_is_exact():
    x = t(2, 3, 4, 16)
    x1, x2 = x.numpy()[..., :8], x.numpy()[..., 8:]
    np.testing.assert_array_equal(paddle.matmul(x, rotate_half_matrix(16)).numpy(), np.concatenate([-x2, x1], -1))


def test_rotary_formula():
    q, k, cos, sin = t(2, 5, 4, 16), t(2, 5, 2, 16), t(2, 5, 16), t(2, 5, 16)

    def rot(x):
        return np.concatenate([-x[..., 8:], x[..., :8]], -1)

    qo, ko = ops.apply_rotary(q, k, cos, sin)
    c, s = cos.numpy()[:, :, None], sin.numpy()[:, :, None]
    np.testing.assert_allclose(qo.numpy(), q.numpy() * c + rot(q.numpy()) * s, atol=1e-6)
    np.testing.assert_allclose(ko.numpy(), k.numpy() * c + rot(k.numpy()) * s, atol=1e-6)


def _naive_attention(q, k, v, allowed):
    """q (B, Lq, nh, hd), k/v (B, nkv, Lk, hd) numpy, allowed (B, Lq, Lk) bool."""
    g = q.shape[2] // k.shape[1]
    k = np.repeat(k, g, axis=1)
    v = np.repeat(v, g, axis=1)
    s = np.einsum("blhd,bhkd->bhlk", q, k) / np.sqrt(q.shape[-1])
    s = np.where(allowed[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhlk,bhkd->blhd", p, v)


def test_causal_padding_attention_gqa():
    b, lq, lk, nh, nkv, hd = 2, 3, 7, 4, 2, 8
    q, k, v = t(b, lq, nh, hd), t(nkv, b, lk, hd), t(nkv, b, lk, hd)  # keys head-first
    am = paddle.to_tensor(np.array([[0, 0, 1, 1, 1, 1, 1], [1] * 7]))
    mask = ops.causal_padding_mask(am, lq)
    out = ops.attention(q, k, v, mask, hd**-0.5)
    k, v = k.transpose([1, 0, 2, 3]), v.transpose([1, 0, 2, 3])  # (B, nkv, Lk, hd) for the naive formula
    qpos = np.arange(lk - lq, lk)[:, None]
    allowed = (np.arange(lk)[None] <= qpos)[None] & am.numpy().astype(bool)[:, None, :]
    np.testing.assert_allclose(out.numpy(), _naive_attention(q.numpy(), k.numpy(), v.numpy(), allowed), atol=1e-5)


def test_varlen_attention_is_block_diagonal():
    cu = np.array([0, 5, 6, 14])
    n, nh, hd = 14, 2, 8
    q, k, v = t(n, nh, hd), t(n, nh, hd), t(n, nh, hd)
    out = ops.varlen_attention(q, k, v, cu, hd**-0.5).numpy()
    seg = np.repeat(np.arange(3), np.diff(cu))
    allowed = (seg[:, None] == seg[None, :])[None]
    ref = _naive_attention(q.numpy()[None], k.numpy().transpose(1, 0, 2)[None], v.numpy().transpose(1, 0, 2)[None],
                           allowed)[0]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def _vision_attention_formula(qkv: np.ndarray, cos: np.ndarray, sin: np.ndarray, cu: np.ndarray, scale: float):
    """Rotary (rotate_half) on q and k, then softmax attention within each segment, in float64."""
    x = qkv.astype("float64")
    c, s = cos[0, :, 0].astype("float64")[:, None], sin[0, :, 0].astype("float64")[:, None]  # (N, 1, hd)
    half = x.shape[-1] // 2

    def rot(a):  # (N, nh, hd)
        return a * c + np.concatenate([-a[..., half:], a[..., :half]], axis=-1) * s

    q, k, v = rot(x[:, 0]), rot(x[:, 1]), x[:, 2]
    out = np.zeros_like(v)
    for a, b in zip(cu[:-1], cu[1:]):
        scores = np.einsum("ihd,jhd->hij", q[a:b], k[a:b]) * scale
        p = np.exp(scores - scores.max(-1, keepdims=True))
        out[a:b] = np.einsum("hij,jhd->ihd", p / p.sum(-1, keepdims=True), v[a:b])
    return out


@needs_cpu_kernels
@pytest.mark.parametrize("n,nh,hd,cu", [
    (40, 2, 16, [0, 40]),  # one image
    (48, 2, 8, [0, 16, 32, 48]),  # equal windows
    (41, 3, 16, [0, 1, 17, 41]),  # unequal segments, one of a single token
    (600, 2, 64, [0, 600]),  # threaded rotary and softmax; recomputed: 3 query blocks accumulate into dK, dV
])
@pytest.mark.parametrize("stored", [True, False], ids=["stored-probs", "recomputed-probs"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vision_attention_cpu_kernel_equals_eager_and_formula(n, nh, hd, cu, stored, dtype, monkeypatch):
    """The compiled rotary + block-diagonal attention: values against the float64 formula, gradients of
    qkv against the eager path (unbind, rotary, varlen attention), with the probabilities kept for the
    backward or recomputed there from the row log-sum-exp."""
    from paddlemix_r1.models.vision_common import vision_rotary_tables

    monkeypatch.setitem(cpu_ext.MIN_NUMEL, "vision_attention", 0)
    monkeypatch.setattr(cpu_ext, "MAX_STORED_PROBS", cpu_ext.MAX_STORED_PROBS if stored else 0)
    cu = np.array(cu)
    cos, sin = vision_rotary_tables(rng.integers(0, 40, (n, 2)), ops.inv_freq(hd // 2, 10000.0), nh)  # (1, N, 2 nh, hd)
    cos, sin = cos.astype(dtype), sin.astype(dtype)
    qkv = paddle.to_tensor(rng.standard_normal((n, 3, nh, hd)).astype(dtype))
    res = {}
    for impl in ("cpu_kernel", "eager"):
        with ops.override(vision_attention=impl):
            res[impl] = _values_and_grads(lambda x: ops.vision_attention(x, cos, sin, cu, hd**-0.5), qkv.detach())
    # the kernel takes the scale as an fp32 attribute
    ref = _vision_attention_formula(qkv.numpy(), cos.numpy(), sin.numpy(), cu, float(np.float32(hd**-0.5)))
    np.testing.assert_allclose(res["cpu_kernel"][0], ref, rtol=1e-5 if dtype == "float32" else 1e-10, atol=1e-6
                               if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(res["cpu_kernel"][0], res["eager"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res["cpu_kernel"][1][0], res["eager"][1][0], rtol=1e-4, atol=1e-5)  # d qkv, q, k and v


@needs_cpu_kernels
def test_vision_attention_cpu_kernel_rejects_bad_segments(monkeypatch):
    monkeypatch.setitem(cpu_ext.MIN_NUMEL, "vision_attention", 0)
    cos, sin = (paddle.ones([1, 10, 4, 8]), paddle.zeros([1, 10, 4, 8]))
    with ops.override(vision_attention="cpu_kernel"):
        for cu in ([0, 4, 9], [0, 6, 6, 10]):  # not ending at N; an empty segment
            with pytest.raises(Exception, match="cu_seqlens"):
                ops.vision_attention(t(10, 3, 2, 8), cos, sin, np.array(cu), 0.3)


def test_log_softmax_matches_formula():
    x = t(4, 300) * 5
    ref = x.numpy() - np.log(np.exp(x.numpy() - x.numpy().max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - x.numpy().max(-1, keepdims=True)
    np.testing.assert_allclose(ops.log_softmax(x).numpy(), ref, atol=1e-5)


def test_registry_has_eager_reference_for_every_fused_kernel():
    for op, impls in dispatch._REGISTRY.items():
        assert "eager" in impls, f"{op} has no eager reference"


@gpu
@pytest.mark.parametrize("op", ["rms_norm", "rotary", "attention", "varlen_attention", "swiglu", "log_softmax"])
def test_fused_matches_eager_on_gpu(op):
    paddle.set_device("gpu")
    dispatch.reset()
    args = {
        "rms_norm": lambda: (t(4, 64), t(64), 1e-6),
        "rotary": lambda: (t(2, 5, 4, 16), t(2, 5, 2, 16), t(2, 5, 16), t(2, 5, 16)),
        "attention": lambda: (t(2, 6, 4, 16), t(2, 2, 6, 16), t(2, 2, 6, 16), None, 0.25),  # k, v (nkv, B, L, hd)
        "varlen_attention": lambda: (t(14, 2, 16), t(14, 2, 16), t(14, 2, 16), np.array([0, 5, 14]), 0.25),
        "swiglu": lambda: (t(4, 32), t(4, 32)),
        "log_softmax": lambda: (t(4, 100), -1),
    }[op]()
    impls = dispatch._REGISTRY[op]
    ref, got = impls["eager"](*args), impls["fused"](*args)
    ref = ref if isinstance(ref, (tuple, list)) else [ref]
    got = got if isinstance(got, (tuple, list)) else [got]
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g.astype("float32").numpy(), r.astype("float32").numpy(), atol=2e-3)


def test_varlen_attention_equal_segments_fast_path():
    cu = np.array([0, 4, 8, 12])
    q, k, v = t(12, 2, 8), t(12, 2, 8), t(12, 2, 8)
    out = ops.varlen_attention(q, k, v, cu, 8**-0.5).numpy()
    seg = np.repeat(np.arange(3), 4)
    allowed = (seg[:, None] == seg[None, :])[None]
    ref = _naive_attention(q.numpy()[None], k.numpy().transpose(1, 0, 2)[None], v.numpy().transpose(1, 0, 2)[None],
                           allowed)[0]
    np.testing.assert_allclose(out, ref, atol=1e-5)


@needs_cpu_kernels
def test_vision_attention_cpu_kernel_keeps_no_probabilities_without_a_backward(monkeypatch):
    """Under no_grad (rollouts, evaluation) the kernel keeps no (heads, N, N) probabilities; the output
    is the same as with them kept."""
    from paddlemix_r1.models.vision_common import vision_rotary_tables

    monkeypatch.setitem(cpu_ext.MIN_NUMEL, "vision_attention", 0)
    n, nh, hd = 64, 2, 16
    cos, sin = vision_rotary_tables(rng.integers(0, 8, (n, 2)), ops.inv_freq(hd // 2, 10000.0), nh)
    qkv = t(n, 3, nh, hd)
    cu = paddle.to_tensor(np.array([0, 24, 64]))
    kept = cpu_ext.kernels().vision_attention_cpu(qkv, cos, sin, cu, 0.25, cpu_ext.MAX_STORED_PROBS)
    assert kept[4].shape == [nh * (24**2 + 40**2)]
    calls = []
    real = cpu_ext.kernels().vision_attention_cpu
    monkeypatch.setattr(cpu_ext.kernels(), "vision_attention_cpu", lambda *a: calls.append(a[-1]) or real(*a))
    with paddle.no_grad(), ops.override(vision_attention="cpu_kernel"):
        out = ops.vision_attention(qkv, cos, sin, np.array([0, 24, 64]), 0.25)
    assert calls == [0]
    np.testing.assert_allclose(out.numpy(), kept[0].numpy(), rtol=1e-6, atol=1e-7)
