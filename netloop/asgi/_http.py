"""HTTP/1.1 for ASGI on a netloop connection: httptools parses in ``on_traffic``, each request runs the app as a task.

Nothing runs as a task but the application: the head and body are parsed in the connection's plain callback, the
app's ``send`` writes straight to the connection. Flow control: a request body the app has not taken yet holds
reading once ``BODY_HIGH_WATER`` bytes wait, and so does a pipelined request waiting for the response before it;
the app's writes wait for ``netloop.aio.drain`` while the outbound bytes are above ``write_buffer_cap``.

Pipelining: a response that completes while the next request is parsed already is held, and leaves in one write with
the answers after it once no parsed request remains (or at the loop's next turn, when an app waits on something
first); the next request's app runs in the task that answered the one before, once that app returns.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from netloop._conn import Conn
from netloop._errors import ConnClosedError
from netloop.asgi._cycle import MAX_PIPELINE, Batch, Cycle, Rejected, service_unavailable
from netloop.asgi._response import error_response
from netloop.asgi._types import ASGIApp

if TYPE_CHECKING:
    from netloop.asgi._handler import ServerState

BODY_HIGH_WATER = 65536
"""Request body bytes waiting for the app before the connection's reading is held."""

FEED_SLICE = 8192
"""A read larger than this is parsed a slice at a time, so a read full of tiny pipelined requests stays bounded."""

STOP_IDLE_S = 0.5
"""On a stop, a kept-alive connection idle this long is closed; one idle for less may have a request on its way."""

HOLD_BODY = 1
HOLD_PIPELINE = 2

_EXPECT_CONTINUE = b"100-continue"
_HASH = ord("#")
"""An int, not ``b"#"``: bytes' ``in`` tries its operand as an int first, and a bytes one costs a TypeError
formatted and cleared (on every request); ``find`` avoids that but parses its arguments as a tuple."""
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_Task = asyncio.Task
EAGER_START = sys.version_info >= (3, 12)
"""Start each connection's first request's app eagerly (``Task(eager_start=True)``, Python 3.12+)."""
_now = time.monotonic  # asyncio's loop.time(), without its call


