"""asyncio transports on netloop connections: a TCP or Unix stream socket asyncio makes a transport for
(``create_server``'s accepted sockets, ``create_connection``, ``connect_accepted_socket``) is served by the netloop
loop as a ``Conn``, whose reads reach the protocol and whose ``write`` is the connection's own.

``Loop._make_socket_transport`` makes a ``SocketTransport``: ``write`` is the connection's ``Conn.write`` itself (the
compiled one on the compiled core), the connection's reads go to ``protocol.data_received`` through one handler
event (``TransportEvents.on_traffic``), and on a standalone loop the loop's own inlined read path takes them. What
asyncio's selector transport does differently from a netloop connection is kept here: writes after the connection
is lost are dropped (and logged past a threshold), flow control is the transport's ``set_write_buffer_limits`` with
``pause_writing``/``resume_writing``, and a close sends no FIN and waits for no EOF (``abort`` drops the buffer).
TLS keeps asyncio's own transport (``_make_ssl_transport`` and ``start_tls`` build theirs).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from asyncio import constants, futures, trsock
from asyncio.transports import _FlowControlMixin
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from netloop._buffer import flat
from netloop._buffer.elastic import OutboundBuffer
from netloop._conn import NO_OUTBOUND, PARKED, PAUSED_BY_USER, Buffer, Conn
from netloop._conn_shared import frozen
from netloop._handler import Action, EventHandler
from netloop._lifecycle import CLOSED, CLOSING, FINISHED, FINISHING, PEER_EOF, SHUTTING
from netloop._poller import ERR, IN

if TYPE_CHECKING:
    from netloop.aio._loop import Loop

logger = logging.getLogger("asyncio")

# Server._attach/_detach take the transport from 3.13 on.
_SERVER_KNOWS_TRANSPORTS = sys.version_info >= (3, 13)

_STREAM_FAMILIES = (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", -1))


def serves(sock: socket.socket) -> bool:
    """Whether a transport for ``sock`` is a netloop connection (TCP and Unix stream sockets)."""
    return sock.type == socket.SOCK_STREAM and sock.family in _STREAM_FAMILIES


class TransportEvents(EventHandler):
    """The netloop events of a transport's connection, handed to its protocol.

    The handler of a standalone loop (whose inlined read path then calls ``on_traffic`` directly), and of each
    transport connection on an engine's loop (``Conn._handler``), whatever the engine's handler is.
    """

    def on_traffic(self, conn: TransportConn) -> None:  # type: ignore[override]
        try:
            conn._received(conn.next())
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            conn._transport._fatal_error(exc, conn._transport._received_failed)

    def on_eof(self, conn: TransportConn) -> Action | None:  # type: ignore[override]
        transport = conn._transport
        try:
            keep_open = transport._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            transport._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return None
        if keep_open:
            return None  # half-open: the protocol may write on
        transport.close()
        return None


EVENTS = TransportEvents()


def _nothing(data: bytes) -> None:
    """A lost transport's reads: there are none (its protocol is let go)."""


