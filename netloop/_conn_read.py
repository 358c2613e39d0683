"""The read path of ``Conn``: readiness, one ``recv`` at a time, ``on_traffic`` and what it leaves.

Each function here is a method of ``Conn`` (netloop/_conn.py attaches them to the class): one concern a file.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import TYPE_CHECKING

from netloop import _async_hooks
from netloop._buffer.ring import RingBuffer
from netloop._conn_shared import (
    BY_PEER,
    NO_INBOUND,
    PARKED,
    PAUSED_BY_INBOUND,
    READ_HELD,
    READS_PER_ROUND,
)
from netloop._errors import (
    InboundLimitError,
)
from netloop._handler import Action
from netloop._lifecycle import (
    CLOSED,
    DELIVER,
    DISCARD,
    OPEN,
    PEER_FIN,
    READS,
    next_state,
)
from netloop._poller import ERR, HUP, OUT, READABLE

if TYPE_CHECKING:
    from netloop._conn import Conn


def _on_io(self: Conn, ev: int) -> None:
    if ev & OUT:
        if self._outbound._size:
            self._flush(False)
        if self._state == CLOSED:
            return
    if ev & READABLE:
        self._read_on()
        if ev & (ERR | HUP) and self._state != CLOSED and not self._wants_read():
            self._hang_up(ev)


def _delivering(self: Conn) -> bool:
    """Reads are shown to ``on_traffic`` now: the state shows them and no pause holds them."""
    return READS[self._state] == DELIVER and not self._pause & READ_HELD


def _wants_read(self: Conn) -> bool:
    """The socket is to be read now: to show ``on_traffic``, or to discard while closing."""
    return READS[self._state] == DISCARD or self._delivering()


def _hang_up(self: Conn, ev: int) -> None:
    """ERR or HUP on a connection that is not reading: the poller reports it whatever the interest mask."""
    if ev & ERR or READS[self._state] != DELIVER:
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.ECONNRESET
        self._close(OSError(code, os.strerror(code)))
        return
    # Both directions ended while the user holds reading: wait off the poller, unread bytes kept, until
    # resume_reading (which reads them and the EOF).
    self._mask = PARKED
    self._loop.poller.unregister(self._fd)


def _read_on(self: Conn) -> None:
    """Read until a short read, a pause or a state change; ``READS_PER_ROUND`` reads at most."""
    size = self._loop.read_size
    for _ in range(READS_PER_ROUND):
        if not self._wants_read():
            return
        reads = READS[self._state]
        try:
            data = self._recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._read_failed(exc)
            return
        if not data:
            self._peer_eof()
            return
        loop = self._loop
        self._seen = loop.now
        loop.bytes_in += len(data)
        if reads == DELIVER:
            self._traffic(data)
        if len(data) < size and self._short_read_empties:
            return  # the socket is empty (edge-triggered, it may still hold the FIN: read on until it says so)
    self._more_to_read()


def _read_failed(self: Conn, exc: OSError) -> None:
    """A read raised ``exc`` (``_read_on`` and the loops' inlined copies of it hand it here): the connection closes
    with it."""
    self._close(exc)


def _more_to_read(self: Conn) -> None:
    # Level-triggered: the poller reports the socket again.
    pass


def _traffic(self: Conn, data: bytes) -> None:
    """Show ``data``, just read, to ``on_traffic``; keep what it leaves unconsumed.

    ``EventLoop._serve`` and the C ``read_event`` carry inlined copies of ``_read_on``, this and ``_deliver``.
    """
    if self._inbound._size:
        if self._keep_read(data):
            self._deliver()
        return
    self._data = data
    self._deliver()


def _deliver(self: Conn) -> Exception | None:
    """Call ``on_traffic``, keep what it left unconsumed, apply its action; returns what it raised.

    The one helper every kind of connection (stream, datagram, client) shows its bytes through.
    """
    try:
        action = self._handler.on_traffic(self)
    except Exception as exc:
        self._data = b""
        self._pos = 0
        self._loop.handler_failed(self, "on_traffic", exc)
        return exc
    if self._data:
        self._keep_rest()
    if action:
        self._act(action)
    return None


def _keep_rest(self: Conn) -> None:
    """Copy the unconsumed rest of the current read into the connection's own buffer.

    Within ``inbound_limit`` (else the connection closes); holding ``inbound_cap`` bytes pauses reading.
    """
    inbound = self._inbound
    data = self._data
    pos = self._pos
    self._data = b""
    self._pos = 0
    size = inbound._size + len(data) - pos
    loop = self._loop
    if loop.inbound_limit and size > loop.inbound_limit:
        self._inbound_overflow(size)
        return
    if inbound is NO_INBOUND:
        self._inbound = inbound = RingBuffer()
    inbound.write(memoryview(data)[pos:] if pos else data)
    if loop.inbound_cap and size >= loop.inbound_cap:
        self._hold_inbound()


def _keep_read(self: Conn, data: bytes) -> bool:
    """Append a read to the bytes already kept; True when the caller is to show them to ``on_traffic``.

    The loops' inlined read paths (``EventLoop._serve``, C ``read_event``) call this too. False: the
    connection closed (``inbound_limit``), or reached ``inbound_cap`` and was shown the bytes here.
    """
    inbound = self._inbound
    size = inbound._size + len(data)
    loop = self._loop
    if loop.inbound_limit and size > loop.inbound_limit:
        self._inbound_overflow(size)
        return False
    inbound.write(data)
    if loop.inbound_cap and size >= loop.inbound_cap:
        self._hold_inbound()
        self._deliver_held()
        return False
    return True


def _inbound_overflow(self: Conn, size: int) -> None:
    limit = self._loop.inbound_limit
    self._close(InboundLimitError(f"{self!r}: {size} unconsumed inbound bytes would pass inbound_limit={limit}"))


def _hold_inbound(self: Conn) -> None:
    """The handler holds ``inbound_cap`` unconsumed bytes: stop reading until it consumes down to half of it."""
    if self._pause & PAUSED_BY_INBOUND:
        return
    loop = self._loop
    self._pause |= PAUSED_BY_INBOUND
    loop.inbound_pauses += 1
    self._inbound.watch(loop.inbound_cap // 2, self._inbound_consumed)  # next(), discard(): in any callback
    self._update_interest()


def _inbound_consumed(self: Conn) -> None:
    if self._pause & PAUSED_BY_INBOUND:
        self._pause &= ~PAUSED_BY_INBOUND
        if self._state != CLOSED:
            self._resume()


def _deliver_held(self: Conn) -> Exception | None:
    """Show held inbound bytes to ``on_traffic`` again, for as long as it consumes some each time.

    No read comes while the cap holds reading: a handler that takes one message per call is called again here,
    until it consumes down to half the cap (reading resumes) or stops consuming (then it calls ``wake()``).
    Nothing while another pause holds reading too: its resume calls this again.
    """
    if self._pause & READ_HELD != PAUSED_BY_INBOUND or READS[self._state] != DELIVER:
        return None
    before = self._inbound._size
    err = self._deliver()
    if self._pause & PAUSED_BY_INBOUND and self._state != CLOSED and self._inbound._size < before:
        self._loop.call_soon(self._deliver_held)
    return err


def _act(self: Conn, action: Action | int) -> None:
    if action == Action.CLOSE:
        self._close_request(None)
    elif action == Action.SHUTDOWN:
        self._loop.engine_stop()
    elif hasattr(action, "__await__"):  # netloop.aio: an async handler's coroutine runs as a task on this loop
        _async_hooks.adopt(self, action)
    else:
        meaningless(self, action)


def meaningless(conn: Conn, value: object) -> None:
    """An event returned what is neither an Action, None nor a coroutine: it is ignored, and said so."""
    conn._loop.log.error(
        "netloop: an event of %r returned %r, which is neither an Action, None nor a coroutine: ignored", conn, value
    )


def _peer_eof(self: Conn) -> None:
    """The peer sent FIN (a read returned no bytes)."""
    state = self._state
    if READS[state] == DELIVER:
        # The handler still reads: the peer ended first, and the handler hears of it (its Action.CLOSE
        # moves us on to the closing twin of the state).
        self._closer = BY_PEER
        if state == OPEN:
            self._to(PEER_FIN)
            self._update_interest()
            self._fire_eof()
            return
        self._fire_eof()
        state = self._state
        if state == CLOSED:
            return
    # Both ends said all they will (or are about to): flush what is left, then close.
    after = next_state(state, PEER_FIN)
    if after == CLOSED:
        self._close(self._err)
    elif after != state:
        self._to(PEER_FIN)
        self._update_interest()


def _fire(self: Conn, event: str) -> Exception | None:
    """Call the handler's ``event`` (``on_eof``, ``on_drain``, ``on_open``) and apply the action it returns.

    A handler that raises closes this connection only (``handler_failed``); returns what it raised. The one
    copy of this idiom besides ``_deliver`` (which also keeps what ``on_traffic`` left unconsumed) and the
    inlined read paths.
    """
    try:
        action = getattr(self._handler, event)(self)
    except Exception as exc:
        self._loop.handler_failed(self, event, exc)
        return exc
    if action:
        self._act(action)
    return None


def _fire_eof(self: Conn) -> None:
    self._fire("on_eof")
