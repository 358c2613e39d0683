"""netloop.asgi's request scope and response path on real sockets: what its short cuts must keep.

The request target is split without ``httptools.parse_url`` when it is a plain origin-form path; response header
lines are checked once and kept; ``send`` returns an awaitable already done rather than a coroutine. Each test here
pins what those must not change.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

httptools = pytest.importorskip("httptools")

from netloop.asgi import Config  # noqa: E402
from tests.test_asgi_http import TIMEOUT, connect, read_responses, serving  # noqa: E402

QUIET = Config(access_log=False, lifespan="off")


async def target_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers every request with its path, raw_path and query_string as JSON."""
    if scope["type"] != "http":
        return
    view = {"path": scope["path"], "raw_path": scope["raw_path"].hex(), "query": scope["query_string"].hex()}
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(view).encode()})


@pytest.mark.parametrize(
    "target",
    [b"/a?b=1?c", b"/a?", b"/?", b"//x/y", b"/p%20q?x=%20", b"/a#frag", b"/a?b#frag", b"/a;p?q", b"http://x/a?q=1"],
)
def test_request_targets_are_split_as_httptools_parse_url_splits_them(target: bytes) -> None:
    parsed = httptools.parse_url(target)
    with serving(target_app, QUIET) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
        [(status, _headers, body)] = read_responses(sock, 1)
        sock.close()
    assert status == 200
    view = json.loads(body)
    assert bytes.fromhex(view["raw_path"]) == parsed.path
    assert bytes.fromhex(view["query"]) == (parsed.query or b"")


def test_send_returns_an_awaitable_that_asyncio_takes_everywhere() -> None:
    async def awaiting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.wait_for(send({"type": "http.response.start", "status": 200, "headers": []}), TIMEOUT)
        await asyncio.ensure_future(send({"type": "http.response.body", "body": b"a", "more_body": True}))
        await asyncio.gather(send({"type": "http.response.body", "body": b"b", "more_body": True}))
        await send({"type": "http.response.body", "body": b"c"})

    with serving(awaiting, QUIET) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, headers, body)] = read_responses(sock, 1)
        sock.close()
    assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"abc")


def _answer(headers: list[Any], body: bytes = b"hello") -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _get(port: int) -> tuple[int, dict[str, str], bytes, bytes]:
    """One GET on a new connection: status, headers (lower-cased names), body and the raw head."""
    sock = connect(port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, "the server closed before its answer"
        raw += chunk
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "the server closed within the body"
        body += chunk
    sock.close()
    return int(lines[0].split()[1]), headers, body, head


def test_a_header_checked_before_is_still_counted_as_a_content_length() -> None:
    length = (b"content-length", b"5")
    with serving(_answer([length]), QUIET) as (_host, port):
        status, headers, body, _head = _get(port)  # checks and keeps the pair
    assert (status, headers["content-length"], body) == (200, "5", b"hello")
    with serving(_answer([length, length]), QUIET) as (_host, port):
        status, headers, body, _head = _get(port)  # the same pair twice: a second content-length
    assert (status, body) == (500, b"Internal Server Error")


def test_header_pairs_given_as_lists_and_an_apps_own_date() -> None:
    date = b"Mon, 07 Dec 2026 00:00:00 GMT"
    app = _answer([[b"x-a", b"1"], (b"date", date)])
    with serving(app, QUIET) as (_host, port):
        first = _get(port)
        second = _get(port)
    for status, headers, body, head in (first, second):
        assert (status, headers["x-a"], headers["date"], body) == (200, "1", date.decode(), b"hello")
        assert head.lower().count(b"\r\ndate:") == 1  # the app's, not the server's beside it


def test_a_bad_header_is_refused_every_time_not_only_the_first() -> None:
    with serving(_answer([(b"x-ok", b"1"), (b"x-bad", b"a\r\nb")]), QUIET) as (_host, port):
        answers = [_get(port)[0] for _ in range(2)]
    assert answers == [500, 500]


def test_a_streamed_response_under_write_pressure_arrives_whole() -> None:
    part = b"x" * 65536

    async def big(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(16):  # each past write_buffer_cap: send hands back the wait for the drain
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with serving(big, QUIET, write_buffer_cap=16384, socket_send_buffer=8192) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, _headers, body)] = read_responses(sock, 1)
        sock.close()
    assert (status, body) == (200, part * 16)


def test_the_table_of_checked_headers_stays_bounded() -> None:
    from netloop.asgi import _response

    many = [(b"x-n", b"%d" % i) for i in range(_response._CHECKED_MAX + 100)]
    long = (b"x-long", b"v" * (_response._CHECKED_VALUE_MAX + 1))
    with serving(_answer([long, *many]), QUIET) as (_host, port):  # the long value first, the table not full
        status, headers, body, head = _get(port)
    assert (status, body, headers["x-long"]) == (200, b"hello", long[1].decode())
    assert head.count(b"\r\nx-n: ") == len(many)  # every header sent, checked or kept
    assert len(_response._checked) <= _response._CHECKED_MAX
    assert long not in _response._checked


@pytest.mark.parametrize(("value", "closes"), [(b"Close", True), (b"keep-alive, close", True), (b"keep-alive", False)])
def test_an_apps_connection_header_is_the_servers_to_say_and_close_ends_the_connection(
    value: bytes, closes: bool
) -> None:
    with serving(_answer([(b"connection", value)]), QUIET) as (_host, port):
        sock = connect(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, headers, body)] = read_responses(sock, 1)
        if not closes:  # the connection carries a second request
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            [(status, headers, body)] = read_responses(sock, 1)
        else:
            sock.settimeout(TIMEOUT)
            assert sock.recv(1) == b""  # closed after the response: EOF, nothing more
        sock.close()
    assert (status, body) == (200, b"hello")
    assert headers.get("connection") == ("close" if closes else None)  # the app's line is not passed on
