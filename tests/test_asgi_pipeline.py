"""netloop.asgi with pipelined requests: answered in order, the answers to a parsed batch leaving together, and none
held while the request after it waits on something else. Raw sockets on 127.0.0.1 against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("httptools")

import netloop
from netloop import Conn
from netloop.asgi import ASGIHandler, Config
from tests.asgi_apps import app as sample_app
from tests.test_asgi_http import TIMEOUT, _OneFile, closed_by_server, connect, read_responses

GET = b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n"


class CountingHandler(ASGIHandler):
    """Records the size of each buffer the server writes (``pre_write=True``)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, Config(access_log=False, lifespan="off"))
        self.writes: list[int] = []

    def on_pre_write(self, conn: Conn, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(len(data))


@contextlib.contextmanager
def serving(handler: ASGIHandler, **options: Any) -> Iterator[int]:
    engine = netloop.start(handler, "tcp://127.0.0.1:0", drain_timeout=0.3, **options)
    try:
        yield int(engine.addrs[0].rsplit(":", 1)[1])
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT), "engine did not stop"


class Gate:
    """An ``asyncio.Event`` on the server's loop that a test thread opens, and a note of when the app reached it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None

    async def wait(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.reached.set()
        await self.event.wait()

    def open(self) -> None:
        assert self.reached.wait(TIMEOUT), "the app never reached the gate"
        assert self.loop is not None and self.event is not None
        self.loop.call_soon_threadsafe(self.event.set)


async def path_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers each request with its path."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def test_pipelined_responses_parsed_in_one_read_leave_in_one_write() -> None:
    handler = CountingHandler(path_app)
    with serving(handler, pre_write=True) as port:
        sock = connect(port)
        sock.sendall(b"".join(GET % i for i in range(16)))  # one segment: one read on the server
        responses = read_responses(sock, 16)
        sock.close()
    assert [body for _, _, body in responses] == [b"/%d" % i for i in range(16)]
    # Each response left in a send of its own before (16 writes); a read split in two may take two.
    assert 1 <= len(handler.writes) <= 2, handler.writes


def test_a_response_is_not_held_for_a_request_still_arriving() -> None:
    handler = CountingHandler(path_app)
    with serving(handler, pre_write=True) as port:
        sock = connect(port)
        sock.sendall(GET % 1 + b"GET /2 HTTP/1.1\r\nHo")  # the second request's head is not whole yet
        [(status, _, body)] = read_responses(sock, 1)
        sock.sendall(b"st: x\r\n\r\n")
        [(status2, _, body2)] = read_responses(sock, 1)
        sock.close()
    assert (status, body, status2, body2) == (200, b"/1", 200, b"/2")


def test_a_held_response_leaves_when_the_next_request_waits_on_something_else() -> None:
    gate = Gate()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/wait":
            await gate.wait()  # opened only once the response before this one has reached the client
        await path_app(scope, receive, send)

    with serving(ASGIHandler(app, Config(access_log=False, lifespan="off"))) as port:
        sock = connect(port)
        sock.sendall(GET % 1 + b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n" + GET % 3)
        [(_, _, first)] = read_responses(sock, 1)
        gate.open()
        rest = read_responses(sock, 2)
        sock.close()
    assert [first, *(body for _, _, body in rest)] == [b"/1", b"/wait", b"/3"]


def test_a_streamed_response_in_a_pipeline_sends_each_chunk_before_its_next_await() -> None:
    gate = Gate()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/stream":
            await path_app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await gate.wait()
        await send({"type": "http.response.body", "body": b"last"})

    with serving(ASGIHandler(app, Config(access_log=False, lifespan="off"))) as port:
        sock = connect(port)
        sock.sendall(GET % 1 + b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n" + GET % 3)
        got = b""
        while b"5\r\nfirst\r\n" not in got:  # /1 whole, then /stream's head and first chunk, before the gate opens
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\n/1" in got
        gate.open()
        rest = got.split(b"5\r\nfirst\r\n", 1)[1]
        while not rest.endswith(b"\r\n\r\n/3"):
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            rest += chunk
        sock.close()
    assert rest.startswith(b"4\r\nlast\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n")


def test_the_next_request_starts_while_the_app_before_it_still_runs_after_its_response() -> None:
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/background":
            await path_app(scope, receive, send)
            await started.wait()  # work after the response: set by the next request's app
            return
        started.set()
        await path_app(scope, receive, send)

    with serving(ASGIHandler(app, Config(access_log=False, lifespan="off"))) as port:
        sock = connect(port)
        sock.sendall(b"GET /background HTTP/1.1\r\nHost: x\r\n\r\n" + GET % 2)
        responses = read_responses(sock, 2)
        sock.close()
    assert [body for _, _, body in responses] == [b"/background", b"/2"]


def test_expect_100_continue_behind_a_pipelined_request_comes_after_its_response() -> None:
    with serving(ASGIHandler(sample_app, Config(access_log=False, lifespan="off"))) as port:
        sock = connect(port)
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        stream = sock.makefile("rb")  # one buffered reader: the interim response may come in the same segment
        source = _OneFile(stream)
        first = http.client.HTTPResponse(source, method="GET")  # type: ignore[arg-type]
        first.begin()
        status, body = first.status, first.read()
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n" and stream.readline() == b"\r\n"
        sock.sendall(b"body")
        second = http.client.HTTPResponse(source, method="POST")  # type: ignore[arg-type]
        second.begin()
        status2, body2 = second.status, second.read()
        sock.close()
    assert (status, body, status2, body2) == (200, b"hello", 200, b"body")


def test_a_malformed_request_after_valid_ones_gets_400_after_their_answers_then_the_close() -> None:
    handler = CountingHandler(path_app)
    with serving(handler, pre_write=True) as port:
        sock = connect(port)
        sock.sendall(GET % 1 + GET % 2 + GET % 3 + b"GET / HTTP/1.1\r\nBad Header\r\n\r\n" + GET % 5)
        responses = read_responses(sock, 4)
        assert closed_by_server(sock)
        sock.close()
    assert [(status, body) for status, _, body in responses] == [
        (200, b"/1"),
        (200, b"/2"),
        (200, b"/3"),
        (400, b"Invalid HTTP request received."),
    ]
    assert responses[3][1]["connection"] == "close"
    assert 1 <= len(handler.writes) <= 2, handler.writes


def test_an_app_failing_in_a_pipeline_gets_500_after_the_answers_before_it() -> None:
    with serving(ASGIHandler(sample_app, Config(access_log=False, lifespan="off"))) as port:
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /fail HTTP/1.1\r\nHost: x\r\n\r\n" + GET % 3)
        responses = read_responses(sock, 2)
        assert closed_by_server(sock)
        sock.close()
    assert [(status, body) for status, _, body in responses] == [(200, b"hello"), (500, b"Internal Server Error")]


def test_a_client_leaving_mid_pipeline_disconnects_the_request_in_progress_and_spares_other_connections() -> None:
    gate = Gate()
    heard: list[str] = []
    done = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/wait":
            gate.reached.set()
            heard.append((await receive())["type"])  # the request's (empty) body
            heard.append((await receive())["type"])  # then nothing until the client leaves
            done.set()
            return
        await path_app(scope, receive, send)

    with serving(ASGIHandler(app, Config(access_log=False, lifespan="off"))) as port:
        sock = connect(port)
        sock.sendall(GET % 1 + b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n" + b"".join(GET % i for i in range(3, 17)))
        [(_, _, first)] = read_responses(sock, 1)
        assert gate.reached.wait(TIMEOUT)
        # A reset: reading this connection is held while requests wait their turn, so a FIN would wait unread.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert done.wait(TIMEOUT), "the request in progress never heard the client leave"
        other = connect(port)
        other.sendall(GET % 7)
        [(status, _, body)] = read_responses(other, 1)
        other.close()
    assert first == b"/1"
    assert heard == ["http.request", "http.disconnect"]
    assert (status, body) == (200, b"/7")


def test_large_pipelined_responses_are_not_held_for_the_ones_after_them() -> None:
    from netloop.asgi._cycle import HELD_BODY_MAX

    big = b"x" * (HELD_BODY_MAX + 1)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": big if scope["path"] == "/big" else b"small"})

    handler = CountingHandler(app)
    with serving(handler, pre_write=True) as port:
        sock = connect(port)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 3 + GET % 4)
        responses = read_responses(sock, 4)
        sock.close()
    assert [body for _, _, body in responses] == [big, big, big, b"small"]
    # Each large one leaves as it is written, the small one after them; held, all four would leave in one write.
    assert len(handler.writes) == 4 and all(n > len(big) for n in handler.writes[:3]), handler.writes


def test_pipelined_requests_answered_at_once_run_in_one_task() -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        tasks.append(asyncio.current_task())  # the task object itself: kept alive, so no other can take its id
        await path_app(scope, receive, send)

    with serving(ASGIHandler(app, Config(access_log=False, lifespan="off"))) as port:
        sock = connect(port)
        sock.sendall(b"".join(GET % i for i in range(16)))
        responses = read_responses(sock, 16)
        sock.close()
    assert [body for _, _, body in responses] == [b"/%d" % i for i in range(16)]
    # A task each before, made from the loop once the response before had left.
    assert len(tasks) == 16 and all(task is tasks[0] for task in tasks), {id(task) for task in tasks}


def test_with_a_task_factory_each_pipelined_request_gets_a_task_from_it() -> None:
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.cr_code.co_name)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        asyncio.get_running_loop().set_task_factory(factory)  # from the first request on
        await path_app(scope, receive, send)

    with serving(ASGIHandler(app, Config(access_log=False, lifespan="off"))) as port:
        sock = connect(port)
        sock.sendall(GET % 1 + GET % 2 + GET % 3)
        responses = read_responses(sock, 3)
        sock.close()
    assert [body for _, _, body in responses] == [b"/1", b"/2", b"/3"]
    assert made == ["run", "run"]  # the second and third requests' tasks
