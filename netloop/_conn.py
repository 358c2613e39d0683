"""Connections: the read path, the write path and the thread-safe operations of ``Conn``."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from netloop._buffer.elastic import OutboundBuffer
from netloop._buffer.ring import RingBuffer
from netloop._errors import ConnClosedError, ShortBufferError
from netloop._handler import Action
from netloop._poller import EDGE, IN, OUT, READABLE

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop
    from netloop._handler import EventHandler

Buffer = bytes | bytearray | memoryview
Callback = Callable[["Conn", BaseException | None], object]

# Reads stop after this many full reads in one round, so one busy peer can't starve the rest.
READS_PER_ROUND = 16


# Shared stand-ins for a connection's buffers while it has nothing kept: never written, replaced by a buffer of the
# connection's own on first use. Most connections never need one, and an idle one then holds no buffer objects.
NO_INBOUND = RingBuffer()
NO_OUTBOUND = OutboundBuffer()


def _frozen(data: Buffer) -> bytes | memoryview:
    """``data`` safe to keep: immutable bytes are kept as they are, anything mutable is copied."""
    return data if type(data) is bytes else bytes(data)


class Conn:
    """One connection (TCP or Unix stream; a UDP datagram's sender is a ``Conn`` too).

    Methods documented as *loop* may only be called on the connection's event loop, from a callback; the
    ``async_*``, ``wake`` and ``close`` methods may be called from any thread. Bytes returned by the reading
    methods are fresh ``bytes``: they never change after the callback returns.
    """

    __slots__ = (
        "__weakref__",
        "_close_callbacks",
        "_closed",
        "_closing",
        "_data",
        "_err",
        "_fd",
        "_handler",
        "_held",
        "_inbound",
        "_local",
        "_loop",
        "_mask",
        "_outbound",
        "_paused",
        "_pos",
        "_recv",
        "_remote",
        "_send",
        "_sock",
        "context",
    )

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
        self._closed = False
        self._closing = False
        self._paused = False
        self._held = False
        self._mask = 0
        self._err: BaseException | None = None
        self._remote = remote
        self._local: Any = None
        self._close_callbacks: list[Callback] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<netloop.Conn fd={self._fd} remote={self._remote!r} {state}>"

    # -- identity and state ------------------------------------------------------------------------------

    @property
    def fd(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return -1 if self._closed else self._fd

    @property
    def event_loop(self) -> EventLoop:
        """The event loop that owns this connection."""
        return self._loop

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def remote_addr(self) -> Any:
        """The peer's address as the socket module gives it (``(host, port)``, a path, ...)."""
        return self._remote

    @property
    def local_addr(self) -> Any:
        """This end's address as the socket module gives it."""
        if self._local is None and not self._closed:
            self._local = self._sock.getsockname()
        return self._local

    # -- the read path: one call per readiness event -----------------------------------------------------

    def _on_io(self, ev: int) -> None:
        # The plain "readable" case of accepted connections runs inlined in EventLoop.run.
        if ev & OUT:
            self._flush()
            if not ev & READABLE or self._closed:
                return
        self._read_on()

    def _read_on(self) -> None:
        """Read and show ``on_traffic`` until a short read, a pause or a close; a few reads at most."""
        size = self._loop.read_size
        for _ in range(READS_PER_ROUND):
            if not self._reading():
                return
            try:
                data = self._recv(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._close(exc)
                return
            if not data:
                self._close_after_flush(None)
                return
            self._traffic(data)
            if len(data) < size:
                return  # the socket is empty; a closed or paused connection stops at the loop's top
        self._more_to_read()

    def _more_to_read(self) -> None:
        # Level-triggered: the poller reports the socket again.
        pass

    def _traffic(self, data: bytes) -> None:
        """Show ``data``, just read, to ``on_traffic``; keep what it leaves unconsumed.

        ``EventLoop.run`` carries an inlined copy.
        """
        inbound = self._inbound
        if inbound._size:
            inbound.write(data)
        else:
            self._data = data
        try:
            action = self._handler.on_traffic(self)
        except Exception as exc:
            self._data = b""
            self._pos = 0
            self._loop.handler_failed(self, "on_traffic", exc)
            return
        if self._data:
            self._keep_rest()
        if action:
            self._act(action)

    def _keep_rest(self) -> None:
        """Copy the unconsumed rest of the current read into the connection's own buffer."""
        inbound = self._inbound
        if inbound is NO_INBOUND:
            self._inbound = inbound = RingBuffer()
        data = self._data
        pos = self._pos
        inbound.write(memoryview(data)[pos:] if pos else data)
        self._data = b""
        self._pos = 0

    def _act(self, action: Action | int) -> None:
        if action == Action.CLOSE:
            self._close_after_flush(None)
        elif action == Action.SHUTDOWN:
            self._loop.engine_stop()

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

        Returns ``len(data)``. Raises ``ConnClosedError`` on a closed connection. A send error closes the
        connection (after this callback) with that error.
        """
        if self._outbound._size or self._closing:
            return self._enqueue(data)
        try:
            sent = self._send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail_soon(exc)
            return 0
        n = len(data)
        if sent < n:
            self._buffer_rest(data, sent)
        return n

    def writev(self, chunks: Sequence[Buffer]) -> int:
        """*loop* Send several buffers with one gather write when possible; returns the total length."""
        if len(chunks) == 1:
            return self.write(chunks[0])
        total = sum(len(c) for c in chunks)
        if self._outbound._size or self._closing:
            for chunk in chunks:
                self._enqueue(chunk)
            return total
        try:
            sent = self._sock.sendmsg(chunks)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail_soon(exc)
            return 0
        for chunk in chunks:
            size = len(chunk)
            if sent >= size:
                sent -= size
                continue
            self._buffer_rest(chunk, sent)
            sent = 0
        return total

    def _enqueue(self, data: Buffer) -> int:
        if self._closed:
            raise ConnClosedError(f"write on closed connection {self!r}")
        if self._err is not None:
            return 0  # a send already failed; the connection is closing with that error
        self._buffer_rest(data, 0)
        return len(data)

    def _buffer_rest(self, data: Buffer, sent: int) -> None:
        out = self._outbound
        if out is NO_OUTBOUND:
            self._outbound = out = OutboundBuffer()
        was_empty = not out._size
        if sent:
            out.append(memoryview(data)[sent:] if type(data) is bytes else bytes(memoryview(data)[sent:]))
        else:
            out.append(_frozen(data))
        if out._size > self._loop.high_water and not self._paused:
            self._paused = True
            self._update_interest()
        elif was_empty:
            self._update_interest()

    def flush(self) -> None:
        """*loop* Try to send buffered outbound bytes now."""
        if self._outbound._size and not self._closed:
            self._flush()

    def _flush(self) -> None:
        out = self._outbound
        sendmsg = self._sock.sendmsg
        while out._size:
            chunks = out.chunks()
            try:
                sent = sendmsg(chunks)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._close(exc)
                return
            out.advance(sent)
            if sent < sum(len(c) for c in chunks):
                break
        if out._size:
            if self._paused and out._size <= self._loop.low_water:
                self._paused = False
                self._resume_reading()
            return
        self._outbound = NO_OUTBOUND  # drained: an idle connection holds no buffer
        if self._closing:
            self._close(self._err)
        elif self._paused:
            self._paused = False
            self._resume_reading()
        else:
            self._update_interest()

    def outbound_buffered(self) -> int:
        """*loop* How many bytes wait for the kernel to take them."""
        return self._outbound._size

    def send_to(self, data: Buffer, addr: Any) -> int:
        """*loop* Send a datagram to ``addr`` (UDP only)."""
        raise TypeError("send_to is for UDP connections")

    # -- readiness interest: level-triggered here, EdgeConn overrides --------------------------------------

    def _reading(self) -> bool:
        return not (self._paused or self._closing or self._held)

    def _update_interest(self) -> None:
        """Ask the poller for what this connection needs now: reads unless paused, writes while buffered."""
        if self._closed:
            return
        mask = (IN if self._reading() else 0) | (OUT if self._outbound._size else 0)
        if mask != self._mask:
            self._mask = mask
            self._loop.poller.modify(self._fd, mask)

    def _resume_reading(self) -> None:
        self._update_interest()

    def pause_reading(self) -> None:
        """*loop* Stop reading this connection until ``resume_reading`` (flow control between connections).

        Inbound bytes then wait in the kernel, so a fast sender is slowed by TCP itself.
        """
        if not self._held:
            self._held = True
            self._update_interest()

    def resume_reading(self) -> None:
        """*loop* Undo ``pause_reading``."""
        if self._held:
            self._held = False
            if self._reading():
                self._resume_reading()

    # -- closing ------------------------------------------------------------------------------------------

    def _close_after_flush(self, err: BaseException | None) -> None:
        """Stop reading; close once the outbound bytes are flushed (at once if there are none)."""
        if self._closed:
            return
        if err is not None and self._err is None:
            self._err = err
        if not self._outbound._size:
            self._close(self._err)
            return
        if not self._closing:
            self._closing = True
            self._update_interest()

    def _fail_soon(self, exc: BaseException) -> None:
        # A send failed inside a callback: close after it returns, never under the user's feet.
        if self._err is None:
            self._err = exc
            self._outbound = NO_OUTBOUND
            self._loop.call_soon(self._close, exc)

    def _close(self, err: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True  # later writes take the slow path, which raises ConnClosedError
        self._loop.detach_conn(self)
        try:
            self._sock.close()
        except OSError:
            pass
        self._inbound = NO_INBOUND
        self._outbound = NO_OUTBOUND
        self._data = b""
        self._pos = 0
        self._loop.conn_closed(self, err)
        callbacks = self._close_callbacks
        if callbacks:
            self._close_callbacks = None
            for callback in callbacks:
                self._loop.run_callback(callback, self, err)

    # -- from any thread ----------------------------------------------------------------------------------

    def async_write(self, data: Buffer, callback: Callback | None = None) -> None:
        """Queue ``data`` to be written on the loop; ``callback(conn, err)`` runs there afterwards."""
        self._loop.submit(self._write_task, (bytes(data),), callback)

    def async_writev(self, chunks: Sequence[Buffer], callback: Callback | None = None) -> None:
        """Like ``async_write`` for several buffers, sent in order with one gather write when possible."""
        self._loop.submit(self._write_task, tuple(bytes(c) for c in chunks), callback)

    def _write_task(self, chunks: tuple[bytes, ...], callback: Callback | None) -> None:
        err: BaseException | None = None
        if self._closed:
            err = ConnClosedError(f"write on closed connection {self!r}")
        else:
            self.writev(chunks)
            err = self._err
        if callback is not None:
            self._loop.run_callback(callback, self, err)

    def wake(self, callback: Callback | None = None) -> None:
        """Fire ``on_traffic`` for this connection again (on its loop), then ``callback(conn, err)``."""
        self._loop.submit(self._wake_task, callback)

    def _wake_task(self, callback: Callback | None) -> None:
        err: BaseException | None = None
        if self._closed:
            err = ConnClosedError(f"wake on closed connection {self!r}")
        else:
            try:
                action = self._handler.on_traffic(self)
            except Exception as exc:
                self._loop.handler_failed(self, "on_traffic", exc)
                err = exc
            else:
                if action:
                    self._act(action)
        if callback is not None:
            self._loop.run_callback(callback, self, err)

    def close(self, callback: Callback | None = None) -> None:
        """Close after flushing buffered output; ``callback(conn, err)`` runs on the loop once it is closed."""
        self._loop.submit(self._close_task, callback)

    def _close_task(self, callback: Callback | None) -> None:
        if callback is not None:
            if self._closed:
                self._loop.run_callback(callback, self, None)
                return
            if self._close_callbacks is None:
                self._close_callbacks = []
            self._close_callbacks.append(callback)
        self._close_after_flush(None)

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


class EdgeConn(Conn):
    """A connection on an edge-triggered poller: registered once for IN|OUT, reads until drained."""

    __slots__ = ()

    def _on_io(self, ev: int) -> None:
        if ev & OUT and self._outbound._size:
            self._flush()
        if ev & READABLE and not self._closed:
            self._read_on()

    def _more_to_read(self) -> None:
        # No new edge comes for bytes already there: read on after the other descriptors had their turn.
        self._loop.call_soon(self._read_on)

    def _update_interest(self) -> None:
        # Registered once for IN and OUT edges: nothing to change.
        pass

    def _resume_reading(self) -> None:
        # Bytes that arrived while paused raised no new edge: look now.
        self._loop.call_soon(self._read_on)


class PreWriteConn(Conn):
    """A connection that calls ``on_pre_write`` before each write (``pre_write=True``)."""

    __slots__ = ()

    def write(self, data: Buffer) -> int:
        self._handler.on_pre_write(self, data)
        return super().write(data)

    def writev(self, chunks: Sequence[Buffer]) -> int:
        for chunk in chunks:
            self._handler.on_pre_write(self, chunk)
        return super().writev(chunks)


class PreWriteEdgeConn(EdgeConn):
    __slots__ = ()

    write = PreWriteConn.write
    writev = PreWriteConn.writev


def conn_class(edge: bool, pre_write: bool) -> type[Conn]:
    """The connection class for these options, chosen once per loop so the hot path has no option checks."""
    if edge:
        return PreWriteEdgeConn if pre_write else EdgeConn
    return PreWriteConn if pre_write else Conn


def conn_mask(edge: bool) -> int:
    return IN | OUT | EDGE if edge else IN