class TransportConn(Conn):
    """A transport's connection: a netloop ``Conn`` that keeps asyncio's rules where they differ from netloop's."""

    __slots__ = ("_received", "_transport")

    _received: Callable[[bytes], object]
    _transport: SocketTransport

    def _enqueue(self, data: Buffer) -> int:
        # Both writes come here whenever they do not send at once: bytes buffered before, or a state that does not
        # send. asyncio's rules for the latter: after write_eof a write raises, once lost it is dropped.
        transport = self._transport
        if transport._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        state = self._state
        if state in (CLOSING, FINISHING):
            if len(data):
                self._buffer_rest(data, 0)  # close() sends what was written before it, and after it
            return len(data)
        if FINISHED[state] or transport._conn_lost:
            return transport._write_lost(data)
        return Conn._enqueue(self, data)

    def _buffer_rest(self, data: Buffer, sent: int) -> None:
        # No write_buffer_limit and no pause of reading: the protocol's pause_writing is asyncio's flow control.
        if type(data) is memoryview:
            data = flat(data)
        out = self._outbound
        if out is NO_OUTBOUND:
            self._outbound = out = OutboundBuffer()
        was_empty = not out._size
        if sent:
            out.append(memoryview(data)[sent:] if type(data) is bytes else bytes(memoryview(data)[sent:]))
        else:
            out.append(frozen(data))
        if was_empty:
            self._update_interest()
        transport = self._transport
        if out._size > transport._high_water:
            transport._maybe_pause_protocol()

    def _sent_buffered(self) -> None:
        out = self._outbound
        transport = self._transport
        if out._size:
            if out._size <= transport._low_water:
                transport._maybe_resume_protocol()
            return
        self._outbound = NO_OUTBOUND
        transport._maybe_resume_protocol()  # may write again
        if self._outbound._size:
            return
        if transport._empty_waiter is not None:
            transport._buffer_sent()
        if self._state in (CLOSING, SHUTTING, FINISHING):
            self._flushed()
        else:
            self._update_interest()

    def _flushed(self) -> None:
        # asyncio closes the socket once the buffer is sent: no FIN of ours first, no lingering for the peer's.
        if self._state == SHUTTING:
            Conn._flushed(self)
        else:
            self._close(self._err)

    def _hang_up(self, ev: int) -> None:
        if self._state == PEER_EOF and not ev & ERR:
            # The peer closed both ways (a Unix socket's HUP) after its EOF, which the protocol kept half-open:
            # nothing more to read, and a write meets the error itself. Off the poller until one is buffered.
            self._mask = PARKED
            self._loop.poller.unregister(self._fd)
            return
        Conn._hang_up(self, ev)

    def _fail_soon(self, exc: BaseException) -> None:
        # A send failed: closing from now on (asyncio's _fatal_error), so a writer's drain() yields to the close.
        self._transport._closing = True
        Conn._fail_soon(self, exc)

    def _arm_deadline(self) -> None:
        pass  # asyncio's close waits for the peer to take the buffer as long as it takes

    def _close(self, err: BaseException | None) -> None:
        # Not one of the loop's connections (asyncio's, not the engine's: not counted, not in loop.conns): its
        # descriptor leaves the poller here.
        if self._state != CLOSED:
            self._loop.detach(self._fd)
        Conn._close(self, err)

    def _report_closed(self, err: BaseException | None) -> None:
        self._transport._lost(err)  # the transport's protocol hears of it, not the loop's handler


class InlineTransportConn(TransportConn):
    """On a loop whose handler is ``TransportEvents`` (standalone): its inlined read path takes the reads."""

    __slots__ = ()


class HandledTransportConn(TransportConn):
    """On an engine's loop: reads go through ``_on_io`` to the connection's own handler (``TransportEvents``)."""

    __slots__ = ()
    _inline = False


