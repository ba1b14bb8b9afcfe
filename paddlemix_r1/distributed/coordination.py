"""Sync points with a timeout and a job-wide failure flag, so that one failing rank ends the job.

What ``paddle.distributed.launch`` does by itself (measured with Paddle 3.3.1, collective mode,
no elastic restarts): it polls its workers about once a second; when one exits non-zero it prints
the tail of the lowest failed rank's log, sends SIGTERM to the others (SIGKILL 3 s later) and
exits non-zero. So a rank that *exits* ends the job. Two gaps remain:

- a rank that is alive but stuck (or still running an interpreter shutdown that waits for
  threads / child processes) never exits, and its peers wait in the next collective: on CPU, gloo
  gives up after a fixed 30 s with a bare ``TIMEOUT`` error naming no rank; NCCL waits for
  ``PADDLE_PG_TIMEOUT`` (30 min by default);
- the same fixed 30 s gloo timeout also fails a *healthy* job whenever one rank legitimately runs
  more than 30 s longer than another before a collective (a slow rollout on CPU).

Hence every collective of this package first passes a sync point on the job's TCP store (the one
``init_parallel_env`` creates, served by rank 0): each rank announces its arrival and waits until
all have arrived, while polling a failure flag that a failing rank raises with its traceback. The
waiting rank then raises ``PeerFailedError`` carrying the failing rank's error, or
``SyncTimeoutError`` naming the ranks that never arrived; the collective itself only starts once
every rank is there. Arriving is not enough: a rank paused (SIGSTOP, a stalled node) while it
waits has announced itself, and its peers would go on into the collective and wait there for the
backend's bare timeout. So a second phase follows: each rank, once it has seen every arrival,
confirms it is leaving for the collective, and the ranks leave together; a rank that never
confirms is named by ``SyncTimeoutError``. What remains unguarded is only the instant between a
rank's confirmation and its entry into the collective. ``run_guarded`` (the entry-point wrapper) raises the flag and makes sure the
process exits, with a non-zero code, even if something would keep the interpreter alive.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import NoReturn

from paddlemix_r1.distributed.signals import Interrupted

PREFIX = "paddlemix_r1"
# A peer that learnt of another rank's failure exits after this grace period, so that the
# launcher (which reports the lowest failed rank first) shows the rank where the error started.
PEER_EXIT_GRACE_S = 3.0


class PeerFailedError(RuntimeError):
    """Another rank raised an error; the message carries that rank's traceback."""


class SyncTimeoutError(RuntimeError):
    """Some rank did not reach a sync point within the timeout (stuck, or far slower than the rest)."""


class SyncOrderError(RuntimeError):
    """Ranks met at sync points of different names: their code paths issue collectives in different orders."""


