"""The model worker: one thread owns the model (Paddle forwards are not safe to run concurrently) and
turns queued requests into as few ``generate`` calls as it can.

Batching. After the first request of a batch arrives, the worker waits up to ``batch_window_s`` for
more (requests that queued while the previous batch ran are already there and cost no wait). It
then takes the oldest request and, in arrival order, every other pending request with the same
batch key while the rows (prompts x n) fit in ``max_batch_size``; the rest wait for the next call.
One ``generate`` call serves the batch: the prompts are left-padded together, ``n`` is the call's
``num_return_sequences`` (each prompt's prefix is prefilled once and shared by its n rows), and the
call decodes up to the largest ``max_tokens`` of the batch, stopping early once every row has hit
eos or its own limit; each row is then cut at its own ``max_tokens``.

Batch keys and seeds. Greedy requests share a key per ``n`` whatever their temperature / top_p /
seed: argmax is deterministic and a row's tokens do not depend on the other rows (tested: batched
greedy == lone ``generate``). Sampled requests without a seed share a key per (temperature, top_p,
top_k, n). A sampled request WITH a seed runs alone, in its own ``generate(seed=seed)`` call: the
sampler draws every row from one random stream, so a row's draw would depend on what else was in
the batch. Alone, the same request with the same seed gives the same completions, under any load.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from paddlemix_r1._runtime import configure_thread
from paddlemix_r1.serve.backend import ChatModel, PreparedPrompt

log = logging.getLogger("paddlemix_r1.serve")


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the sampler. ``temperature == 0`` means greedy."""

    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    n: int = 1
    max_tokens: int = 16
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def batch_key(self) -> tuple | None:
        """Requests with equal keys may share a generate call; None: this request runs alone."""
        if self.greedy:
            return ("greedy", self.n)
        if self.seed is not None:
            return None
        return ("sample", self.temperature, self.top_p, self.top_k, self.n)


@dataclass
class Completion:
    """One row's result: its tokens up to and including eos (or up to max_tokens)."""

    token_ids: list[int]
    hit_eos: bool


@dataclass
class Job:
    prompt: PreparedPrompt
    params: SamplingParams
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    arrived: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return self.params.n


class QueueFull(Exception):
    """More than ``max_pending`` requests are waiting for the model."""