class HttpProtocol:
    """``conn.context`` of an HTTP/1.1 connection: the parser's callbacks, and the requests in order."""

    __slots__ = (
        "active",
        "batch",
        "batch_end_due",
        "client",
        "conn",
        "cycle",
        "expect",
        "fields",
        "forwarded",
        "forwarded_seen",
        "head_size",
        "headers",
        "held",
        "idle_since",
        "idle_timer",
        "in_head",
        "loop",
        "next_up",
        "parser",
        "pending",
        "queue",
        "rejected",
        "server",
        "server_addr",
        "starting",
        "stopped_reading",
        "timed",
        "unparsed_head",
        "upgrade",
        "url",
    )

    def __init__(self, server: ServerState, conn: Conn, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.conn = conn
        self.loop = loop
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.fields = 0
        self.expect: bytes | None = None
        self.in_head = False
        self.unparsed_head = 0  # bytes fed since a head began that httptools keeps to itself (a header not ended)
        self.cycle: Cycle | None = None  # the request being parsed
        self.active: Cycle | None = None  # the request whose response is being sent
        self.starting: Cycle | None = None  # the active request, its task made once feed_data returns
        self.queue: deque[Cycle | Rejected] = deque()  # pipelined requests (or a refusal) after the active one
        self.next_up: Cycle | None = None  # the active request, its app not called yet: the task before runs it
        self.batch: Batch | None = None  # responses held to leave with those after them
        self.batch_end_due = False  # _batch_end is on the loop's queue
        self.held = 0
        self.pending = b""  # bytes of a read not parsed yet: MAX_PIPELINE requests wait already
        self.stopped_reading = False  # after a request that ends the connection: later bytes are dropped
        self.rejected: Rejected | None = None
        self.upgrade: bytes | None = None
        self.client = _client_of(conn)
        # The peer is the connection's: whether its X-Forwarded-* headers count is decided once, here.
        forwarded = server.forwarded
        self.forwarded = forwarded if forwarded is not None and forwarded.trusts(self.client) else None
        self.forwarded_seen = False  # a request had an X-Forwarded-For/-Proto field (a hint: a stale True is harmless)
        self.server_addr = _server_of(conn)
        # Messages are timed only with the engine's read_timeout: without it start/end_message do nothing.
        self.timed = getattr(conn.event_loop, "message_timeout", None) is not None
        # One timer per connection, re-armed lazily: a request only clears ``idle_since`` (no timer churn per request).
        self.idle_since: float | None = _now()
        self.idle_timer: asyncio.TimerHandle | None = loop.call_later(server.config.timeout_keep_alive, self._idle)

    # -- netloop events -------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.stopped_reading:
            return
        self.idle_since = None
        if self.pending:
            data = self.pending + data
            self.pending = b""
        if len(data) <= FEED_SLICE:
            # _feed's work, without its call: the common read, one or a few whole requests
            try:
                self.parser.feed_data(data)
            except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
                self._parse_failed(exc, data, b"")
            else:
                if self.in_head:
                    self._head_fed(len(data))
            if self.starting is not None:
                self._start(self.starting, eager=True)
                if self.queue and not self.held & HOLD_PIPELINE:
                    self._hold(HOLD_PIPELINE)
            return
        view = memoryview(data)
        for start in range(0, len(data), FEED_SLICE):
            if self.stopped_reading:
                return
            if len(self.queue) >= MAX_PIPELINE:
                self.pending = bytes(view[start:])
                self._hold(HOLD_PIPELINE)
                return
            end = start + FEED_SLICE
            if not self._feed(bytes(view[start:end]), view[end:]):
                return

    def _feed(self, data: bytes, after: memoryview | bytes) -> bool:
        """Parse ``data`` (``after``: the bytes that follow it); False once this connection's HTTP has ended."""
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            self._parse_failed(exc, data, after)
            fed = False
        else:
            fed = not self.in_head or self._head_fed(len(data))
        if self.starting is not None:
            self._start(self.starting, eager=True)
            if self.queue and not self.held & HOLD_PIPELINE:
                self._hold(HOLD_PIPELINE)
        return fed

    def _head_fed(self, n: int) -> bool:
        """``n`` bytes went to a head not ended yet; False (the request refused) once it is too large."""
        # httptools holds a header field until it ends: count what a head has taken so far (at most a slice more
        # than it), so one endless header cannot grow without bound.
        self.unparsed_head += n
        if self.unparsed_head > self.server.config.limit_request_head + FEED_SLICE:
            self._reject(Rejected(431, "Request header fields too large."))
            return False
        return True

    def _parse_failed(self, exc: Exception, data: bytes, after: memoryview | bytes) -> None:
        if isinstance(exc, httptools.HttpParserUpgrade):
            self._upgraded(data[exc.args[0] :] + bytes(after))
            return
        rejected = self.rejected
        if rejected is None:
            rejected = Rejected(400, "Invalid HTTP request received.")
        self._reject(rejected)

    def _feed_pending(self) -> None:
        if self.pending and not self.conn.closed and not self.stopped_reading:
            data, self.pending = self.pending, b""
            self.data_received(data)
            if not self.pending and not self.queue:
                self._release(HOLD_PIPELINE)

    def connection_lost(self) -> None:
        """The connection closed: every request still here hears ``http.disconnect``."""
        timer = self.idle_timer
        if timer is not None:
            timer.cancel()
            self.idle_timer = None
        self.stopped_reading = True
        self.batch = None
        for cycle in (self.active, self.cycle, *self.queue):
            if isinstance(cycle, Cycle):
                cycle.disconnected = True
                cycle.wake()
        self.queue.clear()

    def eof_received(self) -> bool:
        """The client's FIN: as with uvicorn, the client is gone (requests hear ``http.disconnect``); close."""
        self.connection_lost()
        return True

    def shutdown(self) -> None:
        """The server is stopping: close after the response in progress (whose request body may still be arriving:
        reading goes on, and ends with that request), or when idle ``STOP_IDLE_S`` (a request that comes first is
        answered with ``connection: close``: closing under a request on its way would cut it)."""
        if self.active is None and not self.queue and self.cycle is None:
            if self.idle_timer is not None:
                self.idle_timer.cancel()
            self._idle()
            return
        for cycle in (self.active, self.cycle):
            if cycle is not None:
                cycle.keep_alive = False
        self.queue.clear()

    # -- httptools callbacks --------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_head = True
        self.unparsed_head = 0
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.fields = 0
        self.expect = None
        if self.timed:
            self.conn.start_message()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.server.config.limit_request_head:
            self._refuse(431, "Request line too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        self.fields += 1
        config = self.server.config
        if self.head_size > config.limit_request_head or self.fields > config.limit_request_fields:
            self._refuse(431, "Request header fields too large.")
        name = name.lower()
        if name == b"expect" and self.expect is None:
            self.expect = value
        elif name == b"x-forwarded-for" or name == b"x-forwarded-proto":
            self.forwarded_seen = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.timed:
            self.conn.end_message()
        parser = self.parser
        server = self.server
        config = server.config
        headers = self.headers
        if parser.should_upgrade():
            upgrade = _header(headers, b"upgrade")
            if upgrade is not None and upgrade.lower() == b"websocket" and server.ws_enabled:
                if self.active is not None or self.queue:
                    self._refuse(400, "WebSocket upgrade pipelined behind another request.")
                self.upgrade = upgrade
                return
            # Any other upgrade (h2c...) is answered as plain HTTP, and the connection ends after it: httptools
            # stops parsing at an upgrade's head.
        url = self.url
        if url[:1] == b"/" and url.isascii() and _HASH not in url:
            # An origin-form target: httptools.parse_url would split it at the first "?" and nothing more.
            raw_path, _, query = url.partition(b"?")
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._refuse(400, "Invalid HTTP request target.")
            raw_path = parsed.path
            query = parsed.query or b""
        path = raw_path.decode("ascii", "replace")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = config.root_path
        method = parser.get_method().decode("ascii")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": parser.get_http_version(),
            "server": self.server_addr,
            "client": self.client,
            "scheme": server.scheme,
            "method": method,
            "root_path": root,
            "path": root + path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": query,
            "headers": headers,
            "state": server.state.copy(),
            "extensions": {},
        }
        if self.forwarded_seen:
            # Only a request that names a forwarded field pays for the look (a trusted peer's or not).
            self.forwarded_seen = False
            if self.forwarded is not None:
                self.forwarded.rewrite(scope)
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade() and not server.stopping
        limit = config.limit_request_body
        if limit is not None:
            length = _header(headers, b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                self._refuse(413, "Request body too large.")
        cycle = Cycle(self, scope, keep_alive, method == "HEAD")
        if self.expect == _EXPECT_CONTINUE and scope["http_version"] == "1.1":
            cycle.expect_continue = True
        self.cycle = cycle
        if self.active is None:
            if EAGER_START:
                # Its turn now, its task once feed_data returns: the app's first step runs at once, with what
                # this read holds of the request (a GET whole) parsed already.
                self.active = self.starting = cycle
                cycle.started = True
            else:
                self._start(cycle)
        else:
            self.queue.append(cycle)
            if not self.held & HOLD_PIPELINE and self.starting is None:
                # (Behind a request about to start eagerly, reading is held after its step, if it still must be:
                # its app may answer every request of the read at once.)
                self._hold(HOLD_PIPELINE)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None:
            return
        cycle.received += len(body)
        limit = self.server.config.limit_request_body
        if limit is not None and cycle.received > limit:
            self._refuse(413, "Request body too large.")
        if cycle.response_complete or cycle.disconnected:
            return
        cycle.chunks.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > BODY_HIGH_WATER:
            self._hold(HOLD_BODY)
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle is None:
            return
        self.cycle = None
        cycle.body_done = True
        if cycle.waiter is not None:
            cycle.wake()
        if not cycle.keep_alive:
            self.stopped_reading = True  # what follows a last request is not read

    # -- requests in order ----------------------------------------------------------------------------------

    def _refuse(self, status: int, reason: str) -> None:
        """From a parser callback: stop parsing this connection and answer ``status`` in the request's turn."""
        self.rejected = Rejected(status, reason)
        raise self.rejected

    def _reject(self, rejected: Rejected) -> None:
        self.stopped_reading = True
        cycle = self.cycle
        if cycle is not None and cycle.started:
            # The app already runs this request (a body past the limit, bad chunking): it hears http.disconnect,
            # and the refusal is the answer if the app has not started one.
            self.cycle = None
            cycle.rejected = rejected
            cycle.disconnected = True
            cycle.wake()
            return
        if cycle is not None and cycle in self.queue:
            self.queue.remove(cycle)
        self.cycle = None
        if self.active is None and not self.queue:
            self._answer_rejected(rejected)
        else:
            self.queue.append(rejected)

    def _answer_rejected(self, rejected: Rejected) -> None:
        conn = self.conn
        if conn.closed:
            return
        self.server.log_refused(self, rejected)
        try:
            self.flush(error_response(rejected.status, rejected.reason))
        except ConnClosedError:
            return
        conn.close()

    def flush(self, data: bytes = b"") -> None:
        """Write the held responses and ``data`` after them, in one write (``ConnClosedError`` as ``Conn.write``)."""
        batch = self.batch
        if batch is None:
            self.conn.write(data)
            return
        self.batch = None
        if data:
            batch.append(data)
        self.conn.write(b"".join(batch))

    def start_batch(self) -> Batch:
        """Hold the responses written from now on, to leave with those after them (by the loop's next turn)."""
        batch = self.batch = Batch()
        self._batch_end_soon()
        return batch

    def _batch_end_soon(self) -> None:
        if not self.batch_end_due:
            self.batch_end_due = True
            self.loop.call_soon(self._batch_end)

    def _batch_end(self) -> None:
        """The loop's turn after responses were held or a request's turn came: what is held leaves, and a request
        whose app has not run (the app before it waits on something) gets a task of its own."""
        self.batch_end_due = False
        self._flush_held()
        cycle = self.next_up
        if cycle is not None:
            self.next_up = None
            self._start(cycle, eager=EAGER_START)

    def _flush_held(self) -> bool:
        """Write the held responses, if any; False when the connection is gone."""
        if self.batch is not None and not self.conn.closed:
            try:
                self.flush()
            except ConnClosedError:
                return False
        return True

    def _close(self) -> None:
        """Close the connection after the held responses."""
        if self._flush_held():
            self.conn.close()

    def next_app(self) -> ASGIApp:
        """The app for the request whose turn has come (counted in ``server.tasks``): a 503 past the limit."""
        server = self.server
        limit = server.config.limit_concurrency
        app = server.app
        if limit is not None and (server.tasks >= limit or server.connections > limit):
            app = service_unavailable
        server.tasks += 1
        return app

    def _start(self, cycle: Cycle, eager: bool = False) -> None:
        """Run the app for ``cycle`` as a task; ``eager``: its first step now (Python 3.12+), not from the loop."""
        self.starting = None
        self.active = cycle
        cycle.started = True
        app = self.next_app()
        loop = self.loop
        if loop._task_factory is not None:  # type: ignore[attr-defined]
            loop.create_task(cycle.run(app))
        elif eager:
            _Task(cycle.run(app), loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        else:
            _Task(cycle.run(app), loop=loop)  # what create_task does, less its calls

    def response_complete(self, cycle: Cycle) -> None:
        """``cycle``'s last body byte is written: the next request's turn (the app may still be running)."""
        self.active = None
        conn = self.conn
        if self.stopped_reading and conn.closed:
            return  # its on_close has run (and with it connection_lost, which stops reading)
        if not cycle.keep_alive or not cycle.body_done or cycle.rejected is not None:
            # A response sent before its request's body was read whole ends the connection: what the client
            # still sends is not a next request.
            self.stopped_reading = True
            self.queue.clear()
            self._close()
            return
        queue = self.queue
        if queue:
            item = queue.popleft()
            if isinstance(item, Rejected):
                self._answer_rejected(item)
                return
            if self.loop._task_factory is not None:  # type: ignore[attr-defined]
                self._start(item)  # each request's task from the loop's factory
            else:
                # Its turn, with no trip through the loop: the task that runs this app runs that one's next (or,
                # should this app wait on something first, _batch_end starts it).
                self.active = self.next_up = item
                item.started = True
                self._batch_end_soon()
        elif not self.stopped_reading and not self.pending:
            self.idle_since = _now()
            if self.idle_timer is None:
                self.idle_timer = self.loop.call_later(self.server.config.timeout_keep_alive, self._idle)
        if self.pending:
            if len(queue) < MAX_PIPELINE:
                self.loop.call_soon(self._feed_pending)
        elif not queue and self.held:
            self._release(HOLD_PIPELINE)

    def abort(self) -> None:
        """The response cannot be completed (the app failed after starting it): end the connection."""
        self.active = None
        self.stopped_reading = True
        self.queue.clear()
        if not self.conn.closed:
            self._close()

    def body_taken(self, cycle: Cycle) -> None:
        if self.held & HOLD_BODY and cycle.buffered <= BODY_HIGH_WATER // 2:
            self._release(HOLD_BODY)

    def _hold(self, reason: int) -> None:
        if not self.held:
            self.conn.pause_reading()
        self.held |= reason

    def _release(self, reason: int) -> None:
        if self.held & reason:
            self.held &= ~reason
            if not self.held and not self.conn.closed:
                self.conn.resume_reading()

    def _idle(self) -> None:
        self.idle_timer = None
        since = self.idle_since
        if since is None or self.conn.closed or self.stopped_reading:
            return  # busy: the next response's end arms the timer again
        server = self.server
        limit = (
            min(STOP_IDLE_S, server.config.timeout_keep_alive) if server.stopping else server.config.timeout_keep_alive
        )
        left = since + limit - _now()
        if left > 0:
            self.idle_timer = self.loop.call_later(left, self._idle)
        elif self.active is None and not self.queue and self.cycle is None:
            self.stopped_reading = True
            self.conn.close()

    def _upgraded(self, rest: bytes) -> None:
        """httptools stopped at an upgrade's head: hand the connection to the WebSocket protocol."""
        if self.upgrade is None:
            # Not a WebSocket: the request was answered as plain HTTP (on_headers_complete); nothing after it is read.
            self.stopped_reading = True
            return
        self.server.upgrade_websocket(self, rest)

    def request_head(self) -> bytes:
        """The head of the request being upgraded, as it came (for the WebSocket handshake)."""
        method = self.parser.get_method()
        lines = [b"%s %s HTTP/%s" % (method, self.url, self.parser.get_http_version().encode())]
        lines += [b"%s: %s" % (name, value) for name, value in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _client_of(conn: Conn) -> tuple[str, int] | None:
    addr = conn.remote_addr
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (str(addr[0]), int(addr[1]))
    return None


def _server_of(conn: Conn) -> tuple[str, int | None] | None:
    addr = conn.local_addr
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (str(addr[0]), int(addr[1]))
    if isinstance(addr, str) and addr:
        return (addr, None)
    return None


def is_token(name: bytes) -> bool:
    return _TOKEN.fullmatch(name) is not None