class Coordinator:
    """Barrier-with-failure-check over a key-value store shared by all ranks.

    ``store`` needs ``add(key, n) -> int`` and ``set(key, value)`` / ``get(key) -> bytes`` (Paddle's
    ``TCPStore``); ``None`` with ``world_size == 1`` makes every method a no-op.
    """

    def __init__(self, store, rank: int, world_size: int, timeout: float, poll_s: float = 0.02):
        if world_size > 1 and store is None:
            raise ValueError("a Coordinator for more than one rank needs a store")
        if timeout <= 0:
            raise ValueError(f"sync timeout must be > 0 seconds, got {timeout}")
        self.store, self.rank, self.world_size = store, rank, world_size
        self.timeout, self.poll_s = float(timeout), poll_s
        self._seq = 0
        self._failed = False

    @classmethod
    def single(cls) -> Coordinator:
        return cls(None, 0, 1, timeout=1.0)

    @classmethod
    def from_global_store(cls, rank: int, world_size: int, timeout: float) -> Coordinator:
        """Use the TCP store that ``paddle.distributed.init_parallel_env`` created for the job."""
        from paddle.base import core

        return cls(core.create_or_get_global_tcp_store(), rank, world_size, timeout)

    # ----- failure flag -----
    def report_failure(self, message: str) -> None:
        """Raise the job-wide failure flag with this rank's error (first report per rank wins)."""
        if self.world_size == 1 or self._failed:
            return
        self._failed = True
        try:
            # Message first, then the flag: a reader that sees the flag always finds the message.
            self.store.set(f"{PREFIX}/error/{self.rank}", message[-20000:])
            self.store.add(f"{PREFIX}/failed/{self.rank}", 1)
            self.store.add(f"{PREFIX}/failures", 1)
        except (ValueError, RuntimeError, OSError) as e:  # the store dies with rank 0; say so, go on failing
            sys.stderr.write(f"[rank {self.rank}] could not report the failure to the other ranks: {e!r}\n")

    @contextlib.contextmanager
    def failures_reported(self) -> Iterator[None]:
        """Report an exception escaping the block to the other ranks (then let it propagate), so
        they stop at their next sync point even if this process is slow to exit."""
        try:
            yield
        except PeerFailedError:
            raise
        except BaseException as exc:
            if self.world_size > 1:
                self.report_failure(f"[rank {self.rank}] {_error_text(exc)}")
            raise

    def failed_ranks(self) -> dict[int, str]:
        """{rank: error message} of the ranks that reported a failure (empty if none)."""
        if self.world_size == 1 or self.store.add(f"{PREFIX}/failures", 0) == 0:
            return {}
        out = {}
        for r in range(self.world_size):
            if r != self.rank and self.store.add(f"{PREFIX}/failed/{r}", 0) > 0:
                out[r] = self.store.get(f"{PREFIX}/error/{r}").decode("utf-8", "replace")
        return out

    def check_peers(self) -> None:
        """Raise ``PeerFailedError`` if another rank reported a failure."""
        failed = self.failed_ranks()
        if failed:
            r = min(failed)
            raise PeerFailedError(f"rank {r} failed (this is rank {self.rank}); its error:\n{failed[r]}")

    # ----- sync point -----
    def sync(self, name: str) -> None:
        """Wait until every rank has reached its matching sync point (the n-th call on every rank).

        Raises ``PeerFailedError`` as soon as another rank reports a failure, and
        ``SyncTimeoutError`` after ``timeout`` seconds without all ranks arriving.
        """
        if self.world_size == 1:
            return
        self._seq += 1
        key = f"{PREFIX}/sync/{self._seq}"
        try:
            self._wait_all(key, name)
        except (ValueError, RuntimeError, OSError) as e:
            if isinstance(e, (PeerFailedError, SyncTimeoutError, SyncOrderError)):
                raise
            # Paddle's store client raises ValueError/RuntimeError when its connection breaks.
            raise PeerFailedError(
                f"rank {self.rank} lost the connection to the job's store, which rank 0 serves, at sync point "
                f"#{self._seq} ({name!r}): rank 0 has most likely exited; see its log ({e})") from e

    def _wait_all(self, key: str, name: str) -> None:
        self.store.set(f"{key}/name{self.rank}", name)
        deadline = time.monotonic() + self.timeout
        self._phase(key, name, deadline, "did not reach", "")
        self.check_peers()
        # Second phase: every rank has seen every arrival and is still running (see the module docstring).
        self._phase(f"{key}/go", name, deadline, "did not go on from", " (they arrived there, then stopped)")
        self.check_peers()
        if self.rank != 0:
            expected = self.store.get(f"{key}/name0").decode("utf-8", "replace")
            if expected != name:
                raise SyncOrderError(f"sync point #{self._seq}: rank {self.rank} is at {name!r}, rank 0 at "
                                     f"{expected!r}; the ranks issue collectives in different orders")

    def _phase(self, key: str, name: str, deadline: float, verb: str, detail: str) -> None:
        """Count this rank in at ``key`` and wait until every rank has; SyncTimeoutError names the others."""
        self.store.add(f"{key}/rank{self.rank}", 1)
        self.store.add(key, 1)
        delay = 0.001
        while self.store.add(key, 0) < self.world_size:
            self.check_peers()
            if time.monotonic() > deadline:
                missing = [r for r in range(self.world_size) if self.store.add(f"{key}/rank{r}", 0) == 0]
                raise SyncTimeoutError(
                    f"rank(s) {missing} {verb} sync point #{self._seq} ({name!r}) within {self.timeout:.0f} s{detail} "
                    f"(this is rank {self.rank}); they are stuck, paused or far slower than the rest "
                    "(raise the sync timeout if the work between sync points is that uneven)")
            time.sleep(delay)
            delay = min(delay * 2, self.poll_s)


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _current_coordinator() -> Coordinator:
    from paddlemix_r1.distributed.env import get_env  # env imports this module

    return get_env().coordinator


def run_guarded(main: Callable[[], int | None],
                coordinator_fn: Callable[[], Coordinator | None] = _current_coordinator) -> int:
    """Run an entry point so that a failure on any rank ends the whole job promptly.

    On success returns ``main``'s exit code (0 for None). On an exception: prints the traceback
    (prefixed with the rank), raises the job's failure flag so that peers waiting at a sync point
    stop at once with this error, flushes the standard streams and leaves with ``os._exit(1)``:
    no interpreter shutdown, which could wait forever for non-daemon threads or child processes,
    and no collective on the way out. A rank that failed only because a peer did
    (``PeerFailedError``) waits ``PEER_EXIT_GRACE_S`` first, so the launcher reports the peer.

    A run stopped by SIGTERM / SIGINT (``signals.Interrupted``) is not a crash: its message is printed
    without a traceback and the exit code is 128 + the signal number (143 for SIGTERM, 130 for SIGINT).

    ``coordinator_fn`` returns the coordinator at the time of the failure (by default that of
    ``init_distributed``; a single-process one, which reports nothing, if it was not called yet).
    """
    try:
        code = main()
        return 0 if code is None else int(code)
    except SystemExit as exc:
        if exc.code in (None, 0):
            return 0
        _fail(exc, coordinator_fn())
    except BaseException as exc:  # noqa: BLE001 - every failure, including KeyboardInterrupt, ends the rank
        _fail(exc, coordinator_fn())


def _fail(exc: BaseException, coordinator: Coordinator | None) -> NoReturn:
    """Report ``exc`` to stderr and to the other ranks, then end the process with exit code 1."""
    rank = coordinator.rank if coordinator is not None else int(os.environ.get("PADDLE_TRAINER_ID", "0"))
    interrupted = isinstance(exc, Interrupted)
    text = f"{exc}\n" if interrupted else _error_text(exc)
    sys.stderr.write(f"[rank {rank}] {text}")
    if coordinator is not None and not isinstance(exc, PeerFailedError):
        coordinator.report_failure(f"[rank {rank}] {text}")
    sys.stdout.flush()
    sys.stderr.flush()
    if isinstance(exc, PeerFailedError):
        time.sleep(PEER_EXIT_GRACE_S)
    os._exit(exc.exit_code if interrupted else 1)
