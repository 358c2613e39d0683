"""Waking a loop: the eventfd (or pipe) other threads write to, and the signal pipe of a loop on the main thread.

Also the engine's ``stopped`` event: ``Engine.wait`` on the main thread wakes for a signal as such a loop does.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from typing import TYPE_CHECKING

from netloop._poller import IN

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop


def signal_pipe() -> tuple[int, int, int] | None:
    """A non-blocking pipe that Python's C signal handler writes to (``signal.set_wakeup_fd``), on the main thread:
    (its read end, its write end, the wakeup fd set before); None where Python refuses one (not the main
    interpreter)."""
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:
        os.close(r)
        os.close(w)
        return None
    return r, w, previous


class SignalWake:
    """Wake a loop that runs on the main thread when a signal comes in, so Python's handler runs at once.

    Only the main thread runs Python's signal handlers, but the kernel may take the signal on any thread, or on
    the main thread just before it goes to sleep in the poller: either way the handler (SIGTERM's graceful stop)
    would wait for the next event. ``signal.set_wakeup_fd`` has the C handler write to a pipe the loop watches.
    """

    def __init__(self, loop: EventLoop, r: int, w: int, previous: int) -> None:
        self.loop = loop
        self.r = r
        self.w = w
        self.previous = previous
        loop.attach(r, self._drain, IN)

    @classmethod
    def on_main_thread(cls, loop: EventLoop) -> SignalWake | None:
        """Watch for signals when ``loop`` runs on the main thread (None elsewhere, or where Python refuses)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        pipe = signal_pipe()
        return None if pipe is None else cls(loop, *pipe)

    def _drain(self, ev: int) -> None:
        try:
            while os.read(self.r, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        current = signal.set_wakeup_fd(self.previous)
        if current != self.w:
            signal.set_wakeup_fd(current)  # replaced while the loop ran: the replacement stays
        self.loop.detach(self.r)
        os.close(self.r)
        os.close(self.w)


class StoppedEvent(threading.Event):
    """A ``threading.Event`` with a wait that, on the main thread, also wakes when a signal comes in, on any thread.

    Only the main thread runs Python's signal handlers, and only while it runs Python code: blocked in a plain
    ``Event.wait`` it leaves a SIGTERM the kernel handed to a loop's thread unhandled, and the engine serving on.
    Here the C handler writes to a pipe (``signal.set_wakeup_fd``) the wait watches; what it writes is passed on to
    the wakeup fd set before (an asyncio loop's), so its signals are not lost either.
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiters: set[int] = set()
        self._waiters_lock = threading.Lock()

    def set(self) -> None:
        super().set()
        with self._waiters_lock:
            waiters = list(self._waiters)
        for fd in waiters:
            wake_write(fd)

    def wait_waking_on_signals(self, timeout: float | None = None) -> bool:
        """``wait``, and on the main thread Python's signal handlers run meanwhile whichever thread took the signal."""
        if self.is_set() or threading.current_thread() is not threading.main_thread():
            return self.wait(timeout)
        pipe = signal_pipe()
        if pipe is None:
            return self.wait(timeout)
        r, w, previous = pipe
        woken, wake = wake_pair()
        fds = (r, w, woken, wake)
        with self._waiters_lock:
            self._waiters.add(wake)
        _WAITING.add(fds)
        try:
            return self._wait_watching(r, woken, previous, timeout)
        finally:
            _WAITING.discard(fds)
            with self._waiters_lock:
                self._waiters.discard(wake)
            current = signal.set_wakeup_fd(previous)
            if current != w:
                signal.set_wakeup_fd(current)  # replaced meanwhile: the replacement stays
            for fd in set(fds):
                os.close(fd)

    def _wait_watching(self, signals: int, woken: int, previous: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            # A signal on this thread interrupts the select and its handler runs here; one on another thread wakes
            # it through the pipe, and the handler runs as this loop goes round.
            ready, _, _ = select.select([signals, woken], [], [], remaining)
            if signals in ready:
                _pass_on(signals, previous)
        return True


# The descriptors of the waits in progress: a process forked meanwhile (a worker) closes its copies.
_WAITING: set[tuple[int, int, int, int]] = set()


def _forget_waits() -> None:
    ours = {fd for fds in _WAITING for fd in fds}
    if ours:
        try:
            current = signal.set_wakeup_fd(-1)
            if current not in ours:
                signal.set_wakeup_fd(current)  # not a wait's: it stays
        except ValueError:
            pass  # not the main interpreter
    for fds in list(_WAITING):
        for fd in set(fds):
            try:
                os.close(fd)
            except OSError:
                pass
    _WAITING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_waits)


def _pass_on(r: int, previous: int) -> None:
    try:
        data = os.read(r, 4096)
    except (BlockingIOError, InterruptedError):
        return
    if previous >= 0 and data:
        try:
            os.write(previous, data)
        except OSError:
            pass  # full or closed: as the C handler itself does, a wakeup that cannot be written is dropped


def wake_pair() -> tuple[int, int]:
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


def wake_write(fd: int) -> None:
    try:
        os.write(fd, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except (BlockingIOError, InterruptedError):
        pass  # already readable: the loop will wake
    except OSError:
        pass  # closed during shutdown
