"""Pure sampling steps: temperature, top-k, top-p (in transformers' order), then a draw."""

from __future__ import annotations

import paddle

from paddlemix_r1.ops.precision import fp32_region
from paddlemix_r1.ops.softmax import categorical, softmax

NEG_INF = float("-inf")


def top_k_filter(logits: paddle.Tensor, top_k: int | None) -> paddle.Tensor:
    """Keep the ``top_k`` largest logits per row (ties at the k-th value kept); others -> -inf. (N, V)"""
    if not top_k or top_k >= logits.shape[-1]:
        return logits
    kth = paddle.topk(logits, top_k, axis=-1)[0][:, -1:]  # (N, 1)
    return paddle.where(logits < kth, paddle.full_like(logits, NEG_INF), logits)


def top_p_filter(logits: paddle.Tensor, top_p: float | None) -> paddle.Tensor:
    """Nucleus filter as transformers' TopPLogitsWarper: drop the low tail whose mass is <= 1 - top_p,
    always keeping the most likely token. (N, V)"""
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = paddle.sort(logits, axis=-1), paddle.argsort(logits, axis=-1)  # ascending
    cum = paddle.cumsum(softmax(sorted_logits), axis=-1)  # (N, V)
    remove_sorted = (cum <= (1.0 - top_p)).astype("int32")
    remove_sorted[:, -1] = 0
    remove = paddle.put_along_axis(paddle.zeros_like(remove_sorted), sorted_idx, remove_sorted, axis=-1)  # (N, V)
    return paddle.where(remove.astype("bool"), paddle.full_like(logits, NEG_INF), logits)


def sample(
    logits: paddle.Tensor,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Pick one token per row from last-position logits (N, V).

    Returns tokens (N,) int64 and their log-probability under softmax(logits / temperature) over the
    full vocabulary — the quantity the GRPO trainer recomputes (top-k / top-p shape the draw, not the
    log-prob, as in TRL and vLLM). A sampled draw is the inverse CDF of the filtered distribution at one
    uniform per row from Paddle's generator (``paddle.seed`` reproduces it): ``ops.categorical``.
    """
    with fp32_region():
        scaled = logits if logits.dtype == paddle.float32 else logits.astype("float32")  # (N, V)
        if temperature != 1.0:
            scaled = scaled / max(temperature, 1e-6)
        if do_sample:
            filtered = top_p_filter(top_k_filter(scaled, top_k), top_p)  # (N, V); may be ``scaled`` itself
            u = paddle.rand([scaled.shape[0]], dtype="float32")  # (N,)
            tokens, chosen = categorical(scaled, filtered, u)  # (N,), (N,)
            return tokens, chosen
        tokens = paddle.argmax(scaled, axis=-1, keepdim=True)  # (N, 1)
        probs = softmax(scaled)  # (N, V), over the full vocabulary
        # log p(token): the greedy token has a probability far above fp32's underflow (clip only guards log 0)
        chosen = paddle.log(paddle.take_along_axis(probs, tokens, axis=-1).clip(min=1e-38)).reshape([-1])  # (N,)
    tokens = tokens.reshape([-1])
    return tokens if tokens.dtype == paddle.int64 else tokens.astype("int64"), chosen
