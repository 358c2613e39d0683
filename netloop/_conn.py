"""Connections: ``Conn``, its fields and state, its reading methods and the first steps of a write.

The rest of its methods live with their concern and are attached to the class here: the read path
(``_conn_read``), the write path's buffering and flushing (``_conn_write``), closing (``_conn_close``), what any thread
may ask (``_conn_threads``), deadlines (``_conn_deadlines``) and socket options (``_sockopts``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from netloop import _conn_close as conn_close
from netloop import _conn_deadlines as conn_deadlines
from netloop import _conn_read as conn_read
from netloop import _conn_threads as conn_threads
from netloop import _conn_write as conn_write
from netloop import _sockopts as sockopts
from netloop._buffer import flat
from netloop._compiled import HOT_FIELDS, speedups
from netloop._conn_shared import (
    ABOVE_CAP,
    BY_ERROR,
    BY_HANDLER,
    BY_LIMIT,
    BY_PEER,
    BY_SHUTDOWN,
    BY_TIMEOUT,
    CAUSES,
    DRAIN_WAITERS,
    IOV_MAX,
    NO_INBOUND,
    NO_OUTBOUND,
    PARKED,
    PAUSED_BY_INBOUND,
    PAUSED_BY_PRESSURE,
    PAUSED_BY_TASK,
    PAUSED_BY_USER,
    PRESSURE,
    READ_HELD,
    READS_PER_ROUND,
    Buffer,
    Callback,
    cause_of,
    frozen,
)
from netloop._errors import (
    ConnClosedError,
    ShortBufferError,
)
from netloop._lifecycle import (
    CLOSED,
    DISCARD,
    DROP,
    FINISHED,
    OPEN,
    READS,
    REFUSE,
    SEND,
    SENDS,
    STATE_NAMES,
    WRITES,
    next_state,
)
from netloop._poller import IN, OUT

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop, Timer
    from netloop._handler import EventHandler
    from netloop._loop_api import EventLoop as EventLoopProtocol
    from netloop._proxy_parse import ProxyInfo
    from netloop._tls import TlsInfo


# What the connection's modules share stays importable from here.
__all__ = [
    "ABOVE_CAP",
    "BY_ERROR",
    "BY_HANDLER",
    "BY_LIMIT",
    "BY_PEER",
    "BY_SHUTDOWN",
    "BY_TIMEOUT",
    "CAUSES",
    "DRAIN_WAITERS",
    "IOV_MAX",
    "NO_INBOUND",
    "NO_OUTBOUND",
    "PARKED",
    "PAUSED_BY_INBOUND",
    "PAUSED_BY_PRESSURE",
    "PAUSED_BY_TASK",
    "PAUSED_BY_USER",
    "PRESSURE",
    "READS_PER_ROUND",
    "READ_HELD",
    "Buffer",
    "Callback",
    "Conn",
    "cause_of",
    "frozen",
]

# The fields the hot path touches: slots of ``Conn`` in the pure-Python core, members of the compiled base type
# (``netloop._speedups.ConnCore``) otherwise. Declared with the rest of what the two cores share, in _compiled.
_HOT_FIELDS = HOT_FIELDS

if TYPE_CHECKING:
    _ConnBase = object
else:
    _ConnBase = object if speedups is None else speedups.ConnCore


class Conn(_ConnBase):
    """One connection (TCP or Unix stream; a UDP datagram's sender is a ``Conn`` too).

    Methods documented as *loop* may only be called on the connection's event loop, from a callback; the
    ``async_*``, ``wake`` and ``close`` methods may be called from any thread. Bytes returned by the reading
    methods are fresh ``bytes``: they never change after the callback returns.
    """

    __slots__ = (
        "__weakref__",
        "_close_callbacks",
        "_closer",
        "_deadlines",
        "_err",
        "_handler",
        "_local",
        "_mask",
        "_message",
        "_message_timer",
        "_pause",
        "_proxy",
        "_remote",
        "_sock",
        "_timer",
        "context",
        *(() if speedups is not None else _HOT_FIELDS),
    )

    # Whether a read shorter than asked means the socket is empty. Level-triggered, it does: the poller reports the
    # socket again if a FIN came with the bytes. Edge-triggered, one edge came for both: read until the socket says.
    _short_read_empties: bool = True
    # Whether the loop may run this connection's plain readable events through its inlined stream read path.
    _inline: bool = True
    # The state a new connection of this class begins in (dialing and TLS connections begin before they open).
    _initial: int = OPEN

    def __init__(self, loop: EventLoop, sock: socket.SocketType, remote: Any) -> None:
        self.context: Any = None
        self._loop = loop
        self._handler: EventHandler = loop.handler
        self._sock = sock
        self._fd = sock.fileno()
        self._send = sock.send
        self._recv = sock.recv
        # None, or a callable true while input waits where no readiness event reports it (TLS: in OpenSSL).
        self._more: Callable[[], bool] | None = None
        self._data = b""
        self._pos = 0
        self._inbound = NO_INBOUND
        self._outbound = NO_OUTBOUND
        self._state = self._initial
        self._pause = 0
        self._mask = 0
        self._timer: Timer | None = None
        self._err: BaseException | None = None
        self._remote = remote
        self._local: Any = None
        self._close_callbacks: list[Callback] | None = None
        # Loop time of the last byte either way (idle_timeout, read_timeout): reads, buffered and async sends.
        self._seen = loop.now
        self._deadlines: dict[str, Timer] | None = None
        # start_message: loop time the message in progress began (None: none), and the one timer that checks it.
        self._message: float | None = None
        self._message_timer: Timer | None = None
        # Who ended the connection first when it closes without an error (``BY_PEER``, else the handler's side).
        self._closer = BY_HANDLER
        self._proxy: ProxyInfo | None = None

    def __repr__(self) -> str:
        return f"<netloop.Conn fd={self._fd} remote={self._remote!r} {STATE_NAMES[self._state]}>"

    def _to(self, event: str) -> int:
        """Make the transition the lifecycle table lists for ``event`` in the current state; returns the new state.

        ``LifecycleError`` for one it does not list. A transition to CLOSED goes through ``_close`` instead.
        """
        self._state = state = next_state(self._state, event)
        return state

    # -- identity and state ------------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return -1 if FINISHED[self._state] else self._fd

    @property
    def event_loop(self) -> EventLoopProtocol:
        """The event loop that owns this connection (the ``netloop.EventLoop`` protocol)."""
        return self._loop

    @property
    def closed(self) -> bool:
        """True once the connection is finished for the handler: from its ``on_close`` on.

        A connection this side closed is finished once its outbound bytes and our FIN are sent; the core may keep
        its descriptor a while longer for the peer's EOF (``linger_timeout``), discarding what it still sends.
        """
        return FINISHED[self._state]

    @property
    def tls(self) -> TlsInfo | None:
        """None on plaintext; on TLS, what the handshake negotiated (version, cipher, ALPN, SNI, peer cert)."""
        return None

    @property
    def remote_addr(self) -> Any:
        """The peer's address as the socket module gives it (``(host, port)``, a path, ...).

        Behind a proxy that sent a PROXY header (``proxy_protocol``), the client's address the header names.
        """
        return self._remote

    @property
    def proxy_info(self) -> ProxyInfo | None:
        """The PROXY protocol header this connection began with (``proxy_protocol``), else None."""
        return self._proxy

    @property
    def local_addr(self) -> Any:
        """This end's address as the socket module gives it."""
        if self._local is None and self._state != CLOSED:
            self._local = self._sock.getsockname()
        return self._local

    # -- readiness: one call per event that the loop's inlined read path does not take ----------------------

    # Defined in netloop/_conn_read.py, one concern a module; methods of Conn all the same.
    _on_io = conn_read._on_io
    _delivering = conn_read._delivering
    _wants_read = conn_read._wants_read
    _hang_up = conn_read._hang_up
    _read_on = conn_read._read_on
    _read_failed = conn_read._read_failed
    _more_to_read = conn_read._more_to_read
    _traffic = conn_read._traffic
    _deliver = conn_read._deliver
    _keep_rest = conn_read._keep_rest
    _keep_read = conn_read._keep_read
    _inbound_overflow = conn_read._inbound_overflow
    _hold_inbound = conn_read._hold_inbound
    _inbound_consumed = conn_read._inbound_consumed
    _deliver_held = conn_read._deliver_held
    _act = conn_read._act
    _peer_eof = conn_read._peer_eof
    _fire = conn_read._fire
    _fire_eof = conn_read._fire_eof

    # -- reading (loop) -----------------------------------------------------------------------------------

    # The bytes of the current read are ``_data[_pos:]``. Whatever consumes the last of them empties ``_data``
    # and zeroes ``_pos``, so the read path's check for an unconsumed rest is one truth test.

    def _take(self, n: int) -> int:
        """End of ``n`` bytes of the current read (``n >= 0``). Raises when fewer are buffered."""
        pos = self._pos
        end = pos + n
        if end > len(self._data):
            raise ShortBufferError(f"asked for {n} bytes, {len(self._data) - pos} buffered")
        return end

    def _consumed(self, end: int) -> None:
        if end == len(self._data):
            self._data = b""
            self._pos = 0
        else:
            self._pos = end

    def next(self, n: int = -1) -> bytes:
        """*loop* Consume and return ``n`` bytes (all when ``n < 0``); ``ShortBufferError`` if fewer are there."""
        data = self._data
        if data:
            pos = self._pos
            if n < 0:
                # The common case, the whole read: the received bytes object itself when none was taken before.
                self._data = b""
                if pos:
                    self._pos = 0
                    return data[pos:]
                return data
            end = self._take(n)
            self._consumed(end)
            return data[pos:end]
        # Bytes kept from earlier reads (the current read's bytes are in _data only while none are kept).
        return self._inbound.read(n)

    def peek(self, n: int = -1) -> bytes:
        """*loop* Return ``n`` bytes (all when ``n < 0``) without consuming them."""
        inbound = self._inbound
        if inbound._size:
            return inbound.peek(n)
        pos = self._pos
        if n < 0:
            return self._data[pos:]
        return self._data[pos : self._take(n)]

    def discard(self, n: int = -1) -> int:
        """*loop* Drop ``n`` bytes (all when ``n < 0``); returns how many were dropped."""
        inbound = self._inbound
        if inbound._size:
            return inbound.discard(n)
        pos = self._pos
        end = len(self._data) if n < 0 else self._take(n)
        self._consumed(end)
        return end - pos

    def read_into(self, buf: bytearray | memoryview) -> int:
        """*loop* Move up to ``len(buf)`` buffered bytes into ``buf``; returns how many."""
        inbound = self._inbound
        if inbound._size:
            return inbound.read_into(buf)
        pos = self._pos
        n = min(len(buf), len(self._data) - pos)
        buf[:n] = memoryview(self._data)[pos : pos + n]
        self._consumed(pos + n)
        return n

    def inbound_buffered(self) -> int:
        """*loop* How many inbound bytes are waiting to be consumed."""
        return self._inbound._size or len(self._data) - self._pos

    # -- the write path (loop) ----------------------------------------------------------------------------

    def write(self, data: Buffer) -> int:
        """*loop* Send ``data``: the socket is tried at once and only what the kernel refuses is buffered.

        Returns ``len(data)``. Raises ``ConnClosedError`` on a closed connection (or after ``shutdown_write``).
        A send error, or passing ``write_buffer_limit``, closes the connection after this callback with that error;
        until then writes are dropped and return 0 (the connection is ``failing``: docs/lifecycle.md).
        Any buffer is taken; what is counted and returned is always bytes (a memoryview of 4-byte items counts 4).
        """
        if type(data) is not bytes and type(data) is not bytearray:
            data = flat(data)
        if self._outbound._size or not SENDS[self._state]:
            return self._enqueue(data)
        try:
            sent = self._send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            return self._write_failed(exc, data)
        loop = self._loop
        loop.bytes_out += sent
        self._seen = loop.now
        n = len(data)
        if sent < n:
            self._buffer_rest(data, sent)
        return n

    def _write_failed(self, exc: OSError, data: Buffer) -> int:
        """``write``'s send raised ``exc``: the connection fails with it (after this callback); returns what the
        write reports taken (nothing)."""
        self._fail_soon(exc)
        return 0

    def writev(self, chunks: Sequence[Buffer]) -> int:
        """*loop* Send several buffers with one gather write when possible; returns the total length."""
        if len(chunks) == 1:
            return Conn.write(self, chunks[0])
        for chunk in chunks:
            if type(chunk) is not bytes and type(chunk) is not bytearray:
                chunks = [flat(c) for c in chunks]
                break
        total = 0
        for chunk in chunks:
            total += len(chunk)
        if self._outbound._size or not SENDS[self._state]:
            taken = 0
            for chunk in chunks:
                taken += self._enqueue(chunk)  # 0 for each once the connection is failing
            return taken
        try:
            # One gather write takes at most IOV_MAX buffers; the rest is buffered for the next one.
            sent = self._sock.sendmsg(chunks if len(chunks) <= IOV_MAX else chunks[:IOV_MAX])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail_soon(exc)
            return 0
        loop = self._loop
        loop.bytes_out += sent
        self._seen = loop.now
        if sent < total:
            for chunk in chunks:
                size = len(chunk)
                if sent >= size:
                    sent -= size
                    continue
                self._buffer_rest(chunk, sent)
                sent = 0
        return total

    def _enqueue(self, data: Buffer) -> int:
        if type(data) is memoryview:
            data = flat(data)  # from the compiled write
        state = self._state
        writes = WRITES[state]
        if writes == REFUSE:
            what = "connection" if state == CLOSED else f"{STATE_NAMES[state]} connection"
            raise ConnClosedError(f"write on {what} {self!r}")
        if writes == DROP:
            return 0  # a send already failed; the connection is closing with that error
        if not self._outbound._size and writes == SEND:
            return Conn.write(self, data) if len(data) else 0
        self._buffer_rest(data, 0)
        return len(data)

    # Defined in netloop/_conn_write.py, one concern a module; methods of Conn all the same.
    _buffer_rest = conn_write._buffer_rest
    flush = conn_write.flush
    _flush = conn_write._flush
    _send_buffered = conn_write._send_buffered
    _send_failed = conn_write._send_failed
    _sent_buffered = conn_write._sent_buffered
    _drained = conn_write._drained
    _fire_drain = conn_write._fire_drain
    _flushed = conn_write._flushed
    _linger = conn_write._linger
    _peer_has_all = conn_write._peer_has_all
    _shut_wr = conn_write._shut_wr
    outbound_buffered = conn_write.outbound_buffered
    send_to = conn_write.send_to
    shutdown_write = conn_write.shutdown_write

    # -- readiness interest: level-triggered here, EdgeConn overrides --------------------------------------

    def _update_interest(self) -> None:
        """Ask the poller for what the state needs: reads unless held, writes while buffered.

        The one place that computes the interest mask, and that tells the loop's inlined read path whether this
        connection's readable events are its to take.
        """
        state = self._state
        if state == CLOSED:
            return
        deliver = self._delivering()
        mask = (IN if deliver or READS[state] == DISCARD else 0) | (OUT if self._outbound._size else 0)
        loop = self._loop
        if self._inline and loop.inline_reads:
            loop.readers[self._fd] = self if deliver else None
        old = self._mask
        if mask != old:
            if old == PARKED:
                if not mask:
                    return
                loop.poller.register(self._fd, mask)
            else:
                loop.poller.modify(self._fd, mask)
            self._mask = mask

    def _resume(self) -> None:
        self._update_interest()

    def pause_reading(self) -> None:
        """*loop* Stop reading this connection until ``resume_reading`` (flow control between connections).

        Inbound bytes then wait in the kernel, so a fast sender is slowed by TCP itself.
        """
        if not self._pause & PAUSED_BY_USER:
            self._pause |= PAUSED_BY_USER
            self._update_interest()

    def resume_reading(self) -> None:
        """*loop* Undo ``pause_reading``."""
        if self._pause & PAUSED_BY_USER:
            self._pause &= ~PAUSED_BY_USER
            self._resume()
            if self._pause & PAUSED_BY_INBOUND:
                self._loop.call_soon(self._deliver_held)

    # -- closing ------------------------------------------------------------------------------------------

    # Defined in netloop/_conn_close.py, one concern a module; methods of Conn all the same.
    _close_request = conn_close._close_request
    _finish = conn_close._finish
    _arm_deadline = conn_close._arm_deadline
    _deadline = conn_close._deadline
    _fail_soon = conn_close._fail_soon
    _close = conn_close._close
    _cancel_deadlines = conn_close._cancel_deadlines
    _report_closed = conn_close._report_closed

    # -- from any thread ----------------------------------------------------------------------------------

    # Defined in netloop/_conn_threads.py, one concern a module; methods of Conn all the same.
    async_write = conn_threads.async_write
    async_writev = conn_threads.async_writev
    _write_task = conn_threads._write_task
    wake = conn_threads.wake
    _wake_task = conn_threads._wake_task
    close = conn_threads.close
    _close_task = conn_threads._close_task

    # -- deadlines (loop) ---------------------------------------------------------------------------------------

    # Defined in netloop/_conn_deadlines.py, one concern a module; methods of Conn all the same.
    set_deadline = conn_deadlines.set_deadline
    set_read_deadline = conn_deadlines.set_read_deadline
    set_write_deadline = conn_deadlines.set_write_deadline
    _set_deadline = conn_deadlines._set_deadline
    start_message = conn_deadlines.start_message
    end_message = conn_deadlines.end_message
    _message_due = conn_deadlines._message_due
    _deadline_passed = conn_deadlines._deadline_passed

    # -- socket options -----------------------------------------------------------------------------------

    # Defined in netloop/_sockopts.py, one concern a module; methods of Conn all the same.
    set_no_delay = sockopts.set_no_delay
    set_keep_alive = sockopts.set_keep_alive
    set_read_buffer = sockopts.set_read_buffer
    set_write_buffer = sockopts.set_write_buffer
    set_linger = sockopts.set_linger
