"""How a loop stops: a graceful drain (answer, flush, close each connection), then its teardown.

Each function here is a method of ``EventLoop`` (netloop/_eventloop.py attaches them to the class).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from netloop._conn import (
    BY_SHUTDOWN,
)
from netloop._errors import EngineStoppedError
from netloop._lifecycle import LINGERING

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop

# A lingering connection quiet this long (no byte either way) during a graceful stop is closed without its EOF.
_LINGER_IDLE = 0.05
# How many rounds of queued tasks a stopping loop runs before it gives up on a task that requeues itself.
_TEARDOWN_ROUNDS = 1000


def drain(self: EventLoop, deadline: float) -> None:
    """Stop: answer what each connection's kernel buffer holds, then close it gracefully (flush, FIN, lingering).

    With ``drain_timeout`` the connections are first served on for that long, so that a handler told by
    ``on_shutdown`` can close each at a message boundary (an HTTP server's ``Connection: close``). The loop
    returns once no connection is left, or at the deadline.
    """
    self._draining = True
    self._drop_pending()
    grace = self.options.drain_timeout
    if grace > 0 and self.conns:
        self.call_later(grace, self._finish_all, deadline)
    else:
        self._finish_all(deadline)
    if self.conns:
        # Also through the grace: a connection its handler closed meanwhile, whose client stays idle, ends the stop.
        self.call_later(_LINGER_IDLE / 2, self._release_lingering)


def _finish_all(self: EventLoop, deadline: float) -> None:
    for conn in list(self.conns.values()):
        conn._finish()
    if self.conns:
        self.call_later(max(0.0, deadline - time.monotonic()), self._abort_all)
    else:
        self._leave()


def _release_lingering(self: EventLoop) -> None:
    """Graceful stop: a lingering connection whose peer took every byte and went quiet holds the stop no longer.

    The handler heard of its close already; waiting ``linger_timeout`` for the EOF of an idle client (a browser's
    kept-alive connection, a terminal left open) would only delay the stop. A peer still sending is waited for.
    """
    if not self._running:
        return
    now = self.clock()
    for conn in list(self.conns.values()):
        if conn._state == LINGERING and now - conn._seen >= _LINGER_IDLE and conn._peer_has_all():
            conn._close(None)
    if self.conns:
        self.call_later(_LINGER_IDLE / 2, self._release_lingering)


def _drop_pending(self: EventLoop) -> None:
    """Close the connections still sending their PROXY header: the handler never knew of them."""
    for reader in list(self.pending.values()):
        reader.fail(EngineStoppedError("netloop: the engine stopped before the PROXY header was read"), BY_SHUTDOWN)


def _abort_all(self: EventLoop) -> None:
    for conn in list(self.conns.values()):
        conn._close(TimeoutError("netloop: shutdown timed out before the outbound bytes were flushed"))
    self._leave()


def _teardown(self: EventLoop) -> None:
    self._running = False
    with self._wake_lock:
        self._stopped.set()  # from here submit() refuses: every task it took is in the queue
    self._drop_pending()
    for conn in list(self.conns.values()):
        conn._close(EngineStoppedError("netloop: event loop stopped"))
    for fd in list(self._handlers):
        self.detach(fd)
    # Tasks queued before the queue closed still run, so their callbacks learn the connection is closed;
    # so do the tasks those queue with call_soon (bounded, against a task that requeues itself forever).
    for _ in range(_TEARDOWN_ROUNDS):
        if not self._tasks:
            break
        self._run_tasks()
    if self._tasks:
        self.log.error("netloop: %d tasks kept requeueing on stopped event loop %d", len(self._tasks), self.index)
    self.poller.close()
    for fd in {self._wake_r, self._wake_w}:
        try:
            os.close(fd)
        except OSError:
            pass
    self._timers.clear()
