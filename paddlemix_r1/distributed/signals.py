"""SIGTERM / SIGINT for training runs: a flag the loop checks, never work inside the signal.

Importing paddle installs glog's failure handler for SIGTERM (``InitGLOG``: ``InstallFailureSignalHandler``
with Paddle's ``SignalHandle`` writer), and that handler formats a message with ``malloc``. When the
signal lands while the main thread holds the allocator's lock, the process deadlocks instead of
exiting (about 1 SIGTERM in 12 during training). A Python-level handler replaces it: CPython's C
trampoline only records the signal, and ``handle_signal`` runs later in the main thread between
bytecodes, where allocating is safe.

``install()`` puts ``handle_signal`` in place for SIGTERM and SIGINT (``paddlemix_r1.distributed``
calls it when first imported, with both signals blocked while paddle itself is imported, so a signal
arriving during that import waits for our handler). Inside ``graceful_stop()`` (a training run) the
first signal sets the flag that the loop polls through ``stop_requested()``: the run ends at its next
safe point and raises ``Interrupted``; a second one raises ``Interrupted`` at once. Outside a run the
signal does what it would have done without us: SIGINT raises ``KeyboardInterrupt``, SIGTERM ends the
process by the signal (or calls the Python handler that was installed before ours).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):  # noqa: N818 - a BaseException, like KeyboardInterrupt, so `except Exception` lets it through
    """A training run stopped because the process received SIGTERM or SIGINT. ``exit_code`` is 128 + signum,
    the shell's convention for a process ended by a signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


_previous: dict[int, Any] = {}
_active = 0  # nesting depth of graceful_stop()
_received: list[int] = []  # signals received inside the current run, in order


def _write(text: str) -> None:
    """Unbuffered: sys.stderr may be in the middle of a write of the main thread, which the handler interrupts."""
    os.write(2, text.encode("utf-8", "replace"))


def handle_signal(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM / SIGINT handler (runs in the main thread between bytecodes, not in signal context)."""
    if not _active:
        previous = _previous.get(signum)
        if callable(previous) and previous is not handle_signal:
            previous(signum, frame)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)  # the default action: the process ends by this signal
        os.kill(os.getpid(), signum)
        return
    _received.append(signum)
    name = signal_name(signum)
    if len(_received) == 1:
        _write(f"\nreceived {name}: stopping at the next safe point (send it again to stop at once)\n")
        return
    raise Interrupted(signum, f"stopped at once by a second signal ({name}); the newest complete checkpoint "
                              "stands (resume with resume_from_checkpoint=latest)")


def install() -> bool:
    """Put ``handle_signal`` in place for SIGTERM and SIGINT (idempotent). Signal handlers can only be set
    from the main thread: elsewhere this returns False and changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is not handle_signal:
            _previous[signum] = current
            signal.signal(signum, handle_signal)
    return True


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Block SIGTERM / SIGINT inside the block, then install our handler and unblock: a signal that arrives
    meanwhile (e.g. while paddle is imported and installs its own handler) is delivered to ours."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        install()
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Inside the block SIGTERM / SIGINT set the stop flag instead of ending the process (see the module)."""
    global _active
    install()
    if not _active:
        _received.clear()
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if not _active:
            _received.clear()


def stop_requested() -> int | None:
    """The first signal received in the current run (SIGTERM or SIGINT), or None."""
    return _received[0] if _received else None


def clear() -> None:
    """Forget a received signal (after the run has acted on it)."""
    _received.clear()


def check(message: Callable[[int], str]) -> None:
    """Raise ``Interrupted(signum, message(signum))`` if a stop was requested."""
    signum = stop_requested()
    if signum is not None:
        raise Interrupted(signum, message(signum))
