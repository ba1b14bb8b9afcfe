"""ops.categorical: the sampling step's draw (inverse CDF at given uniforms) and log-probability. The compiled CPU
kernel equals the eager reference and a float64 numpy computation; draws follow the distribution."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlemix_r1 import ops
from paddlemix_r1.generation.sampling import sample, top_k_filter
from paddlemix_r1.ops import cpu_ext
from paddlemix_r1.ops.softmax import categorical_cpu_kernel, categorical_eager

needs_kernel = pytest.mark.skipif(not cpu_ext.provides("categorical"), reason=f"CPU kernels: {cpu_ext.status()}")
IMPLS = {"eager": categorical_eager, "cpu_kernel": categorical_cpu_kernel}


def _numpy_reference(logits: np.ndarray, draw: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = draw.astype(np.float64)
    p = np.exp(d - d.max(-1, keepdims=True))
    cdf = np.cumsum(p, -1)
    tokens = np.array([min(int(np.searchsorted(c, ui * c[-1], side="right")), len(c) - 1) for c, ui in zip(cdf, u)])
    x = logits.astype(np.float64)
    lse = x.max(-1) + np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1))
    return tokens, x[np.arange(len(x)), tokens] - lse


@pytest.mark.parametrize("impl", ["eager", pytest.param("cpu_kernel", marks=needs_kernel)])
@pytest.mark.parametrize("vocab", [7, 512, 8192, 151936])
@pytest.mark.parametrize("filtered", [False, True])
def test_categorical_matches_a_float64_reference(impl, vocab, filtered):
    rng = np.random.default_rng(vocab)
    logits = paddle.to_tensor((rng.standard_normal((16, vocab)) * 3).astype("float32"))
    draw = top_k_filter(logits, max(1, vocab // 3)) if filtered else logits  # -inf outside the top k
    u = paddle.to_tensor(rng.random(16).astype("float32"))
    tokens, logp = IMPLS[impl](logits, draw, u)
    want_tokens, want_logp = _numpy_reference(logits.numpy(), draw.numpy(), u.numpy())
    assert tokens.dtype == paddle.int64 and tokens.shape == [16] and logp.shape == [16]
    np.testing.assert_array_equal(tokens.numpy(), want_tokens)
    # the kernel sums in float64; the eager path's fp32 log-softmax over 151936 terms errs by up to ~1e-3
    np.testing.assert_allclose(logp.numpy(), want_logp, atol=1e-5 if impl == "cpu_kernel" else 2e-3)
    if filtered:
        assert np.isfinite(draw.numpy()[np.arange(16), tokens.numpy()]).all()  # never a filtered-out token


@pytest.mark.parametrize("impl", ["eager", pytest.param("cpu_kernel", marks=needs_kernel)])
def test_categorical_draws_follow_the_distribution_and_the_ends_of_u(impl):
    probs = np.array([0.5, 0.0, 0.2, 0.25, 0.05])
    logits = paddle.to_tensor(np.log(np.where(probs > 0, probs, 1e-30))[None].repeat(4000, 0).astype("float32"))
    logits[:, 1] = float("-inf")  # a token that cannot be drawn
    u = paddle.to_tensor(np.random.default_rng(0).random(4000).astype("float32"))
    tokens, _ = IMPLS[impl](logits, logits, u)
    freq = np.bincount(tokens.numpy(), minlength=5) / 4000
    assert freq[1] == 0.0
    np.testing.assert_allclose(freq, probs, atol=0.025)  # ~3.5 standard errors of the largest share
    ends = paddle.to_tensor(np.array([0.0, 1.0 - 1e-7], "float32"))
    first_last, _ = IMPLS[impl](logits[:2], logits[:2], ends)
    assert first_last.numpy().tolist() == [0, 4]


def test_cpu_dispatch_uses_the_kernel_where_it_built():
    assert ops.implementation("categorical") == ("cpu_kernel" if cpu_ext.provides("categorical") else "eager")


def test_sample_is_reproducible_under_a_seed_and_top_k_1_is_greedy():
    logits = paddle.to_tensor(np.random.default_rng(1).standard_normal((8, 300)).astype("float32"))
    paddle.seed(7)
    a = sample(logits, True, temperature=0.8)[0].numpy()
    paddle.seed(7)
    b = sample(logits, True, temperature=0.8)[0].numpy()
    np.testing.assert_array_equal(a, b)
    top1 = sample(logits, True, top_k=1)[0].numpy()
    np.testing.assert_array_equal(top1, logits.numpy().argmax(-1))
    tok, lp = sample(logits, True, temperature=0.8)
    x = logits.numpy().astype(np.float64) / 0.8
    lse = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
    np.testing.assert_allclose(lp.numpy(), x[np.arange(8), tok.numpy()] - lse, atol=1e-5)
