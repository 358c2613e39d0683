"""Waking a loop: the eventfd (or pipe) other threads write to, and the signal pipe of a loop on the main thread."""

from __future__ import annotations

import os
import signal
import threading
from typing import TYPE_CHECKING

from netloop._poller import IN

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop


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
        r, w = os.pipe()
        try:
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main interpreter
            os.close(r)
            os.close(w)
            return None
        return cls(loop, r, w, previous)

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
