"""``async def`` event handlers: each coroutine an event returns runs as a task on the connection's loop.

A connection runs its coroutines one at a time, in the order its events returned them, and holds reading
(``PAUSED_BY_TASK``) while one runs: the next ``on_traffic`` waits, inbound bytes wait in the kernel, so replies keep
the requests' order. The Action the coroutine returns applies when it finishes; then reading resumes. Closing the
connection cancels its running task and drops the coroutines still waiting (closed unstarted); an async
``on_close`` runs after that, uncancelled. A task that raises closes its connection like a raising handler.
A UDP server's datagram senders are not connections: their coroutines run at once, side by side.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import Any

from netloop._conn import DRAIN_WAITERS, PAUSED_BY_TASK, PRESSURE, Conn
from netloop._conn_read import meaningless
from netloop._datagram import DatagramConn
from netloop._errors import ConnClosedError
from netloop.aio._loop import Loop, loop_of

Coro = Coroutine[Any, Any, Any]


class ConnTasks:
    """A connection's coroutines, run one at a time; lives from the first one until the connection closes."""

    __slots__ = ("conn", "current", "drainers", "loop", "waiting")

    def __init__(self, loop: Loop, conn: Conn) -> None:
        self.loop = loop
        self.conn = conn
        self.current: asyncio.Task[Any] | None = None
        self.waiting: deque[Coro] = deque()
        self.drainers: list[asyncio.Future[None]] = []
        # Once per connection: whatever closes it cancels what is left here.
        if conn._close_callbacks is None:
            conn._close_callbacks = []
        conn._close_callbacks.append(self._closed)

    def add(self, coro: Coro) -> None:
        self.waiting.append(coro)
        if self.current is None:
            conn = self.conn
            conn._pause |= PAUSED_BY_TASK
            conn._update_interest()
            self._next()

    def _next(self) -> None:
        task = self.loop.create_task(self.waiting.popleft())
        self.current = task
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        if task is not self.current:
            return  # cancelled by the close, which already let the connection go
        self.current = None
        conn = self.conn
        if task.cancelled():
            if not conn.closed:
                # Cancelled by someone else than the close: the connection's next events go on.
                self._resume()
            return
        exc = task.exception()
        if exc is not None:
            _failed(conn, task, exc)
            return
        result = task.result()
        if result and not conn.closed:
            conn._act(result)
        if not conn.closed:
            self._resume()

    def _resume(self) -> None:
        if self.waiting:
            self._next()
            return
        conn = self.conn
        conn._pause &= ~PAUSED_BY_TASK
        conn._resume()

    def cancel(self) -> None:
        """The connection closed: cancel the running task, drop the waiting coroutines and the drain waiters."""
        self.loop._conn_tasks.pop(self.conn, None)
        DRAIN_WAITERS.pop(self.conn, None)
        task, self.current = self.current, None
        if task is not None:
            task.cancel()
        while self.waiting:
            self.waiting.popleft().close()
        drainers, self.drainers = self.drainers, []
        for fut in drainers:
            if not fut.done():
                fut.set_exception(ConnClosedError(f"{self.conn!r} closed while waiting for its outbound to drain"))

    def _closed(self, conn: Conn, err: BaseException | None) -> None:
        self.cancel()

    def drained(self) -> None:
        """The outbound fell to the low-water mark (``Conn._drained``)."""
        drainers, self.drainers = self.drainers, []
        for fut in drainers:
            if not fut.done():
                fut.set_result(None)


def _failed(conn: Conn, task: asyncio.Task[Any], exc: BaseException) -> None:
    name = task.get_coro().__qualname__  # type: ignore[union-attr]
    if isinstance(exc, Exception):
        conn._loop.handler_failed(conn, name, exc)
    else:
        conn._close_request(exc)


def _tasks_of(loop: Loop, conn: Conn) -> ConnTasks:
    tasks = loop._conn_tasks.get(conn)
    if tasks is None:
        tasks = loop._conn_tasks[conn] = ConnTasks(loop, conn)
    return tasks


def adopt(conn: Conn, coro: Any) -> None:
    """An event of ``conn`` returned ``coro`` (``Conn._act``): run it after the connection's earlier ones."""
    if not asyncio.iscoroutine(coro):
        meaningless(conn, coro)  # an awaitable that is no coroutine (a Future...): ignored, and said so
        return
    loop = loop_of(conn._loop)
    if isinstance(conn, DatagramConn):
        loop.create_task(coro).add_done_callback(lambda task: _datagram_done(conn, task))
        return
    if conn.closed:
        coro.close()
        return
    _tasks_of(loop, conn).add(coro)


def _datagram_done(conn: Conn, task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        conn._loop.handler_errors += 1
        conn._loop.log.error("netloop: %s raised for %r", task.get_coro().__qualname__, conn, exc_info=task.exception())  # type: ignore[union-attr]


def adopt_close(conn: Conn, coro: Any) -> None:
    """An async ``on_close``: cancel what the connection still ran, then run it (it is not cancelled)."""
    if not asyncio.iscoroutine(coro):
        return
    loop = loop_of(conn._loop)
    tasks = loop._conn_tasks.get(conn)
    if tasks is not None:
        tasks.cancel()
    task = loop.create_task(coro)
    task.add_done_callback(lambda t: _close_done(conn, t))


def _close_done(conn: Conn, task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        conn._loop.handler_errors += 1
        conn._loop.log.error("netloop: on_close raised for %r", conn, exc_info=task.exception())


async def drain(conn: Conn) -> None:
    """Wait until ``conn`` may be written to again: at once below the high-water mark (``write_buffer_cap``),
    else until its outbound falls to the low-water mark. Raises ``ConnClosedError`` if it closes first.
    """
    if conn.closed:
        raise ConnClosedError(f"drain on closed connection {conn!r}")
    if not conn._pause & PRESSURE:
        return
    loop = loop_of(conn._loop)
    tasks = _tasks_of(loop, conn)
    fut: asyncio.Future[None] = loop.create_future()
    tasks.drainers.append(fut)
    DRAIN_WAITERS[conn] = tasks.drained
    await fut
