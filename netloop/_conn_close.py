"""How a ``Conn`` closes: gracefully (flush, FIN, linger) or at once, and who hears of it.

Each function here is a method of ``Conn`` (netloop/_conn.py attaches them to the class): one concern a file.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from netloop._conn_shared import (
    BY_PEER,
    BY_SHUTDOWN,
    NO_INBOUND,
    NO_OUTBOUND,
    cause_of,
)
from netloop._lifecycle import (
    CLOSE,
    CLOSE_NOW,
    CLOSED,
    ERROR,
    LINGER_TIMEOUT,
    LINGERING,
    next_state,
)

if TYPE_CHECKING:
    from netloop._conn import Conn


def _close_request(self: Conn, err: BaseException | None) -> None:
    """Close gracefully: input is discarded, outbound flushed, then our FIN, then the peer's EOF (lingering).

    Never a reset while the peer may still read what we sent. Every step has the ``linger_timeout`` deadline.
    """
    if err is not None and self._err is None:
        self._err = err
    state = self._state
    after = next_state(state, CLOSE)
    if after == state:
        return  # closing already
    if after == CLOSED:
        self._close(self._err)
    elif after == LINGERING:
        self._linger(CLOSE)  # our FIN is sent already
    else:
        self._to(CLOSE)
        if not self._outbound._size:
            self._flushed()
            return
        self._update_interest()
        self._arm_deadline()


def _finish(self: Conn) -> None:
    """Graceful stop: show ``on_traffic`` what the kernel already holds, then close gracefully."""
    if self._delivering():
        self._read_on()
    self._close_request(None)


def _arm_deadline(self: Conn) -> None:
    loop = self._loop
    if self._timer is not None:
        self._timer.cancel()
    self._timer = loop.call_later(loop.linger, self._deadline, self._outbound._size)


def _deadline(self: Conn, outbound_then: int) -> None:
    self._timer = None
    state = self._state
    if next_state(state, LINGER_TIMEOUT) != CLOSED:
        return  # the pending error closes it
    if state == LINGERING:
        self._close(self._err)  # all we had was sent; the peer did not end in time
    else:
        if self._outbound._size < outbound_then:
            self._arm_deadline()  # still draining
            return
        self._close(
            TimeoutError(
                errno.ETIMEDOUT,
                f"netloop: closing connection sent nothing for linger_timeout={self._loop.linger}s",
            )
        )


def _fail_soon(self: Conn, exc: BaseException) -> None:
    # A send failed inside a callback: close after it returns, never under the user's feet.
    if self._err is None:
        exc.__traceback__ = None  # its frames hold this connection and its buffers: a cycle only a full gc frees
        self._err = exc
        if self._outbound._size > self._loop.high_water:
            self._loop.heap_released()
        self._outbound = NO_OUTBOUND
        self._to(ERROR)  # reads stop and writes are dropped until the close
        self._loop.call_soon(self._close, exc)


def _close(self: Conn, err: BaseException | None) -> None:
    """Close the descriptor; unless the handler heard of it when the lingering began, ``on_close`` too."""
    state = self._state
    if state == CLOSED:
        return
    self._to(CLOSE_NOW)
    if self._timer is not None:
        self._timer.cancel()
        self._timer = None
    self._cancel_deadlines()
    loop = self._loop
    if state == LINGERING:
        loop.lingering -= 1  # before the release: a reader on another thread may count it twice, never not at all
    loop.detach_conn(self)
    try:
        self._sock.close()
    except OSError:
        pass
    if self._outbound._size > loop.high_water:
        loop.heap_released()
    self._inbound = NO_INBOUND
    self._outbound = NO_OUTBOUND
    self._data = b""
    self._pos = 0
    if state == LINGERING:
        loop.conn_dropped()  # counted and reported when the lingering began
        return
    self._report_closed(err)


def _cancel_deadlines(self: Conn) -> None:
    if self._deadlines:
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines = None
    if self._message_timer is not None:
        self._message_timer.cancel()
        self._message_timer = None
    self._message = None


def _report_closed(self: Conn, err: BaseException | None) -> None:
    """The connection is finished for the handler: count it, fire ``on_close`` and the ``close()`` callbacks."""
    loop = self._loop
    if err is None:
        loop.closed_by[BY_SHUTDOWN if loop._draining and self._closer != BY_PEER else self._closer] += 1
    else:
        loop.closed_by[cause_of(err)] += 1
    loop.conn_closed(self, err)
    callbacks = self._close_callbacks
    if callbacks:
        self._close_callbacks = None
        for callback in callbacks:
            loop.run_callback(callback, self, err)
