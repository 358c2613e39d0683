"""netloop.asgi over HTTP/1.1: real clients (httpx, curl, raw sockets) against an ASGI app on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("httptools")

import netloop  # noqa: E402
from netloop.asgi import ASGIHandler, Config  # noqa: E402
from tests.asgi_apps import app as sample_app  # noqa: E402

TIMEOUT = 10.0


@contextlib.contextmanager
def serving(app: Any = sample_app, config: Config | None = None, **options: Any) -> Iterator[tuple[str, int]]:
    options.setdefault("drain_timeout", 0.3)  # a kept-alive client holds the stop that long
    engine = netloop.start(ASGIHandler(app, config or Config(access_log=False)), "tcp://127.0.0.1:0", **options)
    try:
        host, port = engine.addrs[0].removeprefix("tcp://").rsplit(":", 1)
        yield host, int(port)
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT), "engine did not stop"


class _OneFile:
    """Lets http.client read several responses off one buffered stream (pipelining)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        return _Kept(self.stream)


class _Kept:
    """The shared stream, which a finished response may not close."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def close(self) -> None:
        pass


def read_responses(sock: socket.socket, count: int, method: str = "GET") -> list[tuple[int, dict[str, str], bytes]]:
    source = _OneFile(sock.makefile("rb"))
    out = []
    for _ in range(count):
        response = http.client.HTTPResponse(source, method=method)  # type: ignore[arg-type]
        response.begin()
        out.append((response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()))
    return out


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server ends the connection (EOF) within the timeout, whatever it still sends."""
    sock.settimeout(TIMEOUT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def test_scope_has_every_key_with_the_request_in_it() -> None:
    with serving(config=Config(access_log=False, root_path="/api")) as (host, port), httpx.Client() as client:
        response = client.get(f"http://{host}:{port}/scope", params={"q": "a b"}, headers={"X-Thing": "Yes"})
        assert response.status_code == 200
        scope = response.json()
        local = client.get(f"http://{host}:{port}/scope")  # a second request on the kept-alive connection
        assert local.status_code == 200
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/scope"
    assert scope["raw_path"] == "/api/scope"
    assert scope["query_string"] == "q=a+b"
    assert ["x-thing", "Yes"] in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["server"] == ["127.0.0.1", port]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["state"] == ["started"]  # the lifespan's state, copied into each request
    assert scope["extensions"] == {}


def test_percent_encoded_path_is_decoded_and_raw_path_kept() -> None:
    with serving() as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET /sc%6Fpe HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, _, body)] = read_responses(sock, 1)
    assert status == 200
    scope = json.loads(body)
    assert scope["path"] == "/scope" and scope["raw_path"] == "/sc%6Fpe"


def test_body_round_trip_and_content_length_on_a_whole_response() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with serving() as (host, port), httpx.Client() as client:
        response = client.post(f"http://{host}:{port}/echo", content=payload)
    assert response.status_code == 200
    assert response.content == payload
    assert response.headers["content-length"] == str(len(payload))
    assert "date" in response.headers


def test_chunked_request_body_is_streamed_to_the_app() -> None:
    def parts() -> Iterator[bytes]:
        yield b"abc"
        yield b"defg"

    with serving() as (host, port), httpx.Client() as client:
        response = client.post(f"http://{host}:{port}/echo", content=parts())
    assert response.content == b"abcdefg"


def test_a_streamed_response_is_chunked() -> None:
    with serving() as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, headers, body)] = read_responses(sock, 1)
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    assert body == b"one two three"


def test_http10_streamed_response_is_close_delimited() -> None:
    with serving() as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"one two three"


def test_http10_keep_alive_when_asked() -> None:
    with serving() as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        [(status, headers, body)] = read_responses(sock, 1)
        assert headers["connection"] == "keep-alive"
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        [(status2, headers2, body2)] = read_responses(sock, 1)
        assert closed_by_server(sock)
    assert (status, body, status2, body2) == (200, b"hello", 200, b"hello")
    assert headers2["connection"] == "close"


