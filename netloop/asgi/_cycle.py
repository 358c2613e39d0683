"""One HTTP request's cycle for the ASGI app (its ``receive`` and ``send``), and the responses held to leave together.

``Cycle.run`` calls the app for its request, then for each pipelined request whose turn comes before that app
returns: they share a task. ``send`` writes a response to the connection, or, when the next request is parsed
already, to the connection's ``Batch``, which ``HttpProtocol.flush`` writes in one go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any

from netloop._conn import Conn
from netloop._errors import ConnClosedError
from netloop.aio import drain
from netloop.asgi._response import Response
from netloop.asgi._types import Message

if TYPE_CHECKING:
    from netloop.asgi._http import HttpProtocol

MAX_PIPELINE = 16
"""Requests parsed ahead of the one being answered; past it the rest of a read waits unparsed (and reading is held)."""
HELD_BODY_MAX = 16384
"""A response body larger than this is not held for the responses after it (nor are more than ``MAX_PIPELINE``
responses): what is held stays small."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Rejected(Exception):
    """A request answered with ``status`` (and ``reason`` as its body) before the app sees it; then the close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Cycle:
    """One request and its response: the app's ``receive`` and ``send``."""

    __slots__ = (
        "body_done",
        "buffered",
        "chunks",
        "disconnected",
        "expect_continue",
        "final_taken",
        "head_only",
        "keep_alive",
        "proto",
        "received",
        "rejected",
        "response",
        "response_complete",
        "scope",
        "started",
        "waiter",
    )

    def __init__(self, proto: HttpProtocol, scope: dict[str, Any], keep_alive: bool, head_only: bool) -> None:
        self.proto = proto
        self.scope = scope
        self.keep_alive = keep_alive
        self.head_only = head_only
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.received = 0
        self.body_done = False
        self.final_taken = False
        self.disconnected = False
        self.expect_continue = False
        self.started = False
        self.rejected: Rejected | None = None
        self.response: Response | None = None
        self.response_complete = False
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, app: Any) -> None:
        """Call the app for this request, then for each request whose turn comes meanwhile (``proto.next_up``):
        pipelined requests answered one after the other share a task, with no trip through the loop between."""
        proto = self.proto
        server = proto.server
        cycle: Cycle | None = self
        while cycle is not None:
            try:
                await app(cycle.scope, cycle.receive, cycle.send)
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    if not cycle.response_complete:
                        proto.abort()
                    raise
                server.log_app_error(cycle, exc)
                cycle._failed()
            else:
                if cycle.response is None:
                    if not cycle.disconnected:
                        server.log_app_error(cycle, RuntimeError("ASGI callable returned without starting response."))
                    cycle._failed()
                elif not cycle.response_complete:
                    if not cycle.disconnected:
                        server.log_app_error(cycle, RuntimeError("ASGI callable returned without completing response."))
                    proto.abort()
            finally:
                server.tasks -= 1
            cycle = proto.next_up
            if cycle is not None:
                proto.next_up = None
                app = proto.next_app()

    def _failed(self) -> None:
        proto = self.proto
        if self.response_complete:
            return
        if self.response is not None:
            proto.abort()
            return
        self.response_complete = True
        rejected = self.rejected
        if rejected is None:
            if self.disconnected:
                proto.abort()
                return
            rejected = Rejected(500, "Internal Server Error")
        proto.active = None
        proto._answer_rejected(rejected)

    async def receive(self) -> Message:
        if self.expect_continue:
            self.expect_continue = False
            proto = self.proto
            if not proto.conn.closed and self.response is None:
                proto.flush(_CONTINUE)  # after the responses held before it
        while True:
            if self.disconnected or self.response_complete:
                return {"type": "http.disconnect"}
            if self.chunks:
                chunks = self.chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self.chunks = []
                self.buffered = 0
                self.proto.body_taken(self)
                more = not self.body_done
                self.final_taken = not more
                return {"type": "http.request", "body": body, "more_body": more}
            if self.body_done and not self.final_taken:
                self.final_taken = True
                return {"type": "http.request", "body": b"", "more_body": False}
            waiter = self.waiter = self.proto.loop.create_future()
            await waiter

    def send(self, message: Message) -> Awaitable[None]:
        """The app's ``send``: a plain call returning an awaitable, done already unless the write must wait for the
        connection to drain (no coroutine per message)."""
        response = self.response
        kind = message["type"]
        if response is None:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self.expect_continue = False
            self.response = Response(self, message)
            return DONE
        if self.response_complete:
            if self.disconnected:
                return DONE
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        if self.disconnected:
            return DONE
        body = message.get("body", b"")
        more = message.get("more_body", False)
        proto = self.proto
        conn = proto.conn
        batch = proto.batch
        try:
            if not more and proto.queue and len(body) <= HELD_BODY_MAX and (batch is None or len(batch) < MAX_PIPELINE):
                # The next request is parsed already: this response leaves with its answer.
                response.write(batch if batch is not None else proto.start_batch(), body, more)
            elif batch is None:
                response.write(conn, body, more)
            else:
                response.write(batch, body, more)
                proto.flush()  # no parsed request left, or a streamed part: what is held leaves now
        except ConnClosedError:
            self.disconnected = True
            return DONE
        if not more:
            self.response_complete = True
            if self.waiter is not None:
                self.wake()
            server = proto.server
            if server.access:
                server.log_access(self)
            proto.response_complete(self)
        elif conn.outbound_buffered():
            return self._drain(conn)
        return DONE

    async def _drain(self, conn: Conn) -> None:
        try:
            await drain(conn)
        except ConnClosedError:
            self.disconnected = True


class Batch(list[bytes]):
    """Held responses: ``Response.write`` writes to it as to a connection."""

    __slots__ = ()
    write = list.append


class _Done(tuple):  # type: ignore[type-arg]
    """An awaitable already done: ``await`` on it returns None at once, without a trip through the event loop."""

    __slots__ = ()
    if TYPE_CHECKING:

        def __await__(self) -> Generator[Any, None, None]: ...

    else:
        __await__ = tuple.__iter__  # an empty tuple's iterator: done as soon as it is asked


DONE: Awaitable[None] = _Done()


async def service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Service Unavailable"})
