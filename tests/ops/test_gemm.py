"""The GEMM layer (ops/gemm.py): oneDNN's sgemm equals paddle.matmul, ``ops.linear`` routed through it equals
the eager reference in values and gradients, and a machine without the library falls back and says why."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddlemix_r1 import ops
from paddlemix_r1.ops import cpu_ext, gemm
from paddlemix_r1.ops.linear import linear_eager, linear_gemm_grad

needs_onednn = pytest.mark.skipif(not gemm.available(), reason=f"oneDNN GEMM: {gemm.status()}")


def _t(shape, seed, grad=False):
    t = paddle.to_tensor(np.random.default_rng(seed).standard_normal(shape).astype("float32"))
    t.stop_gradient = not grad
    return t


@needs_onednn
@pytest.mark.parametrize("layout", ["NN", "NT", "TN", "TT"])
@pytest.mark.parametrize("m,k,n", [(1, 7, 5), (16, 256, 768), (37, 129, 301), (300, 64, 1)])
def test_onednn_matmul_equals_paddle_matmul(layout, m, k, n):
    ta, tb = layout[0] == "T", layout[1] == "T"
    a = _t((k, m) if ta else (m, k), 0)
    b = _t((n, k) if tb else (k, n), 1)
    got = gemm.onednn_matmul(a, b, ta, tb)
    want = paddle.matmul(a, b, transpose_x=ta, transpose_y=tb)
    assert got.shape == [m, n]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-4)


@needs_onednn
def test_onednn_matmul_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="inner sizes differ"):
        gemm.onednn_matmul(_t((3, 4), 0), _t((5, 6), 1))
    with pytest.raises(ValueError, match="contiguous fp32"):
        gemm.onednn_matmul(_t((3, 4), 0).astype("float64"), _t((4, 6), 1).astype("float64"))
    assert float(gemm.onednn_matmul(_t((3, 0), 0), _t((0, 2), 1)).abs().sum()) == 0.0  # k = 0: zeros


@pytest.mark.parametrize("library", ["mkl", "onednn"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("frozen", ["none", "weight", "x"])
def test_linear_through_each_library_equals_eager_values_and_gradients(monkeypatch, library, bias, frozen):
    if library == "onednn" and not gemm.available():
        pytest.skip(f"oneDNN GEMM: {gemm.status()}")
    monkeypatch.setenv("PADDLEMIX_R1_GEMM", library)
    outs = {}
    for name, fn in (("eager", linear_eager), ("gemm_grad", linear_gemm_grad)):
        x = _t((3, 70, 48), 0, grad=frozen != "x")  # (B, L, in): 210 rows, the "large" class
        w = _t((48, 33), 1, grad=frozen != "weight")  # (in, out)
        b = _t((33,), 2, grad=True) if bias else None
        y = fn(x, w, b)  # (B, L, out)
        (y * _t(y.shape, 3)).sum().backward()
        outs[name] = [y.numpy()] + [t.grad.numpy() for t in (x, w, b) if t is not None and not t.stop_gradient]
        if name == "gemm_grad" and library == "onednn":
            assert gemm.library_for(210, 33, 48) == "onednn"
    assert len(outs["eager"]) == len(outs["gemm_grad"])
    for got, want in zip(outs["gemm_grad"], outs["eager"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_inference_linear_through_onednn_equals_eager(monkeypatch):
    monkeypatch.setenv("PADDLEMIX_R1_GEMM", "onednn")
    x, w, b = _t((16, 1, 64), 0), _t((64, 96), 1), _t((96,), 2)  # a decode step's rows
    with paddle.no_grad():
        np.testing.assert_allclose(ops.linear(x, w, b).numpy(), linear_eager(x, w, b).numpy(), rtol=1e-5, atol=1e-5)


def test_route_names_a_library_for_every_class_and_a_bad_pin_is_refused(monkeypatch):
    assert set(gemm.ROUTE) == {gemm.shape_class(16, 768, 256), gemm.shape_class(512, 151936, 1536),
                               gemm.shape_class(1024, 768, 256)}
    assert {cls: gemm.shape_class(*shape) for cls, shape in gemm.CLASS_EXAMPLES.items()} == {c: c for c in gemm.ROUTE}
    assert set(gemm.ROUTE.values()) <= set(gemm.LIBRARIES)
    monkeypatch.setenv("PADDLEMIX_R1_GEMM", "openblas")
    with pytest.raises(ValueError, match="PADDLEMIX_R1_GEMM"):
        gemm.library_for(16, 16, 16)


def test_without_the_library_every_gemm_uses_mkl_and_status_says_why(monkeypatch):
    monkeypatch.setenv("PADDLEMIX_R1_DNNL_LIBRARY", "/nonexistent/libdnnl.so.3")
    monkeypatch.setenv("PADDLEMIX_R1_GEMM", "onednn")
    try:
        gemm.reload()
        assert not gemm.available()
        assert "unavailable" in gemm.status() and "MKL-ML" in gemm.status()
        assert "oneDNN GEMM: unavailable" in cpu_ext.status()
        assert gemm.library_for(1024, 1024, 1024) == "mkl"
        x, w, b = _t((40, 8), 0, grad=True), _t((8, 6), 1, grad=True), _t((6,), 2, grad=True)
        y = linear_gemm_grad(x, w, b)
        y.sum().backward()
        np.testing.assert_allclose(y.numpy(), linear_eager(x, w, b).numpy(), rtol=1e-6)
        with pytest.raises(RuntimeError, match="unavailable"):
            gemm.onednn_matmul(x.detach(), w.detach())
    finally:
        monkeypatch.delenv("PADDLEMIX_R1_DNNL_LIBRARY")
        gemm.reload()


def _env_without_thread_counts() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def _omp_threads_after_configure(env: dict[str, str]) -> tuple[int, int]:
    """The OpenMP pool's size after configure_runtime(), and after restore_runtime()."""
    code = ("import paddlemix_r1; paddlemix_r1.configure_runtime()\n"
            "from paddlemix_r1 import _runtime\n"
            "a = _runtime.openmp_library().omp_get_max_threads(); paddlemix_r1.restore_runtime()\n"
            "print(a, _runtime.openmp_library().omp_get_max_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    configured, restored = out.stdout.strip().splitlines()[-1].split()
    return int(configured), int(restored)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to tell 1 thread from all")
def test_configure_runtime_sizes_the_openmp_pool_like_mkl_unless_the_user_set_it():
    env = _env_without_thread_counts()
    # Paddle alone shrinks the pool to 1 thread; the compiled kernels and oneDNN run on it
    assert _omp_threads_after_configure({**env, "MKL_NUM_THREADS": "2"}) == (2, 1)
    assert _omp_threads_after_configure({**env, "OMP_NUM_THREADS": "1"}) == (1, 1)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to tell 1 thread from all")
def test_a_model_thread_gets_the_configured_openmp_pool():
    """OpenMP keeps the pool size per thread: a thread started after configure_runtime begins at Paddle's 1;
    configure_thread gives it the main thread's size, and the server's model worker calls it first."""
    code = (
        "import threading, numpy as np, paddlemix_r1\n"
        "paddlemix_r1.configure_runtime()\n"
        "from paddlemix_r1 import _runtime\n"
        "from paddlemix_r1.serve.backend import PreparedPrompt\n"
        "from paddlemix_r1.serve.worker import BatchWorker, SamplingParams\n"
        "omp = _runtime.openmp_library(); seen = []\n"
        "def plain():\n"
        "    seen.append(omp.omp_get_max_threads()); _runtime.configure_thread(); seen.append(omp.omp_get_max_threads())\n"
        "t = threading.Thread(target=plain); t.start(); t.join()\n"
        "worker = BatchWorker(chat_model=None)\n"
        "def fake_generate(jobs):\n"
        "    seen.append(omp.omp_get_max_threads()); raise RuntimeError('no model here')\n"
        "worker._generate = fake_generate\n"
        "prompt = PreparedPrompt(np.zeros(3, np.int64), None, None)\n"
        "future = worker.submit(prompt, SamplingParams(temperature=0.0)); worker.start()\n"
        "try:\n"
        "    future.result(timeout=60)\n"
        "except RuntimeError as e:\n"
        "    assert 'no model here' in str(e), e\n"
        "worker.stop()\n"
        "print(*seen)\n")
    env = _env_without_thread_counts()
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MKL_NUM_THREADS": "2"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip().splitlines()[-1].split() == ["1", "2", "2"]