def test_pipelined_requests_are_answered_in_order() -> None:
    with serving() as (_host, port):
        sock = connect(port)
        # The first is slow: the others wait for it, whatever their own speed.
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst"
            b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nlast\r\n0\r\n\r\n"
        )
        responses = read_responses(sock, 4)
    assert [body for _, _, body in responses] == [b"slow", b"first", b"one two three", b"last"]


def test_connection_close_closes_after_the_response_and_ignores_what_follows() -> None:
    with serving() as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, headers, body)] = read_responses(sock, 1)
        assert closed_by_server(sock)
    assert (status, body, headers["connection"]) == (200, b"hello", "close")


def test_expect_100_continue_is_sent_when_the_app_reads_the_body() -> None:
    with serving() as (_host, port):
        sock = connect(port)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        [(status, _, body)] = read_responses(sock, 1)
    assert (status, body) == (200, b"body")


def test_expect_100_continue_not_sent_when_the_app_answers_without_reading() -> None:
    with serving() as (_host, port):
        sock = connect(port)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        [(status, headers, body)] = read_responses(sock, 1)
        # The body never came: the connection cannot carry a next request, so it ends.
        assert closed_by_server(sock)
    assert (status, body) == (200, b"hello")
    assert headers["connection"] == "close"


def test_head_gets_headers_and_no_body() -> None:
    with serving() as (_host, port):
        sock = connect(port)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        source = _OneFile(sock.makefile("rb"))
        head = http.client.HTTPResponse(source, method="HEAD")  # type: ignore[arg-type]
        head.begin()
        assert head.read() == b""
        after = http.client.HTTPResponse(source, method="GET")  # type: ignore[arg-type]
        after.begin()
        assert after.read() == b"hello"  # nothing of a body came between the two


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["duplicate-content-length", "bad-request-line", "bad-header", "bad-chunk-size"],
)
def test_malformed_requests_get_400_and_a_close(request_bytes: bytes) -> None:
    with serving() as (_host, port):
        sock = connect(port)
        sock.sendall(request_bytes)
        [(status, headers, _)] = read_responses(sock, 1)
        assert closed_by_server(sock)
    assert status == 400
    assert headers["connection"] == "close"


def test_oversized_head_gets_431() -> None:
    with serving(config=Config(access_log=False, limit_request_head=4096)) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        [(status, _, _)] = read_responses(sock, 1)
        assert closed_by_server(sock)
    assert status == 431


def test_too_many_header_fields_get_431() -> None:
    with serving(config=Config(access_log=False, limit_request_fields=10)) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(11)) + b"\r\n")
        [(status, _, _)] = read_responses(sock, 1)
    assert status == 431


def test_body_over_the_limit_gets_413_by_content_length_and_by_chunks() -> None:
    with serving(config=Config(access_log=False, limit_request_body=1000)) as (host, port):
        sock = connect(port)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
        [(status, _, _)] = read_responses(sock, 1)
        assert status == 413
        sock = connect(port)
        chunk = b"%x\r\n%s\r\n" % (600, b"a" * 600)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + chunk)
        [(status, _, _)] = read_responses(sock, 1)
        assert status == 413
        assert closed_by_server(sock)
        with httpx.Client() as client:  # within the limit: served
            assert client.post(f"http://{host}:{port}/echo", content=b"a" * 1000).content == b"a" * 1000


def test_app_exception_gets_500_and_the_server_goes_on() -> None:
    with serving() as (host, port), httpx.Client() as client:
        failed = client.get(f"http://{host}:{port}/fail")
        after = client.get(f"http://{host}:{port}/")
    assert failed.status_code == 500
    assert after.status_code == 200 and after.content == b"hello"


def test_limit_concurrency_answers_503_past_it() -> None:
    release = threading.Event()
    entered = threading.Event()

    async def blocking(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/hold":
            entered.set()
            while not release.is_set():
                await asyncio.sleep(0.005)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = Config(access_log=False, limit_concurrency=1, lifespan="off")
    with serving(blocking, config) as (_host, port):
        holder = connect(port)
        holder.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(TIMEOUT)
        other = connect(port)
        other.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, _, _)] = read_responses(other, 1)
        release.set()
        [(held_status, _, body)] = read_responses(holder, 1)
    assert status == 503
    assert (held_status, body) == (200, b"ok")


