"""The ASGI lifespan protocol: ``startup`` on loop 0 before the server accepts, ``shutdown`` once requests are done.

The startup runs while ``on_boot`` waits for it (accepting starts after). The shutdown is sent when the engine stops,
once the requests in flight have ended (or ``graceful_timeout`` passed); the engine's drain keeps loop 0 serving
meanwhile, held by a connection of its own (one end of a socket pair) that closes when the shutdown is complete.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import time
from typing import TYPE_CHECKING

from netloop._conn import Conn
from netloop._engine import Engine
from netloop._errors import NetloopError
from netloop.asgi._config import Config, log
from netloop.asgi._types import Message

if TYPE_CHECKING:
    from netloop.asgi._handler import ServerState

_POLL = 0.01  # how often a stop looks whether the requests in flight have ended


class StartupFailed(NetloopError):
    """The application's lifespan startup failed: the server does not start."""


class Lifespan:
    """One app's lifespan conversation: ``begin`` on loop 0, ``end`` when the engine stops."""

    def __init__(self, server: ServerState, config: Config) -> None:
        self.server = server
        self.config = config
        self.messages: asyncio.Queue[Message] | None = None
        self.started: concurrent.futures.Future[bool] | None = None
        self.stopped: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.unsupported = False
        self.failed = False
        self.keeper: tuple[socket.socket, Conn | None] | None = None

    def begin(self, started: concurrent.futures.Future[bool]) -> None:
        """On loop 0: run the app's lifespan and send ``lifespan.startup``; ``started`` says whether it worked."""
        loop = asyncio.get_running_loop()
        self.started = started
        self.messages = asyncio.Queue()
        self.messages.put_nowait({"type": "lifespan.startup"})
        self.stopped = loop.create_future()
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.server.state}
        try:
            await self.server.app(scope, self._receive, self._send)
        except BaseException as exc:
            if self.started is not None and not self.started.done():
                if self.config.lifespan == "auto":
                    self.unsupported = True
                    log.info("netloop.asgi: ASGI 'lifespan' protocol appears unsupported.")
                    self.started.set_result(True)
                else:
                    log.error("netloop.asgi: exception in the application's lifespan", exc_info=exc)
                    self.started.set_result(False)
            else:
                log.error("netloop.asgi: exception in the application's lifespan", exc_info=exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            if self.started is not None and not self.started.done():
                self.started.set_result(not self.failed)
            if self.stopped is not None and not self.stopped.done():
                self.stopped.set_result(None)

    async def _receive(self) -> Message:
        assert self.messages is not None
        return await self.messages.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        started = self.started
        assert started is not None and self.stopped is not None
        if kind == "lifespan.startup.complete":
            started.set_result(True)
        elif kind == "lifespan.startup.failed":
            self.failed = True
            log.error("netloop.asgi: the application's startup failed: %s", message.get("message", ""))
            started.set_result(False)
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            log.error("netloop.asgi: the application's shutdown failed: %s", message.get("message", ""))
            self.stopped.set_result(None)
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message {kind!r}")

    def end(self, engine: Engine, config: Config, timeout: float) -> None:
        """From ``on_shutdown`` (on loop 0): hold loop 0, wait for the requests, send ``lifespan.shutdown``."""
        if self.unsupported or self.task is None or self.task.done():
            return
        ours, theirs = socket.socketpair()
        self.keeper = (theirs, None)
        conn = engine.loops[0].enroll(ours)
        self.keeper = (theirs, conn)
        asyncio.get_running_loop().create_task(self._shut_down(timeout))

    def is_keeper(self, conn: Conn) -> bool:
        keeper = self.keeper
        return keeper is not None and (keeper[1] is conn or keeper[1] is None)

    async def _shut_down(self, timeout: float) -> None:
        server = self.server
        deadline = time.monotonic() + timeout
        try:
            while (server.tasks or server.connections) and time.monotonic() < deadline:
                await asyncio.sleep(_POLL)
            assert self.messages is not None and self.stopped is not None
            self.messages.put_nowait({"type": "lifespan.shutdown"})
            try:
                await asyncio.wait_for(asyncio.shield(self.stopped), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                log.error("netloop.asgi: the application's shutdown did not complete in time")
        finally:
            keeper = self.keeper
            if keeper is not None:
                theirs, conn = keeper
                theirs.close()
                if conn is not None:
                    conn.close()
