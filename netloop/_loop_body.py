"""The loop's body: ``poll → dispatch by fd → queued tasks → due timers``, in Python or handed to the compiled loop.

The one function here is ``EventLoop._serve`` (netloop/_eventloop.py attaches it). Its plain "readable" case is the
sanctioned inlined copy of ``Conn._read_on``/``_traffic``/``_deliver``, as the C ``read_event`` is.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from netloop import _compiled
from netloop._poller import IN
from netloop._poller.epoll import EpollPoller

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop


def serve(self: EventLoop) -> None:
    monotonic = time.monotonic
    now = self.now = monotonic()
    if self.timeouts is not None:
        self.timeouts.start(now)
    compiled_serve = getattr(_compiled.speedups, "serve", None)  # None on the pure core, or where it fell back
    if compiled_serve is not None and isinstance(self.poller, EpollPoller) and _gil_enabled():
        # The compiled loop (netloop/_speedups.c): the rest of this method, in C, on the epoll descriptor.
        compiled_serve(
            self,
            self.poller.fileno(),
            self.readers,
            self._handlers,
            self._tasks,
            self._timers,
            self.read_size,
            self.handler.on_traffic,
        )
        return
    poll = self.poller.poll
    tasks = self._tasks
    timers = self._timers
    handlers = self._handlers
    readers = self.readers
    size = self.read_size
    on_traffic = self.handler.on_traffic
    # With the GIL, "announce sleep, then look at the queue" is ordered without a lock; free-threaded
    # builds take the lock that submit() takes, so a task queued in between is never missed.
    lock = self._wake_lock if not _gil_enabled() else None
    while self._running:
        timeout = -1.0
        if timers:
            now = self.now = monotonic()
            if timers[0][0] <= now:
                self._run_timers(now)
            if timers:
                timeout = timers[0][0] - now
                if timeout < 0.0:
                    timeout = 0.0
        if lock is None:
            self._sleeping = True
            if tasks:
                timeout = 0.0
        else:
            with lock:
                self._sleeping = True
                if tasks:
                    timeout = 0.0
        events = poll(timeout)
        self._sleeping = False
        received = 0
        # The sanctioned fast copy of ``Conn._read_on``/``_traffic``/``_deliver`` (one read per event; the C
        # ``read_event`` in netloop/_speedups.c is the other): change the three together.
        for fd, ev in events:
            try:
                try:
                    conn = readers[fd]
                except KeyError:
                    continue  # detached by an earlier event of this batch
                if conn is None or ev != IN:
                    handler = handlers.get(fd)
                    if handler is not None:
                        handler(ev)
                    continue
                try:
                    data = conn._recv(size)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    conn._read_failed(exc)
                    continue
                if not data:
                    conn._peer_eof()
                    continue
                conn._seen = now
                received += len(data)
                if conn._inbound._size:
                    if not conn._keep_read(data):
                        continue  # closed by inbound_limit, or shown the bytes at inbound_cap
                else:
                    conn._data = data
                try:
                    action = on_traffic(conn)
                except Exception as exc:
                    conn._data = b""
                    conn._pos = 0
                    self.handler_failed(conn, "on_traffic", exc)
                    continue
                if conn._data:
                    conn._keep_rest()
                if action:
                    conn._act(action)
                more = conn._more
                if more is not None and more():
                    conn._read_on()  # input no readiness event reports (TLS records OpenSSL read ahead)
            except Exception as exc:
                self._internal_error(exc, fd)
        if received:
            self.bytes_in += received
        if tasks:
            self._run_tasks()


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())
