"""The streams entry point: ``start_server(handle, *addrs)`` / ``serve(...)`` run ``async def handle(reader,
writer)`` for each connection, as ``asyncio.start_server`` does, on netloop's engine (its loops, workers, TLS,
timeouts, limits, PROXY protocol and graceful stop).

The reader is asyncio's own ``StreamReader``, fed from ``on_traffic``: past twice its ``limit`` unread it pauses the
connection's reading (the bytes wait in the kernel), and resumes once read down to ``limit``. The writer is a
``StreamWriter`` over the connection: ``write`` tries the socket at once, ``drain`` waits on netloop's high/low-water
marks (``write_buffer_cap``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from netloop._conn import PRESSURE, Conn
from netloop._engine import Engine
from netloop._entry import run, start
from netloop._handler import Action, EventHandler
from netloop._lifecycle import FINISHED
from netloop._options import Options
from netloop.aio._handler_tasks import drain

Handle = Callable[["asyncio.StreamReader", "StreamWriter"], Awaitable[object]]

DEFAULT_LIMIT = 2**16  # asyncio's: the reader's buffer limit, and its readline's longest line


class _ReadFlow:
    """What ``asyncio.StreamReader`` needs of a transport: pausing and resuming the connection's reading."""

    __slots__ = ("conn",)

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def pause_reading(self) -> None:
        if not self.conn.closed:
            self.conn.pause_reading()

    def resume_reading(self) -> None:
        if not self.conn.closed:
            self.conn.resume_reading()


class _Reader(asyncio.StreamReader):
    """asyncio's ``StreamReader`` with ``read(n)`` for ``n > 0`` in one coroutine (asyncio's waits in a second one,
    ``_wait_for_data``); what it returns and raises is asyncio's. ``StreamServer.on_traffic`` feeds it."""

    _buffer: bytearray  # asyncio's (typeshed leaves these out)
    _waiter: asyncio.Future[None] | None
    _eof: bool
    _paused: bool
    _limit: int
    _transport: Any
    _loop: asyncio.AbstractEventLoop

    async def read(self, n: int = -1) -> bytes:
        if n <= 0 or self._exception is not None or self._waiter is not None:  # type: ignore[attr-defined]
            return await super().read(n)  # the rare cases, and their errors, asyncio's way
        if not self._buffer and not self._eof:
            if self._paused:
                self._paused = False
                self._transport.resume_reading()
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        buffer = self._buffer
        if n >= len(buffer):  # all of it (an echo's read): no view, no slice
            data = bytes(buffer)
            del buffer[:]
        else:
            data = bytes(memoryview(buffer)[:n])
            del buffer[:n]
        if self._paused and len(self._buffer) <= self._limit:
            self._paused = False
            self._transport.resume_reading()
        return data


