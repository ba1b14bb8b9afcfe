"""Chosen-token log-probabilities (and entropies) without a full-vocabulary fp32 log-softmax.

    logp[n] = z[n, index[n]] - logsumexp(z[n, :]),   z = logits / temperature

With V = 151,936 a [B*L, V] fp32 log-softmax is 0.6 MB per row, so the rows are processed in chunks
of ``chunk_size``: per chunk, logits (if computed here) and the fp32 softmax statistics are formed,
reduced to one number per row, and freed. The backward pass is a custom ``PyLayer`` that recomputes
each chunk instead of keeping the fp32 intermediates of all chunks alive for autograd (which is what
plain chunking under autograd would do, and would cost as much as the naive version):

    d logp / d z = onehot(index) - softmax(z),   d z / d logits = 1 / temperature

Two entry points:
- ``selective_log_softmax(logits [..., V], index [...])``: logits already exist (e.g. from a model
  forward). The gradient w.r.t. the logits is [..., V] in the logits' dtype, written chunk by chunk
  into one buffer.
- ``selective_log_softmax_from_hidden(hidden [N, H], weight, index [N])``: the lm_head matmul is
  done per chunk too, so [N, V] logits never exist, not even in the weight's dtype. Gradients flow
  to ``hidden`` and ``weight``.

Precision: the softmax statistics are fp32 (fp64 if the input is fp64), inside
``paddle.amp.auto_cast(enable=False)``. The lm_head matmul of the hidden-state variant runs in the
dtype of ``hidden``/``weight`` as given (bf16 weights on GPU, as in the model's own lm_head, so the
log-probs match the rollout's; fp32 on CPU). Its weight gradient is accumulated over chunks in fp32:
in place with ``addmm_`` for fp32 weights; for bf16 weights each chunk's product is added to an fp32
buffer, which is cast to the weight's dtype once at the end.

Memory of the hidden-state variant, forward + backward: the gradients of hidden and weight, plus a
few [chunk_size, V] fp32 temporaries; nothing grows with N x V.

The references spell log-softmax as ``z - logsumexp(z)``: Paddle 3.3.1's CPU
``F.log_softmax`` takes time quadratic in the reduced length (0.7 s for 4 x 32,000, 70 s for
16 x 151,936; ``F.softmax`` and ``logsumexp`` are linear), so it is unusable at V = 151,936.

Each function has a naive eager ``*_reference`` under the same signature (``chunk_size`` accepted
and ignored) for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterator

import paddle
from paddle.autograd import PyLayer

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "selective_log_softmax",
    "selective_log_softmax_and_entropy_from_hidden",
    "selective_log_softmax_from_hidden",
    "selective_log_softmax_from_hidden_reference",
    "selective_log_softmax_reference",
    "token_entropy",
    "token_entropy_reference",
]

# 512 rows x 151,936 x 4 B = 311 MB per fp32 temporary; a few of them live at once per chunk.
DEFAULT_CHUNK_ROWS = 512


def _row_chunks(num_rows: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, num_rows, chunk_size):
        yield start, min(start + chunk_size, num_rows)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _stat_dtype(x: paddle.Tensor) -> str:
    """fp32 for the softmax statistics; fp64 inputs (gradient checks) keep fp64."""
    return "float64" if x.dtype == paddle.float64 else "float32"


def _scaled_fp32(logits: paddle.Tensor, temperature: float) -> paddle.Tensor:
    z = logits.astype(_stat_dtype(logits))  # (c, V)
    return z / temperature if temperature != 1.0 else z


def _entropy(z: paddle.Tensor, lse: paddle.Tensor) -> paddle.Tensor:
    """-sum(p * log p) per row. Not lse - sum(p * z): that subtracts two numbers of the size of the
    largest logit and loses ~1e-5 absolute in fp32 for peaked rows."""
    logp = z - lse.unsqueeze(-1)  # (c, V)
    p_logp = paddle.exp(logp)  # (c, V)
    p_logp.multiply_(logp)  # (c, V)  in place: one buffer fewer at V = 151,936
    return -p_logp.sum(-1)  # (c,)


def _chunk_forward(
    logits: paddle.Tensor, index: paddle.Tensor, temperature: float, with_entropy: bool
) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor | None]:
    """One chunk of rows: (chosen log-prob, logsumexp, entropy or None), all fp32 [c]."""
    z = _scaled_fp32(logits, temperature)  # (c, V)
    lse = paddle.logsumexp(z, axis=-1)  # (c,)
    chosen = paddle.take_along_axis(z, index.unsqueeze(-1), axis=-1).squeeze(-1)  # (c,)
    entropy = None
    if with_entropy:
        entropy = _entropy(z, lse)  # (c,)
    return chosen - lse, lse, entropy


def _chunk_grad_logits(
    logits: paddle.Tensor, index: paddle.Tensor, lse: paddle.Tensor, grad: paddle.Tensor, temperature: float
) -> paddle.Tensor:
    """d(sum_n grad[n] * logp[n]) / d logits for one chunk, fp32 [c, V]: (onehot - softmax) * g / T.

    One [c, V] buffer besides the logits: the out-of-place division creates it (even for T = 1;
    ``logits`` may be a view of a tensor autograd still needs, so it is never modified), and every
    later step updates it in place.
    """
    stat_dtype = _stat_dtype(logits)
    g = (grad.astype(stat_dtype) / temperature).unsqueeze(-1)  # (c, 1)
    dz = logits.astype(stat_dtype) / temperature  # (c, V)  new buffer; x / 1.0 == x bitwise
    dz.subtract_(lse.unsqueeze(-1))  # (c, V)  log-softmax
    dz.exp_()  # (c, V)  softmax
    dz.multiply_(-g)  # (c, V)  -softmax * g / T
    dz.put_along_axis_(index.unsqueeze(-1), g, axis=-1, reduce="add")  # (c, V)  + onehot * g / T
    return dz


class _SelectiveLogSoftmax(PyLayer):
    @staticmethod
    def forward(ctx, logits, index, temperature, chunk_size):  # logits (N, V), index (N,)
        with paddle.amp.auto_cast(enable=False):
            logps, lses = [], []
            for s, e in _row_chunks(logits.shape[0], chunk_size):
                logp, lse, _ = _chunk_forward(logits[s:e], index[s:e], temperature, with_entropy=False)
                logps.append(logp)
                lses.append(lse)
            logp = paddle.concat(logps)  # (N,)
            lse = paddle.concat(lses)  # (N,)
        ctx.save_for_backward(logits, index, lse)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        return logp

    @staticmethod
    def backward(ctx, grad_logp):  # grad_logp (N,)
        logits, index, lse = ctx.saved_tensor()
        with paddle.amp.auto_cast(enable=False):
            grad_logits = paddle.empty_like(logits)  # (N, V) one buffer, filled chunk by chunk
            for s, e in _row_chunks(logits.shape[0], ctx.chunk_size):
                dz = _chunk_grad_logits(logits[s:e], index[s:e], lse[s:e], grad_logp[s:e], ctx.temperature)
                grad_logits[s:e] = dz.astype(logits.dtype)  # (c, V)
        return grad_logits, None


def _flatten(logits: paddle.Tensor, index: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    if list(logits.shape[:-1]) != list(index.shape):
        raise ValueError(f"index shape {list(index.shape)} must equal logits.shape[:-1] {list(logits.shape[:-1])}")
    return logits.reshape([-1, logits.shape[-1]]), index.reshape([-1]).astype("int64")


def selective_log_softmax(
    logits: paddle.Tensor, index: paddle.Tensor, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_ROWS
) -> paddle.Tensor:
    """log_softmax(logits / temperature)[..., index], chunked over rows; fp32 [...] like ``index``.

    Args:
        logits: [..., V] any float dtype; may require grad.
        index: [...] integer token ids in [0, V).
        temperature: the sampling temperature (> 0) the tokens were drawn with.
        chunk_size: rows (products of the leading dims) per chunk.
    """
    _check_temperature(temperature)
    flat_logits, flat_index = _flatten(logits, index)  # (N, V), (N,)
    if flat_logits.shape[0] == 0:
        return paddle.zeros(index.shape, dtype=_stat_dtype(logits))
    logp = _SelectiveLogSoftmax.apply(flat_logits, flat_index, float(temperature), int(chunk_size))  # (N,)
    return logp.reshape(index.shape)


def selective_log_softmax_reference(
    logits: paddle.Tensor, index: paddle.Tensor, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_ROWS
) -> paddle.Tensor:
    """Naive ``selective_log_softmax``: a full fp32 log-softmax, then a gather. ``chunk_size`` is ignored."""
    _check_temperature(temperature)
    with paddle.amp.auto_cast(enable=False):
        z = _scaled_fp32(logits, temperature)  # (..., V)
        logps = z - paddle.logsumexp(z, axis=-1, keepdim=True)  # (..., V)  not F.log_softmax: see module doc
        return paddle.take_along_axis(logps, index.astype("int64").unsqueeze(-1), axis=-1).squeeze(-1)  # (...)


def _hidden_logits(hidden: paddle.Tensor, weight: paddle.Tensor, transpose_weight: bool) -> paddle.Tensor:
    # weight [H, V] (Paddle nn.Linear layout): hidden @ weight; [V, H] (embedding table): hidden @ weight.T
    return paddle.matmul(hidden, weight, transpose_y=transpose_weight)  # (c, V)


class _HiddenSelectiveLogSoftmax(PyLayer):
    @staticmethod
    def forward(ctx, hidden, weight, index, temperature, chunk_size, transpose_weight, with_entropy):
        # hidden (N, H), weight (H, V) or (V, H), index (N,)
        with paddle.amp.auto_cast(enable=False):
            logps, lses, entropies = [], [], []
            for s, e in _row_chunks(hidden.shape[0], chunk_size):
                logits = _hidden_logits(hidden[s:e], weight, transpose_weight)  # (c, V)
                logp, lse, entropy = _chunk_forward(logits, index[s:e], temperature, with_entropy)
                logps.append(logp)
                lses.append(lse)
                entropies.append(entropy)
            logp = paddle.concat(logps)  # (N,)
            lse = paddle.concat(lses)  # (N,)
        ctx.save_for_backward(hidden, weight, index, lse)
        ctx.temperature, ctx.chunk_size, ctx.transpose_weight = temperature, chunk_size, transpose_weight
        ctx.needs_grad = (not hidden.stop_gradient, not weight.stop_gradient)
        if not with_entropy:
            return logp
        entropy = paddle.concat(entropies)  # (N,)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, *unused_grad_entropy):  # grad_logp (N,)
        hidden, weight, index, lse = ctx.saved_tensor()
        need_hidden, need_weight = ctx.needs_grad
        t = ctx.transpose_weight
        with paddle.amp.auto_cast(enable=False):
            grad_hidden = paddle.empty_like(hidden) if need_hidden else None  # (N, H)
            # fp32 accumulator: summing bf16 partial products over chunks would lose low bits.
            acc_dtype = _stat_dtype(weight)
            grad_weight = paddle.zeros(weight.shape, dtype=acc_dtype) if need_weight else None  # like weight
            for s, e in _row_chunks(hidden.shape[0], ctx.chunk_size):
                h = hidden[s:e]  # (c, H)
                logits = _hidden_logits(h, weight, t)  # (c, V)
                dlogits = _chunk_grad_logits(logits, index[s:e], lse[s:e], grad_logp[s:e], ctx.temperature)
                dlogits = dlogits.astype(weight.dtype)  # (c, V)
                if need_hidden:
                    # [H, V]: dlogits @ weight.T; [V, H]: dlogits @ weight
                    grad_hidden[s:e] = paddle.matmul(dlogits, weight, transpose_y=not t)  # (c, H)
                if need_weight:
                    # [H, V]: += h.T @ dlogits; [V, H]: += dlogits.T @ h
                    x, y = (dlogits.T, h) if t else (h.T, dlogits)  # transposed copies of chunk size
                    if weight.dtype == grad_weight.dtype:
                        paddle.addmm_(grad_weight, x, y)  # in place: no weight-sized temporary per chunk
                    else:
                        grad_weight.add_(paddle.matmul(x, y).astype(acc_dtype))
            if need_weight:
                grad_weight = grad_weight.astype(weight.dtype)
        return grad_hidden, grad_weight, None


def _check_hidden(hidden: paddle.Tensor, weight: paddle.Tensor, index: paddle.Tensor, transpose_weight: bool) -> None:
    if hidden.ndim != 2 or weight.ndim != 2 or index.ndim != 1:
        raise ValueError(
            f"expected hidden [N, H], weight 2-D, index [N]; got {list(hidden.shape)}, "
            f"{list(weight.shape)}, {list(index.shape)}"
        )
    h_dim = weight.shape[1] if transpose_weight else weight.shape[0]
    layout = "[V, H]" if transpose_weight else "[H, V]"
    if h_dim != hidden.shape[1]:
        raise ValueError(
            f"weight {list(weight.shape)} read as {layout} does not match hidden size {hidden.shape[1]}; "
            "pass transpose_weight=True for a [V, H] (embedding-table / HF Linear) weight"
        )
    if index.shape[0] != hidden.shape[0]:
        raise ValueError(f"index has {index.shape[0]} rows, hidden has {hidden.shape[0]}")


def _hidden_apply(hidden, weight, index, temperature, chunk_size, transpose_weight, with_entropy):
    _check_temperature(temperature)
    _check_hidden(hidden, weight, index, transpose_weight)
    if hidden.shape[0] == 0:
        empty = paddle.zeros([0], dtype=_stat_dtype(hidden))
        return (empty, empty) if with_entropy else empty
    return _HiddenSelectiveLogSoftmax.apply(
        hidden, weight, index.astype("int64"), float(temperature), int(chunk_size), bool(transpose_weight), with_entropy
    )


def selective_log_softmax_from_hidden(
    hidden: paddle.Tensor,
    weight: paddle.Tensor,
    index: paddle.Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
    transpose_weight: bool = False,
) -> paddle.Tensor:
    """Chosen-token log-probs of ``lm_head(hidden) / temperature``, fp32 [N]; logits never materialized.

    Args:
        hidden: [N, H] final-norm hidden states at the positions that predict ``index`` (slice the
            completion positions out before calling). May require grad.
        weight: the lm_head weight, no bias (Qwen2/2.5-VL have none). Layout [H, V], i.e. Paddle's
            ``nn.Linear.weight`` as stored; with ``transpose_weight=True`` a [V, H] matrix such as the
            tied ``embed_tokens.weight`` (Qwen2.5-VL-3B) or an HF-layout Linear weight. Same dtype as
            ``hidden``. May require grad.
        index: [N] token ids.
        temperature: the sampling temperature (> 0).
        chunk_size: rows per chunk.
    """
    return _hidden_apply(hidden, weight, index, temperature, chunk_size, transpose_weight, with_entropy=False)


def selective_log_softmax_and_entropy_from_hidden(
    hidden: paddle.Tensor,
    weight: paddle.Tensor,
    index: paddle.Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
    transpose_weight: bool = False,
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """``selective_log_softmax_from_hidden`` plus the per-row entropy of softmax(logits / temperature).

    The entropy comes from the same chunk pass (no second matmul) and is for logging only: it is
    detached (no gradient). Returns ``(logps [N], entropy [N])``, both fp32.
    """
    return _hidden_apply(hidden, weight, index, temperature, chunk_size, transpose_weight, with_entropy=True)


def selective_log_softmax_from_hidden_reference(
    hidden: paddle.Tensor,
    weight: paddle.Tensor,
    index: paddle.Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
    transpose_weight: bool = False,
) -> paddle.Tensor:
    """Naive ``selective_log_softmax_from_hidden``: full [N, V] logits, full fp32 log-softmax."""
    _check_hidden(hidden, weight, index, transpose_weight)
    with paddle.amp.auto_cast(enable=False):
        logits = _hidden_logits(hidden, weight, transpose_weight)  # (N, V)
    return selective_log_softmax_reference(logits, index, temperature)


@paddle.no_grad()
def token_entropy(
    logits: paddle.Tensor, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_ROWS
) -> paddle.Tensor:
    """Entropy of softmax(logits / temperature) per row, fp32 [...], chunked; no gradient (logging)."""
    _check_temperature(temperature)
    flat = logits.reshape([-1, logits.shape[-1]])  # (N, V)
    out = []
    with paddle.amp.auto_cast(enable=False):
        for s, e in _row_chunks(flat.shape[0], chunk_size):
            z = _scaled_fp32(flat[s:e], temperature)  # (c, V)
            out.append(_entropy(z, paddle.logsumexp(z, axis=-1)))  # (c,)
    if not out:
        return paddle.zeros(logits.shape[:-1], dtype=_stat_dtype(logits))
    return paddle.concat(out).reshape(logits.shape[:-1])


@paddle.no_grad()
def token_entropy_reference(
    logits: paddle.Tensor, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_ROWS
) -> paddle.Tensor:
    """Naive ``token_entropy``: -sum(p * log p) over a full fp32 log-softmax. ``chunk_size`` is ignored."""
    _check_temperature(temperature)
    with paddle.amp.auto_cast(enable=False):
        z = _scaled_fp32(logits, temperature)  # (..., V)
        logps = z - paddle.logsumexp(z, axis=-1, keepdim=True)  # (..., V)  not F.log_softmax: see module doc
        return -(paddle.exp(logps) * logps).sum(-1)  # (...)
