"""Collectives the trainer needs, each behind a sync point (see coordination.py).

All functions act on the global process group of ``init_distributed`` and are identities in a
single process. Every rank must call them in the same order (they are collectives).

Gradient synchronisation is an explicit all-reduce over the parameters' gradients after the last
micro-batch's backward, not ``paddle.DataParallel``: the trainer accumulates several micro-batches
and runs no-grad rollout / reference passes through the same model, which DataParallel would hook
into (it reduces on every backward unless wrapped in ``no_sync``); one explicit reduction per
optimizer step is easy to read, reduces in fp32 whatever the parameter dtype, and gives the same
gradients on every rank (a ring all-reduce hands every rank the same sums), so replicas never drift.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import paddle

from paddlemix_r1.distributed.env import get_env

# Gradients are flattened into fp32 buckets of at most this many elements (128 MB) per all-reduce.
DEFAULT_BUCKET_NUMEL = 1 << 25


def _dist():
    import paddle.distributed as dist

    return dist


def barrier(tag: str = "barrier") -> None:
    """All ranks wait for each other (with the failure check and timeout of a sync point)."""
    get_env().coordinator.sync(tag)


def all_gather_object(obj: Any, tag: str = "all_gather_object") -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (objects are pickled)."""
    env = get_env()
    if not env.is_distributed:
        return [obj]
    env.coordinator.sync(tag)
    out: list[Any] = []
    _dist().all_gather_object(out, obj)
    return out


def all_gather_arrays(arrays: dict[str, np.ndarray], tag: str = "all_gather_arrays") -> dict[str, list[np.ndarray]]:
    """{name: [array of rank 0, array of rank 1, ...]}; arrays may differ in length between ranks.

    Every rank must pass the same names. Values travel pickled, so float64 stays exact.
    """
    gathered = all_gather_object({k: np.asarray(v) for k, v in arrays.items()}, tag)
    names = sorted(arrays)
    for r, d in enumerate(gathered):
        if sorted(d) != names:
            raise RuntimeError(f"all_gather_arrays({tag!r}): rank {r} sent {sorted(d)}, this rank {names}")
    return {k: [d[k] for d in gathered] for k in arrays}


def all_reduce_sum(x: float | np.ndarray, tag: str = "all_reduce_sum") -> float | np.ndarray:
    """Sum over ranks of a float or float array (reduced in float64)."""
    env = get_env()
    if not env.is_distributed:
        return x
    env.coordinator.sync(tag)
    t = paddle.to_tensor(np.asarray(x, dtype=np.float64))
    _dist().all_reduce(t)
    out = t.numpy()
    return float(out) if np.ndim(x) == 0 else out


def all_true(flag: bool, tag: str = "all_true") -> bool:
    """True on every rank iff ``flag`` is True on every rank."""
    env = get_env()
    if not env.is_distributed:
        return bool(flag)
    return round(all_reduce_sum(float(bool(flag)), tag)) == env.world_size


def all_true_unguarded(flag: bool) -> bool:
    """``all_true`` without a sync point: one all-reduce of a scalar, no store traffic.

    For a decision taken at every step of a loop whose steps issue collectives of their own anyway
    (the stage-3 decode loop all-gathers parameters in every forward, unguarded): a sync point per step
    would add store round trips to every token and leave about 2 * world + 1 keys per step in the job's
    store for the rest of the run. A rank that is stuck or gone leaves its peers waiting in the
    backend's collective (its timeout), as it would in the loop's own all-gathers.
    """
    env = get_env()
    if not env.is_distributed:
        return bool(flag)
    not_done = paddle.to_tensor([0 if flag else 1], dtype="int64")  # (1,) ranks whose flag is False
    _dist().all_reduce(not_done)
    return int(not_done.numpy()[0]) == 0


def reduce_metrics(metrics: dict[str, float], tag: str = "metrics",
                   max_prefixes: Sequence[str] = ("time/",)) -> dict[str, float]:
    """Metrics averaged over ranks (keys starting with one of ``max_prefixes``: the maximum).

    NaN values (a statistic a rank could not form, e.g. a min over no sequences) are left out; a
    key is NaN only if it is NaN or missing on every rank. Every rank gets the same dict.
    """
    env = get_env()
    if not env.is_distributed:
        return dict(metrics)
    per_rank = all_gather_object({k: float(v) for k, v in metrics.items()}, tag)
    out: dict[str, float] = {}
    for key in sorted({k for d in per_rank for k in d}):
        vals = [d[key] for d in per_rank if key in d and not math.isnan(d[key])]
        if not vals:
            out[key] = float("nan")
        elif key.startswith(tuple(max_prefixes)):
            out[key] = max(vals)
        else:
            out[key] = float(np.mean(vals))
    return out


def broadcast_parameters(layer: paddle.nn.Layer, src: int = 0, tag: str = "broadcast_parameters") -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``layer`` (as DataParallel does at start)."""
    env = get_env()
    if not env.is_distributed:
        return
    env.coordinator.sync(tag)
    dist = _dist()
    with paddle.no_grad():
        for t in list(layer.parameters()) + list(layer.buffers()):
            dist.broadcast(t, src=src)


def _buckets(params: Sequence[paddle.Tensor], bucket_numel: int) -> Iterable[list[paddle.Tensor]]:
    bucket: list[paddle.Tensor] = []
    size = 0
    for p in params:
        n = int(np.prod(p.shape))
        if bucket and size + n > bucket_numel:
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += n
    if bucket:
        yield bucket


def allreduce_gradients(params: Sequence[paddle.Tensor], tag: str = "gradients",
                        bucket_numel: int = DEFAULT_BUCKET_NUMEL) -> None:
    """Replace every parameter's gradient by its mean over ranks, in place.

    Reduction is in fp32 buckets (one all-reduce per bucket, then a multiplication by 1 / world).
    A parameter without a gradient on some rank (not reached by that rank's backward) counts as
    zero there; one without a gradient on every rank keeps ``grad is None``, as in a single
    process, so the optimizer skips it.
    """
    env = get_env()
    if not env.is_distributed:
        return
    dist = _dist()
    has = paddle.to_tensor([0 if p.grad is None else 1 for p in params], dtype="int64")
    env.coordinator.sync(tag)
    dist.all_reduce(has)
    active = [p for p, h in zip(params, has.numpy().tolist()) if h > 0]
    inv_world = 1.0 / env.world_size
    with paddle.no_grad():
        for bucket in _buckets(active, bucket_numel):
            flat = paddle.concat([
                (paddle.zeros([int(np.prod(p.shape))], "float32") if p.grad is None
                 else p.grad.astype("float32").reshape([-1]))
                for p in bucket])  # (bucket numel,)
            dist.all_reduce(flat)
            flat = flat * inv_world
            offset = 0
            for p in bucket:
                n = int(np.prod(p.shape))
                g = flat[offset:offset + n].reshape(p.shape).astype(p.dtype)
                if p.grad is None:
                    p._set_grad_ivar(g)
                else:
                    p.grad.set_value(g)
                offset += n
