"""Connections: the read path, the write path and the thread-safe operations of ``Conn``."""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from netloop import _async_hooks
from netloop._buffer import flat
from netloop._buffer.elastic import OutboundBuffer
from netloop._buffer.ring import RingBuffer
from netloop._compiled import HOT_FIELDS, speedups
from netloop._errors import (
    ConnClosedError,
    ConnTimeoutError,
    EngineStoppedError,
    InboundLimitError,
    OutboundLimitError,
    ShortBufferError,
)
from netloop._handler import Action
from netloop._lifecycle import (
    CLOSE,
    CLOSE_NOW,
    CLOSED,
    CLOSING,
    DEADLINE,
    DELIVER,
    DISCARD,
    DROP,
    ERROR,
    FINISHED,
    FINISHING,
    FLUSHED,
    LINGER_TIMEOUT,
    LINGERING,
    OPEN,
    PEER_FIN,
    READ_DEADLINE,
    READ_TIMEOUT,
    READS,
    REFUSE,
    SEND,
    SENDS,
    SHUT_WR,
    SHUTTING,
    STATE_NAMES,
    WRITE_DEADLINE,
    WRITES,
    next_state,
)
from netloop._poller import ERR, HUP, IN, OUT, READABLE

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop, Timer
    from netloop._handler import EventHandler
    from netloop._loop_api import EventLoop as EventLoopProtocol
    from netloop._proxy_parse import ProxyInfo
    from netloop._tls import TlsInfo

Buffer = bytes | bytearray | memoryview
Callback = Callable[["Conn", BaseException | None], object]

# The ioctl that tells how much of what a socket sent its peer has not yet taken (SIOCOUTQ), where there is one.
if sys.platform.startswith("linux"):
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
else:
    _OUTQ = None

# Reads stop after this many full reads in one round, so one busy peer can't starve the rest.
READS_PER_ROUND = 16
# The most buffers one gather write (sendmsg) takes.
IOV_MAX = max(16, min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024))


# Shared stand-ins for a connection's buffers while it has nothing kept: never written, replaced by a buffer of the
# connection's own on first use. Most connections never need one, and an idle one then holds no buffer objects.
NO_INBOUND = RingBuffer()
NO_OUTBOUND = OutboundBuffer()


def _frozen(data: Buffer) -> bytes | memoryview:
    """``data`` safe to keep: immutable bytes are kept as they are, anything mutable is copied."""
    return data if type(data) is bytes else bytes(data)


# -- the connection's state: one variable, its table in netloop._lifecycle ----------------------------------------
#
# ``_state`` changes only through ``next_state`` (``Conn._to``); what a read or a write does in a state is read from
# the table's permission tuples (``READS``, ``WRITES``, ``FINISHED``), never from the order of the numbers.
# ``on_close`` fires when a connection enters LINGERING (it is finished for the handler: ``closed`` is true, every
# byte and our FIN are sent), else when it enters CLOSED; LINGERING's end only closes the descriptor.
#
# Reading is also held by the pause bits (the user's, backpressure's, the inbound cap's) in the states that show reads;
# a closing connection reads and discards whatever the pauses, so the peer is never blocked on it. Every closing
# state has a deadline (``linger_timeout``).

# Pause bits: the user's pause_reading(), backpressure (outbound at the high-water mark), and the inbound cap
# (unconsumed inbound at ``inbound_cap``). ABOVE_CAP marks the outbound crossing without holding reading
# (``backpressure_pause=False``): only the drain event waits for it.
PAUSED_BY_USER = 1
PAUSED_BY_PRESSURE = 2
ABOVE_CAP = 4
PAUSED_BY_INBOUND = 8
# netloop.aio: an async handler's task is running; the connection's next events wait for it.
PAUSED_BY_TASK = 16
READ_HELD = PAUSED_BY_USER | PAUSED_BY_PRESSURE | PAUSED_BY_INBOUND | PAUSED_BY_TASK
PRESSURE = PAUSED_BY_PRESSURE | ABOVE_CAP