class StreamWriter:
    """``asyncio.StreamWriter``'s methods over a netloop connection (``conn``); used on the connection's loop."""

    def __init__(self, conn: Conn, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self._reader = reader
        self._closed: asyncio.Future[None] = loop.create_future()
        # What drain() returns when there is nothing to wait for: awaiting a done future makes no coroutine.
        self._drained: asyncio.Future[None] = loop.create_future()
        self._drained.set_result(None)
        # The connection's own write (the compiled one on the compiled core), not a method that calls it.
        self.write = conn.write  # type: ignore[method-assign,assignment]

    def __repr__(self) -> str:
        return f"<netloop.aio.StreamWriter {self.conn!r}>"

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``: what the kernel does not take at once is buffered. ``ConnClosedError`` once closed."""
        self.conn.write(data)

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.conn.writev(list(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send our FIN once the buffered bytes are flushed; reading goes on."""
        self.conn.shutdown_write()

    def drain(self) -> Awaitable[None]:
        """``await writer.drain()`` returns once the outbound bytes are below ``write_buffer_cap`` (at once if they
        are), else once they fall to half of it; raises ``ConnClosedError`` (a ``ConnectionError``) if the
        connection closes first."""
        conn = self.conn
        if conn._pause & PRESSURE or FINISHED[conn._state]:
            return drain(conn)
        return self._drained  # nothing to wait for: no coroutine at all

    def close(self) -> None:
        """Close gracefully: the buffered bytes are flushed first. Safe to call again."""
        if not self.conn.closed:
            self.conn.close()

    def is_closing(self) -> bool:
        return self.conn.closed or self._closed.done()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed; raises what closed it, if an error did (as asyncio does)."""
        await asyncio.shield(self._closed)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername``, ``sockname``, ``socket``, ``peercert``, ``cipher``, ``ssl_version``, ``alpn_protocol``,
        ``server_hostname``, ``netloop_conn``; ``default`` for any other name. ``peername`` is the PROXY
        protocol's client where the header gave one."""
        conn = self.conn
        if name == "peername":
            return conn.remote_addr
        if name == "sockname":
            return conn.local_addr
        if name == "socket":
            return conn._sock
        if name == "netloop_conn":
            return conn
        tls = conn.tls
        if tls is not None:
            value = {
                "peercert": tls.peer_cert,
                "cipher": tls.cipher,
                "ssl_version": tls.version,
                "alpn_protocol": tls.alpn_protocol,
                "server_hostname": tls.server_name,
            }.get(name)
            if value is not None:
                return value
        return default

    def _lost(self, err: BaseException | None) -> None:
        if self._closed.done():
            return
        if err is None:
            self._closed.set_result(None)
        else:
            self._closed.set_exception(err)
            self._closed.exception()  # retrieved: nobody has to wait_closed


class _Stream:
    __slots__ = ("reader", "task", "writer")

    def __init__(self, reader: _Reader, writer: StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.task: asyncio.Future[object] | None = None  # held here: the loop keeps only a weak reference


class StreamServer(EventHandler):
    """The handler ``start_server`` and ``serve`` run: one ``handle(reader, writer)`` task per connection.

    The connection's ``context`` is the server's. The connection closes (gracefully) when ``handle`` returns; a
    ``handle`` that raises closes it with the error, logged and counted as a handler error. A peer's EOF reaches the
    reader; the connection stays open for writing until ``handle`` returns or closes it. A reset reaches the reader
    (its reads raise) and ``wait_closed``.
    """

    def __init__(self, handle: Handle, limit: int = DEFAULT_LIMIT) -> None:
        if not callable(handle):
            raise TypeError(f"handle must be an async function of (reader, writer), not {handle!r}")
        if limit <= 0:
            raise ValueError(f"limit must be positive, not {limit!r}")
        self.handle = handle
        self.limit = limit

    def on_open(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        reader = _Reader(self.limit, loop)
        reader.set_transport(_ReadFlow(conn))  # type: ignore[arg-type]
        writer = StreamWriter(conn, reader, loop)
        stream = conn.context = _Stream(reader, writer)
        # handle's own coroutine is the task (no coroutine around it that each of its steps passes through); what
        # follows its end is the task's done callback.
        task = stream.task = asyncio.ensure_future(self.handle(reader, writer), loop=loop)
        task.add_done_callback(functools.partial(self._done, conn, writer))

    def _done(self, conn: Conn, writer: StreamWriter, task: asyncio.Future[object]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            writer.close()
            return
        if not isinstance(exc, Exception):
            return  # KeyboardInterrupt, SystemExit: the loop's own to raise
        if not conn.closed:
            conn._loop.handler_failed(conn, getattr(self.handle, "__qualname__", "handle"), exc)
            return
        conn._loop.handler_errors += 1
        conn._loop.log.error("netloop: %r raised for %r", self.handle, conn, exc_info=exc)

    def on_traffic(self, conn: Conn) -> None:
        # asyncio's StreamReader.feed_data, inline (the reader is fed nowhere else while the connection is open).
        reader: _Reader = conn.context.reader
        buffer = reader._buffer
        buffer.extend(conn.next())
        waiter = reader._waiter
        if waiter is not None:
            reader._waiter = None
            if not waiter.cancelled():
                waiter.set_result(None)
        if not reader._paused and len(buffer) > 2 * reader._limit:
            reader._transport.pause_reading()
            reader._paused = True

    def on_eof(self, conn: Conn) -> Action | None:
        stream: _Stream = conn.context
        stream.reader.feed_eof()
        return None  # open for writing until handle returns

    def on_close(self, conn: Conn, err: BaseException | None) -> None:
        stream: _Stream | None = conn.context
        if stream is None:
            return
        if err is None:
            stream.reader.feed_eof()
        elif isinstance(err, Exception) and stream.reader.exception() is None:
            stream.reader.set_exception(err)
        stream.writer._lost(err)


def start_server(
    handle: Handle, *addrs: str, options: Options | None = None, limit: int = DEFAULT_LIMIT, **kwargs: Any
) -> Engine:
    """Serve ``addrs``, running ``await handle(reader, writer)`` for each connection; returns the running
    ``Engine`` at once (``netloop.start``). ``limit`` is the reader's buffer limit (asyncio's ``limit``); the other
    keyword arguments are netloop's options."""
    return start(StreamServer(handle, limit), *addrs, options=options, **kwargs)


def serve(
    handle: Handle, *addrs: str, options: Options | None = None, limit: int = DEFAULT_LIMIT, **kwargs: Any
) -> None:
    """``start_server``, blocking until the engine stops (``netloop.run``: SIGINT/SIGTERM stop it gracefully)."""
    run(StreamServer(handle, limit), *addrs, options=options, **kwargs)