def test_http_disconnect_when_the_client_leaves() -> None:
    heard: list[dict[str, Any]] = []
    done = threading.Event()
    waiting = threading.Event()

    async def listener(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the (empty) body
        waiting.set()
        heard.append(await receive())  # nothing more comes: only the disconnect
        done.set()

    with serving(listener, Config(access_log=False, lifespan="off")) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert waiting.wait(TIMEOUT)
        sock.close()
        assert done.wait(TIMEOUT)
    assert heard == [{"type": "http.disconnect"}]


def test_a_request_head_not_complete_within_read_timeout_is_closed() -> None:
    with serving(read_timeout=0.2) as (host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert closed_by_server(sock)
        with httpx.Client() as client:  # a whole request is not affected
            assert client.get(f"http://{host}:{port}/").status_code == 200


def test_an_idle_kept_alive_connection_is_closed_after_timeout_keep_alive() -> None:
    with serving(config=Config(access_log=False, timeout_keep_alive=0.2)) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, _, _)] = read_responses(sock, 1)
        assert status == 200
        ready, _, _ = select.select([sock], [], [], TIMEOUT)
        assert ready and sock.recv(1) == b""


def test_request_body_backpressure_holds_the_client_while_the_app_does_not_read() -> None:
    size = 64 * 1024 * 1024
    release = asyncio.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []

    async def late_reader(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        loop_box.append(asyncio.get_running_loop())
        await release.wait()
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(total).encode()})

    with serving(late_reader, Config(access_log=False, lifespan="off")) as (_host, port):
        sock = connect(port)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        sock.setblocking(False)
        block = b"x" * 65536
        sent = 0
        while sent < size:
            _, writable, _ = select.select([], [sock], [], 0.3)
            if not writable:
                break  # the server stopped taking the body: held
            try:
                sent += sock.send(block[: size - sent])
            except BlockingIOError:
                pass
        # What the kernel buffers plus the server's high-water mark; far from all of it.
        assert sent < size // 2, sent
        loop_box[0].call_soon_threadsafe(release.set)
        sock.setblocking(True)
        while sent < size:
            sent += sock.send(block[: size - sent])
        [(status, _, body)] = read_responses(sock, 1)
    assert (status, body) == (200, str(size).encode())


def test_curl_gets_answers() -> None:
    with serving() as (host, port):
        result = subprocess.run(
            ["curl", "-s", "--data-binary", "posted", f"http://{host}:{port}/echo", f"http://{host}:{port}/stream"],
            capture_output=True,
            timeout=TIMEOUT,
        )
    assert result.returncode == 0
    assert result.stdout == b"posted" + b"one two three"  # curl posts only to the first URL, GETs the second


def test_a_read_full_of_pipelined_requests_is_parsed_a_bounded_way_ahead() -> None:
    from netloop.asgi._http import FEED_SLICE, MAX_PIPELINE

    release = asyncio.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []
    handler_box: list[ASGIHandler] = []
    waiting: list[int] = []
    looked = threading.Event()

    async def holding(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/hold":
            loop_box.append(asyncio.get_running_loop())
            await asyncio.sleep(0)  # the rest of the read is parsed meanwhile
            waiting.extend(len(p.queue) for p in handler_box[0].server.protocols)  # type: ignore[attr-defined]
            looked.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    handler = ASGIHandler(holding, Config(access_log=False, lifespan="off"))
    handler_box.append(handler)
    count = 2000
    request = b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n"
    engine = netloop.start(handler, "tcp://127.0.0.1:0", drain_timeout=0.3)
    try:
        port = int(engine.addrs[0].rsplit(":", 1)[1])
        sock = connect(port)
        sock.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n" + b"".join(request % i for i in range(1, count)))
        assert looked.wait(TIMEOUT), "the held request never ran"
        assert max(waiting) <= MAX_PIPELINE + FEED_SLICE // len(request % 1), waiting
        loop_box[0].call_soon_threadsafe(release.set)
        responses = read_responses(sock, count)
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT)
    assert [body for _, _, body in responses] == [b"/hold", *(b"/%d" % i for i in range(1, count))]