# netloop.aio: the connections whose coroutines wait in ``drain(conn)``, and what wakes them once drained.
DRAIN_WAITERS: dict[Conn, Callable[[], None]] = {}

# ``_mask`` of a connection taken off the poller: its peer hung up while the user held reading.
PARKED = -1

# Why a connection closed, as the loops count it (``EventLoop.closed_by``, ``engine.stats()``): the peer ended it
# (its FIN first, or a reset), the handler did (``Action.CLOSE``, ``close()``), a timeout, a limit
# (``write_buffer_limit``, ``max_connections``), an error (a socket error, a handler that raised, a failed TLS
# handshake or PROXY header), or the engine's stop.
CAUSES = ("peer", "handler", "timeout", "limit", "error", "shutdown")
BY_PEER, BY_HANDLER, BY_TIMEOUT, BY_LIMIT, BY_ERROR, BY_SHUTDOWN = range(6)


def cause_of(err: BaseException) -> int:
    """The ``CAUSES`` index of a connection closed with ``err``."""
    if isinstance(err, TimeoutError):  # ConnTimeoutError, linger and shutdown deadlines, handshake deadlines
        return BY_TIMEOUT
    if isinstance(err, (OutboundLimitError, InboundLimitError)):
        return BY_LIMIT
    if isinstance(err, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return BY_PEER
    if isinstance(err, EngineStoppedError):
        return BY_SHUTDOWN
    return BY_ERROR


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

    def _on_io(self, ev: int) -> None:
        if ev & OUT:
            if self._outbound._size:
                self._flush(False)
            if self._state == CLOSED:
                return
        if ev & READABLE:
            self._read_on()
            if ev & (ERR | HUP) and self._state != CLOSED and not self._wants_read():
                self._hang_up(ev)

    def _delivering(self) -> bool:
        """Reads are shown to ``on_traffic`` now: the state shows them and no pause holds them."""
        return READS[self._state] == DELIVER and not self._pause & READ_HELD

    def _wants_read(self) -> bool:
        """The socket is to be read now: to show ``on_traffic``, or to discard while closing."""
        return READS[self._state] == DISCARD or self._delivering()

    def _hang_up(self, ev: int) -> None:
        """ERR or HUP on a connection that is not reading: the poller reports it whatever the interest mask."""
        if ev & ERR or READS[self._state] != DELIVER:
            code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.ECONNRESET
            self._close(OSError(code, os.strerror(code)))
            return
        # Both directions ended while the user holds reading: wait off the poller, unread bytes kept, until
        # resume_reading (which reads them and the EOF).
        self._mask = PARKED
        self._loop.poller.unregister(self._fd)

    def _read_on(self) -> None:
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
                self._close(exc)
                return
            if not data:
                self._peer_eof()
                return
            loop = self._loop
            self._seen = loop.now
            loop.bytes_in += len(data)
            if reads == DELIVER:
                self._traffic(data)
            if len(data) < size:
                return  # the socket is empty
        self._more_to_read()

    def _more_to_read(self) -> None:
        # Level-triggered: the poller reports the socket again.
        pass

    def _traffic(self, data: bytes) -> None:
        """Show ``data``, just read, to ``on_traffic``; keep what it leaves unconsumed.

        ``EventLoop._serve`` and the C ``read_event`` carry inlined copies of ``_read_on``, this and ``_deliver``.
        """
        if self._inbound._size:
            if self._keep_read(data):
                self._deliver()
            return
        self._data = data
        self._deliver()

    def _deliver(self) -> Exception | None:
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

    def _keep_rest(self) -> None:
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

    def _keep_read(self, data: bytes) -> bool:
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

    def _inbound_overflow(self, size: int) -> None:
        limit = self._loop.inbound_limit
        self._close(InboundLimitError(f"{self!r}: {size} unconsumed inbound bytes would pass inbound_limit={limit}"))

    def _hold_inbound(self) -> None:
        """The handler holds ``inbound_cap`` unconsumed bytes: stop reading until it consumes down to half of it."""
        if self._pause & PAUSED_BY_INBOUND:
            return
        loop = self._loop
        self._pause |= PAUSED_BY_INBOUND
        loop.inbound_pauses += 1
        self._inbound.watch(loop.inbound_cap // 2, self._inbound_consumed)  # next(), discard(): in any callback
        self._update_interest()

    def _inbound_consumed(self) -> None:
        if self._pause & PAUSED_BY_INBOUND:
            self._pause &= ~PAUSED_BY_INBOUND
            if self._state != CLOSED:
                self._resume()

    def _deliver_held(self) -> Exception | None:
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

    def _act(self, action: Action | int) -> None:
        if action == Action.CLOSE:
            self._close_request(None)
        elif action == Action.SHUTDOWN:
            self._loop.engine_stop()
        elif hasattr(action, "__await__"):  # netloop.aio: an async handler's coroutine runs as a task on this loop
            _async_hooks.adopt(self, action)

    def _peer_eof(self) -> None:
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

    def _fire(self, event: str) -> Exception | None:
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

    def _fire_eof(self) -> None:
        self._fire("on_eof")

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
            self._fail_soon(exc)
            return 0
        loop = self._loop
        loop.bytes_out += sent
        self._seen = loop.now
        n = len(data)
        if sent < n:
            self._buffer_rest(data, sent)
        return n

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

    def _buffer_rest(self, data: Buffer, sent: int) -> None:
        if type(data) is memoryview:
            data = flat(data)  # ``sent`` counts bytes
        out = self._outbound
        loop = self._loop
        limit = loop.write_limit
        if limit and out._size + len(data) - sent > limit:
            self._fail_soon(
                OutboundLimitError(
                    f"{self!r}: {out._size + len(data) - sent} outbound bytes would pass write_buffer_limit={limit}"
                )
            )
            return
        if out is NO_OUTBOUND:
            self._outbound = out = OutboundBuffer()
        was_empty = not out._size
        if sent:
            out.append(memoryview(data)[sent:] if type(data) is bytes else bytes(memoryview(data)[sent:]))
        else:
            out.append(_frozen(data))
        crossed = loop.pressure_bit
        # At the cap, not only past it: a handler that writes until outbound_buffered() >= write_buffer_cap and
        # then waits for on_drain must get it.
        if out._size >= loop.high_water and not self._pause & crossed:
            self._pause |= crossed
            if crossed == PAUSED_BY_PRESSURE:
                loop.pauses += 1
            self._update_interest()
        elif was_empty:
            self._update_interest()

    def flush(self) -> None:
        """*loop* Try to send buffered outbound bytes now; a send error closes the connection after the callback."""
        if self._outbound._size and self._state != CLOSED:
            self._flush(True)

    def _flush(self, in_callback: bool) -> None:
        if self._send_buffered(in_callback):
            self._sent_buffered()

    def _send_buffered(self, in_callback: bool) -> bool:
        """Gather-write buffered bytes until the kernel refuses; False when a send error ended the connection."""
        out = self._outbound
        sendmsg = self._sock.sendmsg
        while out._size:
            chunks = out.chunks()
            try:
                sent = sendmsg(chunks)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._send_failed(exc, in_callback)
                return False
            out.advance(sent)
            loop = self._loop
            self._seen = loop.now
            loop.bytes_out += sent
            if out._size and sent < sum(len(c) for c in chunks):
                break
        return True

    def _send_failed(self, exc: OSError, in_callback: bool) -> None:
        if in_callback:
            self._fail_soon(exc)
        else:
            self._close(exc)

    def _sent_buffered(self) -> None:
        """After a flush: resume reading below the low-water mark, send the FIN or close once drained."""
        out = self._outbound
        pause = self._pause
        if out._size:
            if pause & PRESSURE and out._size <= self._loop.low_water:
                self._drained(pause)
            return
        self._outbound = NO_OUTBOUND  # drained: an idle connection holds no buffer
        if self._state in (CLOSING, SHUTTING, FINISHING):
            self._flushed()
        elif pause & PRESSURE:
            self._drained(pause)
        else:
            self._update_interest()

    def _drained(self, pause: int) -> None:
        """Outbound fell to the low-water mark after passing the high-water mark: read again, tell the handler."""
        self._pause = pause & ~PRESSURE
        self._resume()
        if pause & PAUSED_BY_INBOUND:
            self._loop.call_soon(self._deliver_held)
        if DRAIN_WAITERS:  # netloop.aio: wake the coroutines waiting in drain(conn)
            waiter = DRAIN_WAITERS.pop(self, None)
            if waiter is not None:
                waiter()
        self._loop.heap_released()
        self._loop.call_soon(self._fire_drain)

    def _fire_drain(self) -> None:
        if SENDS[self._state]:  # else closing, shut or failed: the handler writes no more
            self._fire("on_drain")

    def _flushed(self) -> None:
        """Outbound is flushed in CLOSING, SHUTTING or FINISHING: our FIN goes out, or the descriptor closes."""
        if next_state(self._state, FLUSHED) == CLOSED:
            self._close(self._err)
            return
        try:
            self._shut_wr()
        except OSError as exc:
            self._close(exc if self._err is None else self._err)
            return
        if self._state == SHUTTING:
            self._to(FLUSHED)
            self._update_interest()
        else:
            self._linger(FLUSHED)

    def _linger(self, event: str) -> None:
        """Our FIN is sent and the handler is done: tell it now (``on_close``), then wait for the peer's EOF.

        Until the EOF or ``linger_timeout`` the descriptor stays open and what the peer sends is discarded, so
        it reads what we sent before it learns of the close (never a reset under its unread bytes).
        """
        self._to(event)
        self._loop.lingering += 1
        self._cancel_deadlines()  # the user's: from here only linger_timeout (or the peer) ends it
        self._update_interest()
        self._arm_deadline()
        self._report_closed(self._err)

    def _peer_has_all(self) -> bool:
        """Every byte we sent, our FIN included, is acknowledged (TCP) or read (Unix) by the peer.

        Linux's SIOCOUTQ; where the kernel cannot tell, False (the lingering runs its course).
        """
        if _OUTQ is None:
            return False
        try:
            unsent: int = struct.unpack("i", fcntl.ioctl(self._fd, _OUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return False
        return unsent == 0

    def _shut_wr(self) -> None:
        self._sock.shutdown(socket.SHUT_WR)

    def outbound_buffered(self) -> int:
        """*loop* How many bytes wait for the kernel to take them."""
        return self._outbound._size

    def send_to(self, data: Buffer, addr: Any) -> int:
        """*loop* Send a datagram to ``addr`` (UDP only)."""
        raise TypeError("send_to is for UDP connections")

    def shutdown_write(self) -> None:
        """*loop* Send our FIN once the buffered outbound bytes are flushed; reading goes on.

        Later writes raise ``ConnClosedError``. When the peer's EOF comes too, the connection closes.
        """
        state = self._state
        if FINISHED[state]:
            raise ConnClosedError(f"shutdown_write on closed connection {self!r}")
        after = next_state(state, SHUT_WR)
        if after == FINISHING:
            self._close_request(None)  # the peer's FIN came already: as a close
        elif after != state:
            self._to(SHUT_WR)
            if not self._outbound._size:
                self._flushed()

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

    def _close_request(self, err: BaseException | None) -> None:
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

    def _finish(self) -> None:
        """Graceful stop: show ``on_traffic`` what the kernel already holds, then close gracefully."""
        if self._delivering():
            self._read_on()
        self._close_request(None)

    def _arm_deadline(self) -> None:
        loop = self._loop
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(loop.linger, self._deadline, self._outbound._size)

    def _deadline(self, outbound_then: int) -> None:
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

    def _fail_soon(self, exc: BaseException) -> None:
        # A send failed inside a callback: close after it returns, never under the user's feet.
        if self._err is None:
            exc.__traceback__ = None  # its frames hold this connection and its buffers: a cycle only a full gc frees
            self._err = exc
            if self._outbound._size > self._loop.high_water:
                self._loop.heap_released()
            self._outbound = NO_OUTBOUND
            self._to(ERROR)  # reads stop and writes are dropped until the close
            self._loop.call_soon(self._close, exc)

    def _close(self, err: BaseException | None) -> None:
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

    def _cancel_deadlines(self) -> None:
        if self._deadlines:
            for timer in self._deadlines.values():
                timer.cancel()
            self._deadlines = None
        if self._message_timer is not None:
            self._message_timer.cancel()
            self._message_timer = None
        self._message = None

    def _report_closed(self, err: BaseException | None) -> None:
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

    # -- from any thread ----------------------------------------------------------------------------------

    def async_write(self, data: Buffer, callback: Callback | None = None) -> None:
        """Queue ``data`` to be written on the loop; ``callback(conn, err)`` runs there afterwards.

        ``err`` is None once the bytes are sent or buffered, else why not (``ConnClosedError``,
        ``OutboundLimitError``). A loop that has stopped raises ``EngineStoppedError`` here; a write it took
        always gets its callback.
        """
        self._loop.submit(self._write_task, (bytes(data),), callback)

    def async_writev(self, chunks: Sequence[Buffer], callback: Callback | None = None) -> None:
        """Like ``async_write`` for several buffers, sent in order with one gather write when possible."""
        self._loop.submit(self._write_task, tuple(bytes(c) for c in chunks), callback)

    def _write_task(self, chunks: tuple[bytes, ...], callback: Callback | None) -> None:
        err: BaseException | None = None
        if WRITES[self._state] == REFUSE:
            err = ConnClosedError(f"write on {STATE_NAMES[self._state]} connection {self!r}")
        else:
            self.writev(chunks)
            self._seen = self._loop.now  # a push from another thread is activity (idle_timeout)
            err = self._err if WRITES[self._state] == DROP else None  # dropped: why
        if callback is not None:
            self._loop.run_callback(callback, self, err)

    def wake(self, callback: Callback | None = None) -> None:
        """Fire ``on_traffic`` for this connection again (on its loop), then ``callback(conn, err)``."""
        self._loop.submit(self._wake_task, callback)

    def _wake_task(self, callback: Callback | None) -> None:
        err: BaseException | None = None
        if FINISHED[self._state]:
            err = ConnClosedError(f"wake on closed connection {self!r}")
        elif self._pause & READ_HELD == PAUSED_BY_INBOUND:
            err = self._deliver_held()  # and again while it consumes: no read comes until it is down to half
        else:
            err = self._deliver()
        if callback is not None:
            self._loop.run_callback(callback, self, err)

    def close(self, callback: Callback | None = None) -> None:
        """Close after flushing buffered output; ``callback(conn, err)`` runs on the loop once it is closed."""
        self._loop.submit(self._close_task, callback)

    def _close_task(self, callback: Callback | None) -> None:
        if callback is not None:
            if FINISHED[self._state]:
                self._loop.run_callback(callback, self, None)
                return
            if self._close_callbacks is None:
                self._close_callbacks = []
            self._close_callbacks.append(callback)
        self._close_request(None)

    # -- deadlines (loop) ---------------------------------------------------------------------------------------

    def set_deadline(self, seconds: float | None) -> None:
        """*loop* Close the connection ``seconds`` from now (``ConnTimeoutError``, kind ``deadline``); None clears."""
        self._set_deadline("deadline", seconds)

    def set_read_deadline(self, seconds: float | None) -> None:
        """*loop* Close the connection if it is still reading ``seconds`` from now (kind ``read_deadline``).

        Set it when you start waiting for a message and clear it (None) or set it again once it came.
        """
        self._set_deadline("read_deadline", seconds)

    def set_write_deadline(self, seconds: float | None) -> None:
        """*loop* Close the connection if outbound bytes are still buffered ``seconds`` from now.

        The error's kind is ``write_deadline``.
        """
        self._set_deadline("write_deadline", seconds)

    def _set_deadline(self, kind: str, seconds: float | None) -> None:
        deadlines = self._deadlines
        if deadlines is None:
            if seconds is None or FINISHED[self._state]:
                return
            self._deadlines = deadlines = {}
        old = deadlines.pop(kind, None)
        if old is not None:
            old.cancel()
        if seconds is not None and not FINISHED[self._state]:
            deadlines[kind] = self._loop.call_later(seconds, self._deadline_passed, kind, seconds)

    def start_message(self) -> None:
        """*loop* A message is in progress: with ``read_timeout`` it must end within that many seconds of this call.

        A message not ended (``end_message``) in time closes the connection with ``ConnTimeoutError`` (kind
        ``read_timeout``), however many bytes keep trickling in. Calling it again while a message is in progress
        does not move the deadline. Without ``read_timeout`` it does nothing.
        """
        limit = self._loop.message_timeout
        if limit is None or self._message is not None or self._state == CLOSED:
            return
        self._message = self._loop.now
        if self._message_timer is None:
            self._message_timer = self._loop.call_later(limit, self._message_due)

    def end_message(self) -> None:
        """*loop* The message in progress is complete: its ``read_timeout`` deadline is cleared."""
        self._message = None

    def _message_due(self) -> None:
        # One timer per connection, kept across messages: a message that ended lets it lapse, a later one moves it.
        self._message_timer = None
        started = self._message
        if started is None or self._state == CLOSED:
            return
        loop = self._loop
        limit = loop.message_timeout
        assert limit is not None
        due = started + limit
        if loop.now < due:
            self._message_timer = loop.call_later(due - loop.now, self._message_due)
        elif next_state(self._state, READ_TIMEOUT) == CLOSED:
            self._close(ConnTimeoutError("read_timeout", f"{self!r}: a message not complete in read_timeout={limit}s"))

    def _deadline_passed(self, kind: str, seconds: float) -> None:
        if self._deadlines is not None:
            self._deadlines.pop(kind, None)
        state = self._state
        if state == CLOSED:
            return
        if kind == WRITE_DEADLINE and not self._outbound._size:
            return  # everything was sent
        if next_state(state, _DEADLINE_EVENTS[kind]) != CLOSED:
            return  # e.g. a read deadline once no longer reading
        self._close(ConnTimeoutError(kind, f"{self!r}: {kind} of {seconds}s passed"))  # at once, not lingering

    # -- socket options -----------------------------------------------------------------------------------

    def set_no_delay(self, on: bool) -> None:
        """TCP_NODELAY: send small writes at once (on) or let Nagle coalesce them (off)."""
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(on))

    def set_keep_alive(
        self, on: bool, idle: float | None = None, interval: float | None = None, count: int | None = None
    ) -> None:
        """SO_KEEPALIVE, with the idle time, probe interval (seconds) and probe count where the OS has them."""
        set_keep_alive(self._sock, on, idle, interval, count)

    def set_read_buffer(self, n: int) -> None:
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, n)

    def set_write_buffer(self, n: int) -> None:
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, n)

    def set_linger(self, seconds: int | None) -> None:
        """SO_LINGER: None or a negative value turns it off; 0 makes close send a reset."""
        on = seconds is not None and seconds >= 0
        value = struct.pack("ii", int(on), int(seconds) if on and seconds is not None else 0)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, value)


_DEADLINE_EVENTS = {"deadline": DEADLINE, "read_deadline": READ_DEADLINE, "write_deadline": WRITE_DEADLINE}


def set_keep_alive(
    sock: socket.SocketType, on: bool, idle: float | None, interval: float | None, count: int | None
) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(on))
    if not on:
        return
    idle_opt = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    for opt, value in (
        (idle_opt, idle),
        (getattr(socket, "TCP_KEEPINTVL", None), interval),
        (getattr(socket, "TCP_KEEPCNT", None), count),
    ):
        if opt is not None and value is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, max(1, int(value)))