class BatchWorker:
    """Owns the model thread. ``submit`` is safe from any thread; its Future resolves to the request's
    ``n`` ``Completion`` objects (or the exception its batch raised)."""

    def __init__(self, chat_model: ChatModel, max_batch_size: int = 8, batch_window_s: float = 0.005,
                 max_pending: int = 256) -> None:
        self.chat_model = chat_model
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_pending)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._batch_sizes: Counter[int] = Counter()  # requests per generate call -> how many calls
        self._stats = {"requests": 0, "rows": 0, "completion_tokens": 0, "generate_seconds": 0.0, "failed_batches": 0}

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the worker is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="paddlemix-r1-model-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the running batch, fail the queued requests, join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("model worker still running after %.0f s", timeout)
            self._thread = None
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    def submit(self, prompt: PreparedPrompt, params: SamplingParams) -> concurrent.futures.Future:
        if params.n > self.max_batch_size:
            raise ValueError(f"n={params.n} exceeds max_batch_size={self.max_batch_size}")
        job = Job(prompt, params)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests are already waiting") from None
        return job.future

    def metrics(self) -> dict[str, Any]:
        """Counters since start: generate calls by batch size (requests per call), rows, tokens, time."""
        with self._lock:
            sizes = dict(sorted(self._batch_sizes.items()))
            stats = dict(self._stats)
        return {
            **stats,
            "batches": sum(sizes.values()),
            "batch_sizes": {str(k): v for k, v in sizes.items()},
            "max_batch_size_seen": max(sizes, default=0),
            "queued": self._queue.qsize(),
            "running": self._thread is not None and self._thread.is_alive(),
        }

    # ---- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        configure_thread()  # the compiled kernels' OpenMP pool, as large here as in the main thread
        pending: list[Job] = []
        while not self._stop.is_set():
            if not pending:
                try:
                    pending.append(self._queue.get(timeout=0.1))
                except queue.Empty:
                    continue
            self._gather(pending)
            batch = self._select(pending)
            pending = [j for j in pending if not any(j is b for b in batch)]
            self._execute(batch)
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    def _gather(self, pending: list[Job]) -> None:
        """Move queued jobs into ``pending`` until the oldest one's window closes or its batch is full."""
        deadline = pending[0].arrived + self.batch_window_s
        while True:
            while True:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if self._rows_like(pending[0], pending) >= self.max_batch_size:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                pending.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                return

    @staticmethod
    def _rows_like(first: Job, pending: list[Job]) -> int:
        key = first.params.batch_key()
        if key is None:
            return first.rows
        return sum(j.rows for j in pending if j.params.batch_key() == key)

    def _select(self, pending: list[Job]) -> list[Job]:
        first = pending[0]
        key = first.params.batch_key()
        batch, rows = [first], first.rows
        if key is None:
            return batch
        for job in pending[1:]:
            if job.params.batch_key() == key and rows + job.rows <= self.max_batch_size:
                batch.append(job)
                rows += job.rows
        return batch

    def _execute(self, batch: list[Job]) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        t0 = time.perf_counter()
        try:
            results = self._generate(live)
        except Exception as e:  # any failure is reported to every request of the batch; the worker goes on
            log.exception("generate failed for a batch of %d request(s)", len(live))
            with self._lock:
                self._stats["failed_batches"] += 1
            for job in live:
                job.future.set_exception(e)
            return
        dt = time.perf_counter() - t0
        tokens = sum(len(c.token_ids) for r in results for c in r)
        rows = sum(j.rows for j in live)
        with self._lock:
            self._batch_sizes[len(live)] += 1
            self._stats["requests"] += len(live)
            self._stats["rows"] += rows
            self._stats["completion_tokens"] += tokens
            self._stats["generate_seconds"] += dt
        log.info("batch: %d request(s), %d row(s), %d completion tokens, %.3f s", len(live), rows, tokens, dt)
        for job, result in zip(live, results):
            job.future.set_result(result)

    def _generate(self, jobs: list[Job]) -> list[list[Completion]]:
        import paddle

        from paddlemix_r1.generation import generate

        cm = self.chat_model
        p = jobs[0].params  # every job of the batch shares the sampling parameters (its batch key)
        limits = np.repeat([j.params.max_tokens for j in jobs], p.n)  # (B*n,) group-major like generate's rows
        limits_t = paddle.to_tensor(limits)
        step = [0]

        def all_rows_finished(done: paddle.Tensor) -> bool:
            # called once after every decode step: stop when each row has hit eos or its own limit
            step[0] += 1
            return bool((done | (limits_t <= step[0])).all())

        out = generate(
            cm.model, cm.collate([j.prompt for j in jobs]), max_new_tokens=int(limits.max()),
            do_sample=not p.greedy, temperature=1.0 if p.greedy else p.temperature,
            top_p=None if p.greedy else p.top_p, top_k=None if p.greedy else p.top_k,
            num_return_sequences=p.n, eos_token_id=cm.eos_token_id, pad_token_id=cm.pad_token_id,
            seed=None if p.greedy else p.seed, stop_condition=all_rows_finished if cm.eos_token_id is not None else None,
        )
        ids = out.completion_ids.numpy()  # (B*n, T)
        lengths = np.minimum(out.completion_mask.numpy().sum(axis=1), limits)  # (B*n,)
        rows = []
        for r in range(ids.shape[0]):
            toks = ids[r, : lengths[r]].tolist()
            rows.append(Completion(toks, bool(toks) and toks[-1] == cm.eos_token_id))
        return [rows[i * p.n:(i + 1) * p.n] for i in range(len(jobs))]