class SocketTransport(_FlowControlMixin):
    """asyncio's socket transport over a netloop connection; ``write`` is the connection's ``Conn.write``."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    # asyncio's, set by _FlowControlMixin and BaseTransport (which typeshed leaves out).
    _loop: Loop
    _extra: dict[str, Any]
    _high_water: int
    _low_water: int
    _protocol: Any
    if TYPE_CHECKING:

        def _maybe_pause_protocol(self) -> None: ...
        def _maybe_resume_protocol(self) -> None: ...

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[None] | None = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> None:
        super().__init__(extra, loop)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        owner = loop._owner
        sock.setblocking(False)
        conn_class = InlineTransportConn if owner.handler is EVENTS else HandledTransportConn
        conn = self._conn = conn_class(owner, sock, self._extra["peername"])
        conn._handler = EVENTS
        conn._transport = self
        self._sock: socket.socket | None = sock
        self._sock_fd = sock.fileno()
        self._closing = False
        self._eof = False
        self._conn_lost = 0
        self._received_failed = ""
        self._empty_waiter: asyncio.Future[None] | None = None  # loop.sendfile's: set once the buffer is sent
        self.set_protocol(protocol)
        self._server = server
        # The connection's own write (the compiled one on the compiled core), not a method that calls it.
        self.write = conn.write  # type: ignore[method-assign,assignment]
        if server is not None:
            server._attach(self) if _SERVER_KNOWS_TRANSPORTS else server._attach()
        loop._transports[self._sock_fd] = self  # type: ignore[attr-defined]
        if sock.family != getattr(socket, "AF_UNIX", -1):
            asyncio.base_events._set_nodelay(sock)  # type: ignore[attr-defined]
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start)  # reads reach the protocol once connection_made has run
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else "closing" if self._closing else "open"
        return f"<netloop.aio.SocketTransport {state} fd={self._sock_fd} {self._conn!r}>"

    def _start(self) -> None:
        conn = self._conn
        if conn._state == CLOSED:
            return
        owner = conn._loop
        conn._mask = IN
        owner.attach(self._sock_fd, conn._on_io, IN)
        conn._update_interest()  # a pause_reading in connection_made holds it; the inlined path takes it otherwise

    # -- the protocol --------------------------------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        if isinstance(protocol, asyncio.BufferedProtocol):
            self._conn._received = self._buffer_received
            self._received_failed = "Fatal error: protocol.buffer_updated() call failed."
        else:
            self._conn._received = protocol.data_received  # type: ignore[attr-defined]
            self._received_failed = "Fatal error: protocol.data_received() call failed."

    def get_protocol(self) -> asyncio.BaseProtocol:
        protocol: asyncio.BaseProtocol = self._protocol
        return protocol

    def _buffer_received(self, data: bytes) -> None:
        """A ``BufferedProtocol``'s read: ``data`` copied into the buffers ``get_buffer`` gives."""
        protocol: asyncio.BufferedProtocol = self._protocol
        view = memoryview(data)
        while view and not self._closing:
            buf = protocol.get_buffer(len(view))
            size = memoryview(buf).nbytes
            if not size:
                raise RuntimeError("get_buffer() returned an empty buffer")
            n = min(size, len(view))
            memoryview(buf).cast("B")[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]

    # -- reading -------------------------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._closing and not self._conn._pause & PAUSED_BY_USER

    def pause_reading(self) -> None:
        if self.is_reading():
            self._conn.pause_reading()

    def resume_reading(self) -> None:
        if not self._closing:
            self._conn.resume_reading()

    # -- writing -------------------------------------------------------------------------------------------

    def writelines(self, list_of_data: Iterable[Buffer]) -> None:
        chunks = [chunk for chunk in list_of_data if len(chunk)]
        if chunks:
            if self._eof:
                raise RuntimeError("Cannot call write() after write_eof()")
            if self._empty_waiter is not None:
                self._write_in_sendfile(b"")
            self._conn.writev(chunks)

    def _write_lost(self, data: Buffer) -> int:
        """A write after the connection was lost: dropped, and logged past asyncio's threshold."""
        if not len(data):
            return 0
        if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            logger.warning("socket.send() raised exception.")
        self._conn_lost += 1
        return 0

    def _write_in_sendfile(self, data: Buffer) -> None:
        raise RuntimeError("unable to write; sendfile is in progress")

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        self._conn.shutdown_write()

    def get_write_buffer_size(self) -> int:
        return self._conn._outbound._size

    # -- loop.sendfile: os.sendfile on the socket, off the connection's registration meanwhile ------------------

    def _make_empty_waiter(self) -> asyncio.Future[None]:
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = waiter = self._loop.create_future()
        self.write = self._write_in_sendfile  # type: ignore[method-assign]
        if not self._conn._outbound._size:
            waiter.set_result(None)
        return waiter

    def _reset_empty_waiter(self) -> None:
        self._empty_waiter = None
        self.write = self._conn.write  # type: ignore[method-assign,assignment]

    def _buffer_sent(self) -> None:
        waiter = self._empty_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sendfile_native(self, file: Any, offset: int, count: int | None) -> int:
        """``loop.sendfile``'s native way (``Loop._sendfile_native``): asyncio's ``sock_sendfile`` on the socket,
        with the connection's reading paused and its descriptor lent to the selector until it returns."""
        loop: Loop = self._loop
        conn = self._conn
        fd = self._sock_fd
        del loop._transports[fd]  # type: ignore[attr-defined]
        resume_reading = self.is_reading()
        self.pause_reading()
        await self._make_empty_waiter()
        owner = conn._loop
        owner.detach(fd)
        try:
            if self._sock is None:
                raise ConnectionError("Connection is closed by peer")
            return await loop.sock_sendfile(self._sock, file, offset, count, fallback=False)
        finally:
            self._reset_empty_waiter()
            if conn._state != CLOSED:
                conn._mask = IN
                owner.attach(fd, conn._on_io, IN)
                conn._update_interest()
                if resume_reading:
                    self.resume_reading()
            loop._transports[fd] = self  # type: ignore[attr-defined]

    # -- closing -------------------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; close once the buffered bytes are sent (``connection_lost(None)`` then)."""
        if self._closing:
            return
        self._closing = True
        conn = self._conn
        if conn._outbound._size:
            conn._close_request(None)
        else:
            conn._close(None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        self._closing = True
        self._conn._close(exc)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
            )
        self._force_close(exc)

    def _lost(self, exc: BaseException | None) -> None:
        """The connection closed (``TransportConn._report_closed``): ``connection_lost`` once, soon."""
        self._closing = True
        self._conn_lost += 1
        loop: Loop = self._loop
        if loop.is_closed():
            self._call_connection_lost(None, False)
            return
        loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None, tell: bool = True) -> None:
        waiter = self._empty_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("Connection is closed by peer"))
        try:
            if tell:
                self._protocol.connection_lost(exc)
        finally:
            self._sock = None
            # The protocol is let go (as asyncio's transports let it go): it and this transport hold each other.
            self._protocol = None
            self._conn._received = _nothing
            server, self._server = self._server, None
            if server is not None:
                server._detach(self) if _SERVER_KNOWS_TRANSPORTS else server._detach()