def test_a_stop_lets_the_request_in_flight_finish_then_runs_the_lifespan_shutdown() -> None:
    events: list[str] = []
    entered = threading.Event()
    release = asyncio.Event()
    loop_box: list[asyncio.AbstractEventLoop] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        loop_box.append(asyncio.get_running_loop())
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"finished"})
        events.append("answered")

    stopping = threading.Event()

    class Handler(ASGIHandler):
        def on_shutdown(self, engine: netloop.Engine) -> None:
            super().on_shutdown(engine)
            stopping.set()

    engine = netloop.start(Handler(app, Config(access_log=False)), "tcp://127.0.0.1:0", drain_timeout=5.0)
    port = int(engine.addrs[0].rsplit(":", 1)[1])
    sock = connect(port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert entered.wait(TIMEOUT)
    stopper = threading.Thread(target=engine.stop, kwargs={"timeout": TIMEOUT})
    stopper.start()
    assert stopping.wait(TIMEOUT)
    with pytest.raises(OSError):  # accepting stopped
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    loop_box[0].call_soon_threadsafe(release.set)
    [(status, headers, body)] = read_responses(sock, 1)
    sock.close()
    stopper.join(TIMEOUT)
    assert engine.wait(TIMEOUT)
    assert (status, body, headers["connection"]) == (200, b"finished", "close")
    assert events == ["answered", "shutdown"]


@pytest.mark.parametrize(
    "header",
    [(b"x-split", b"a\r\nset-cookie: evil=1"), (b"bad name", b"v"), (b"content-length", b"nope")],
    ids=["crlf-in-value", "space-in-name", "bad-content-length"],
)
def test_a_response_header_that_would_split_the_response_is_a_500(header: tuple[bytes, bytes]) -> None:
    async def splitting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [header]})
        await send({"type": "http.response.body", "body": b"never"})

    with serving(splitting, Config(access_log=False, lifespan="off")) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, headers, body)] = read_responses(sock, 1)
    assert status == 500
    assert "set-cookie" not in headers and body == b"Internal Server Error"


def test_a_response_longer_than_its_content_length_ends_the_connection() -> None:
    async def liar(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def"})

    with serving(liar, Config(access_log=False, lifespan="off")) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # until the server closes
            data += chunk
    # One response, its 3 bytes, and nothing of "def" where the client would read a next response.
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nabc")
    assert data.count(b"HTTP/1.1") == 1


def test_a_stop_during_an_upload_reads_the_rest_of_its_body() -> None:
    entered = threading.Event()
    stopping = threading.Event()

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    class Handler(ASGIHandler):
        def on_shutdown(self, engine: netloop.Engine) -> None:
            super().on_shutdown(engine)
            stopping.set()

    engine = netloop.start(
        Handler(counting, Config(access_log=False, lifespan="off")), "tcp://127.0.0.1:0", drain_timeout=5.0
    )
    port = int(engine.addrs[0].rsplit(":", 1)[1])
    sock = connect(port)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"a" * 100000)
    assert entered.wait(TIMEOUT)
    stopper = threading.Thread(target=engine.stop, kwargs={"timeout": TIMEOUT})
    stopper.start()
    assert stopping.wait(TIMEOUT)
    sock.sendall(b"a" * 100000)  # the rest comes after the stop began
    [(status, headers, body)] = read_responses(sock, 1)
    sock.close()
    stopper.join(TIMEOUT)
    assert engine.wait(TIMEOUT)
    assert (status, body, headers["connection"]) == (200, b"200000", "close")


def test_a_header_that_never_ends_gets_431_not_unbounded_memory() -> None:
    with serving(config=Config(access_log=False, limit_request_head=16384)) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        with contextlib.suppress(OSError):  # the server may close while this is still being sent
            sock.sendall(b"a" * 200_000)  # no CRLF: httptools would keep the value until it ends
        [(status, _, _)] = read_responses(sock, 1)
        assert closed_by_server(sock)
    assert status == 431
