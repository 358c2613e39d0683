"""netloop.asgi against uvicorn: one corpus of raw requests, valid and malformed, sent to the same app on each.

Both servers are started by the test on free ports (uvicorn with its httptools protocol, the parser netloop.asgi
uses too). Each request goes on a fresh connection; the answers (status and body, or no answer) must be the same,
except where ``DIFFERENCES`` says why netloop's is the safer one, and there the test checks both answers.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import TIMEOUT, connect_when_listening, wait_until

pytest.importorskip("uvicorn")
pytest.importorskip("httptools")

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).parent
H = b"Host: x\r\n"

CORPUS: dict[str, bytes] = {
    # valid
    "get": b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    "get-query": b"GET /?a=1&b=%20 HTTP/1.1\r\n" + H + b"\r\n",
    "post-content-length": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    "post-chunked": b"POST /echo HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    "chunk-extension": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
    "chunked-trailer": b"POST /echo HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nT: v\r\n\r\n",
    "percent-path": b"POST /ech%6F HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n\r\nok",
    "absolute-form": b"GET http://x/echo HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n\r\nz",
    "http10": b"GET / HTTP/1.0\r\n\r\n",
    "http10-stream": b"GET /stream HTTP/1.0\r\n\r\n",
    "head": b"HEAD / HTTP/1.1\r\n" + H + b"\r\n",
    "stream": b"GET /stream HTTP/1.1\r\n" + H + b"\r\n",
    "app-error": b"GET /fail HTTP/1.1\r\n" + H + b"\r\n",
    "options-star": b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "expect-continue": b"POST /echo HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    "pipelined": b"GET / HTTP/1.1\r\n" + H + b"\r\nPOST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\ntwo",
    # malformed
    "garbage": b"GARBAGE\r\n\r\n",
    "bad-version": b"GET / HTTP/9.9\r\n" + H + b"\r\n",
    "http2-preface-ish": b"GET / HTTP/2.0\r\n" + H + b"\r\n",
    "lowercase-method": b"get / HTTP/1.1\r\n" + H + b"\r\n",
    "space-in-target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "lf-only": b"GET / HTTP/1.1\n" + H.replace(b"\r\n", b"\n") + b"\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "bad-header-name": b"GET / HTTP/1.1\r\n" + H + b"X\x01Y: z\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n  b\r\n\r\n",
    "duplicate-content-length": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "content-length-list": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 2, 2\r\n\r\nab",
    "negative-content-length": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "plus-content-length": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +2\r\n\r\nab",
    "cl-te": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-cl": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    "te-space-before-colon": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te-not-last-chunked": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n\r\nab",
    "te-unknown": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
    "te-double-chunked": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "bad-chunk-size": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "huge-chunk-size": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n",
    "chunk-missing-crlf": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
    "oversized-header": b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "too-many-headers": b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
    "upgrade-h2c": b"GET / HTTP/1.1\r\n" + H + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
}

# Where the answers differ on purpose: (netloop's, uvicorn's), each (status, body) or None for no answer.
DIFFERENCES: dict[str, tuple[Any, Any]] = {
    # netloop bounds a request head (--limit-request-head, 64 KiB): memory per connection stays bounded.
    # uvicorn's httptools protocol has no such limit and serves it.
    "oversized-header": ((431, b"Request header fields too large."), (200, b"hello")),
    # netloop bounds the header count (--limit-request-fields, 100), as gunicorn does; uvicorn has no limit.
    "too-many-headers": ((431, b"Request header fields too large."), (200, b"hello")),
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", *argv, "asgi_apps:app", "--port", str(self.port), "--no-access-log"],
            env=_env() if env is None else env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "startup complete" in line:
                self.ready.set()

    def wait_serving(self) -> None:
        """Until the app's startup is complete and the port accepts: uvicorn logs the startup before it listens."""
        wait_until(self.ready.is_set, what="the server's startup")
        connect_when_listening(f"tcp://127.0.0.1:{self.port}").close()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    started = {
        "netloop": Server(["netloop.asgi", "--timeout-keep-alive", "1"]),
        "uvicorn": Server(["uvicorn", "--http", "httptools", "--timeout-keep-alive", "1"]),
    }
    try:
        for server in started.values():
            server.wait_serving()
        yield started
    finally:
        for server in started.values():
            server.stop()


class _Stream:
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def close(self) -> None:
        pass


def exchange(port: int, request: bytes) -> list[tuple[int, bytes] | None]:
    """The answers to ``request`` on a new connection, until the server closes it or stays silent."""
    method = request.split(b" ", 1)[0].decode("latin-1")
    answers: list[tuple[int, bytes] | None] = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        sock.settimeout(0.5)  # a server that waits for more (a request cut short) answers nothing
        stream = _Stream(sock.makefile("rb"))
        while len(answers) < 4:
            response = http.client.HTTPResponse(stream, method=method)  # type: ignore[arg-type]
            try:
                response.begin()
                body = response.read()
            except (TimeoutError, ConnectionError, http.client.HTTPException, ValueError):
                break
            answers.append((response.status, body))
            if response.will_close:
                break
    return answers or [None]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_same_answer_as_uvicorn(servers: dict[str, Server], name: str) -> None:
    request = CORPUS[name]
    ours = exchange(servers["netloop"].port, request)
    theirs = exchange(servers["uvicorn"].port, request)
    if name in DIFFERENCES:
        expected_ours, expected_theirs = DIFFERENCES[name]
        assert ours == [expected_ours]
        assert theirs == [expected_theirs]
    else:
        assert ours == theirs
