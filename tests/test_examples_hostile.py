"""Hostile input against every example server: each attack gets a clear answer or a close for that connection only.

Oversized lines, heads and frames, garbage bytes, many tiny fragments or elements, and abrupt disconnects in the
middle of a message. After each, another client is served normally, and the server holds no more connections than
the ones still open. Memory and work are bounded by what the examples promise (a head of MAX_HEAD bytes, a line of
MAX_LINE, a frame of 1 MiB...), not by what the client sends: the attacks send far more than those bounds.
"""

from __future__ import annotations

import contextlib
import json
import queue
import random
import select
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from loopback import TIMEOUT, connect, echo_through, recv_exact, serving, wait_until

import netloop
from examples import chat, echo, http_server, metrics, proxy, rpc

pytestmark = pytest.mark.timeout(60)

GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
RNG = random.Random(19)
GARBAGE = bytes(RNG.randrange(256) for _ in range(64 * 1024))


def recording(cls: type[netloop.EventHandler]) -> Any:
    """``cls`` whose instances also put each closed connection's error (None when orderly) on ``self.closed``."""

    class Recorded(cls):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.closed: queue.Queue[BaseException | None] = queue.Queue()

        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> Any:
            self.closed.put(err)
            return super().on_close(conn, err)

    return Recorded


def send_ignoring_close(sock: socket.socket, data: bytes) -> None:
    """Send ``data``; the server may close (and reset) before taking all of it."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything until the server's close (a reset after its answer counts as the close)."""
    data = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return bytes(data)


def in_tiny_fragments(sock: socket.socket, data: bytes, size: int = 1) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(data), size):
        sock.sendall(data[i : i + size])


def reset(sock: socket.socket) -> None:
    """Close abruptly: an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- echo ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[netloop.Engine]:
    with serving(echo.Echo(), "tcp://127.0.0.1:0") as engine:
        yield engine


def test_echo_returns_garbage_in_tiny_fragments_exactly(echo_server: netloop.Engine) -> None:
    payload = GARBAGE[:8192]
    with connect(echo_server.addrs[0]) as sock:
        sender = threading.Thread(target=in_tiny_fragments, args=(sock, payload, 3))
        sender.start()
        assert recv_exact(sock, len(payload)) == payload
        sender.join(TIMEOUT)


def test_echo_holds_a_client_that_never_reads_instead_of_buffering_for_it(echo_server: netloop.Engine) -> None:
    """The server stops reading once its answers back up: what it takes in stays bounded however much is sent."""
    with connect(echo_server.addrs[0]) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        sent, chunk = 0, bytes(256 * 1024)
        while select.select([], [sock], [], 0.5)[1]:  # writable within 0.5 s: the server is still reading
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(chunk)
            assert sent < 64 * 1024 * 1024, "the server kept reading from a client that never reads"
        with connect(echo_server.addrs[0]) as other:  # the loop still serves everyone else
            assert echo_through(other, b"still here") == b"still here"


def test_echo_survives_a_reset_in_the_middle_of_a_stream(echo_server: netloop.Engine) -> None:
    sock = connect(echo_server.addrs[0])
    sock.sendall(GARBAGE)
    reset(sock)
    wait_until(lambda: echo_server.count_connections() == 0, what="the reset connection to close")
    with connect(echo_server.addrs[0]) as other:
        assert echo_through(other, b"still here") == b"still here"


# -- http_server ---------------------------------------------------------------------------------------------------


def http_status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("attack", "status"),
    [
        (b"GET / HTTP/1.1\r\nX-Endless: " + b"x" * (1 << 20), 431),  # a head that never ends
        (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 10_000 + b"\r\n", 431),  # ten thousand fields
        (GARBAGE[:1000] + b"\r\n" + GARBAGE, 400),  # refused once its first line ends, not at MAX_HEAD
        (b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n", 413),
        (b"\r\n" * 100_000 + GET, 200),  # empty lines before a request are skipped, in linear time
    ],
    ids=["endless-head", "many-fields", "garbage", "huge-length", "empty-lines"],
)
def test_http_answers_hostile_input_and_serves_on(attack: bytes, status: int) -> None:
    handler = recording(http_server.HttpHandler)()
    with serving(handler, "tcp://127.0.0.1:0") as engine:
        with connect(engine.addrs[0]) as sock:
            send_ignoring_close(sock, attack)
            if status == 200:
                sock.shutdown(socket.SHUT_WR)
            answer = read_until_closed(sock)
        assert http_status(answer) == status
        assert answer.endswith(b"Hello, World!" if status == 200 else b"")
        with connect(engine.addrs[0]) as other:
            other.sendall(GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            assert read_until_closed(other).endswith(b"Hello, World!")
        wait_until(lambda: engine.count_connections() == 0, what="every connection to close")


def test_http_request_in_one_byte_fragments_is_answered() -> None:
    request = b"POST /x HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    with serving(http_server.HttpHandler(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        in_tiny_fragments(sock, request)
        assert read_until_closed(sock).endswith(b"Hello, World!")


def test_http_reset_in_the_middle_of_a_body_closes_only_that_connection() -> None:
    with serving(http_server.HttpHandler(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as keeper:
        sock = connect(engine.addrs[0])
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n" + GARBAGE)
        reset(sock)
        wait_until(lambda: engine.count_connections() == 1, what="the reset connection to close")
        keeper.sendall(GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        assert read_until_closed(keeper).endswith(b"Hello, World!")


# -- chat ----------------------------------------------------------------------------------------------------------


class Member:
    """A line-based chat client."""

    def __init__(self, engine: netloop.Engine) -> None:
        self.sock = connect(engine.addrs[0])
        self.buf = bytearray()
        assert self.line().startswith("* welcome")

    def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "closed while waiting for a line"
            self.buf += chunk
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf[:] = rest
        return line.decode("utf-8", "replace")

    def line_with(self, text: str) -> str:
        while text not in (line := self.line()):
            pass
        return line


@pytest.fixture
def chat_server() -> Iterator[tuple[netloop.Engine, Any]]:
    handler = recording(chat.Chat)()
    with serving(handler, "tcp://127.0.0.1:0", num_event_loop=2, **chat.LIMITS) as engine:
        yield engine, handler


def test_chat_closes_a_line_that_never_ends(chat_server: tuple[netloop.Engine, Any]) -> None:
    engine, handler = chat_server
    listener, attacker = Member(engine), Member(engine)
    send_ignoring_close(attacker.sock, GARBAGE.replace(b"\n", b"") * 16)  # 1 MiB without a newline
    attacker.sock.close()  # the server's lingering close waits for our end (or linger_timeout)
    assert isinstance(handler.closed.get(timeout=TIMEOUT), netloop.FrameTooLongError)
    listener.sock.sendall(b"/who\n")
    assert listener.line_with("* here:")


def test_chat_takes_garbage_lines_tiny_fragments_and_empty_lines(chat_server: tuple[netloop.Engine, Any]) -> None:
    engine, _ = chat_server
    listener, sender = Member(engine), Member(engine)
    sender.sock.sendall(b"\n" * 100_000)  # a hundred thousand empty lines: nothing to say, nothing said
    sender.sock.sendall(b"\xff\xfe garbage\n")  # not UTF-8: passed on with replacement characters
    assert listener.line_with("garbage").endswith("\ufffd\ufffd garbage")
    in_tiny_fragments(sender.sock, b"one byte at a time\n")
    assert listener.line_with("one byte").endswith(": one byte at a time")


def test_chat_reset_in_the_middle_of_a_line_is_a_member_leaving(chat_server: tuple[netloop.Engine, Any]) -> None:
    engine, _ = chat_server
    listener, leaver = Member(engine), Member(engine)
    listener.line_with("joined")
    leaver.sock.sendall(b"half a li")
    reset(leaver.sock)
    assert listener.line_with("left")


# -- ws_chat -------------------------------------------------------------------------------------------------------


def test_ws_chat_refuses_garbage_before_and_after_the_upgrade() -> None:
    ws_chat = pytest.importorskip("examples.ws_chat")
    engine = ws_chat.start(loops=1)
    try:
        with connect(engine.addrs[0]) as sock:
            send_ignoring_close(sock, GARBAGE + b"\r\n\r\n")
            assert http_status(read_until_closed(sock)) in (400, 431)
        upgrade = (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        with connect(engine.addrs[0]) as sock:
            sock.sendall(upgrade)
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 101 ")
            send_ignoring_close(sock, GARBAGE)
            answer = head.partition(b"\r\n\r\n")[2] + read_until_closed(sock)
            close = answer.rfind(b"\x88")  # the server's close frame, after its welcome and joined messages
            assert close >= 0 and struct.unpack("!H", answer[close + 2 : close + 4])[0] == 1002
        with connect(engine.addrs[0]) as sock:  # half a frame, then a reset
            sock.sendall(upgrade + b"\x81\xfe\x10\x00\x00\x00\x00\x00" + b"x" * 100)
            reset(sock)
        wait_until(lambda: engine.count_connections() == 0, what="every connection to close")
        with connect(engine.addrs[0]) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert http_status(read_until_closed(sock)) == 200
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT)


# -- proxy ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def proxied() -> Iterator[tuple[str, netloop.Engine, netloop.Engine]]:
    with (
        serving(echo.Echo(), "tcp://127.0.0.1:0") as upstream,
        serving(proxy.Proxy(upstream.addrs[0]), "tcp://127.0.0.1:0", backpressure_pause=False) as front,
    ):
        yield front.addrs[0], front, upstream


def test_proxy_carries_garbage_in_tiny_fragments_exactly(proxied: tuple[str, netloop.Engine, Any]) -> None:
    address, _, _ = proxied
    payload = GARBAGE[:8192]
    with connect(address) as sock:
        sender = threading.Thread(target=in_tiny_fragments, args=(sock, payload, 5))
        sender.start()
        assert recv_exact(sock, len(payload)) == payload
        sender.join(TIMEOUT)


def test_proxy_reset_closes_both_ends_of_the_pair(proxied: tuple[str, netloop.Engine, netloop.Engine]) -> None:
    address, front, upstream = proxied
    sock = connect(address)
    sock.sendall(GARBAGE)
    reset(sock)
    wait_until(lambda: front.count_connections() == upstream.count_connections() == 0, what="both ends to close")
    with connect(address) as other:
        assert echo_through(other, b"still here") == b"still here"


# -- rpc -----------------------------------------------------------------------------------------------------------


def call(sock: socket.socket, request: Any) -> Any:
    sock.sendall(rpc.CODEC.encode(json.dumps(request).encode()))
    size = struct.unpack("!I", recv_exact(sock, 4))[0]
    return json.loads(recv_exact(sock, size))


def test_rpc_closes_an_oversized_frame_without_reading_it() -> None:
    handler = recording(rpc.RpcServer)()
    with serving(handler, "tcp://127.0.0.1:0") as engine:
        with connect(engine.addrs[0]) as sock:
            send_ignoring_close(sock, b"\xff\xff\xff\xff" + GARBAGE)  # announces 4 GiB
            assert read_until_closed(sock) == b""
        assert isinstance(handler.closed.get(timeout=TIMEOUT), netloop.FrameTooLongError)
        with connect(engine.addrs[0]) as other:
            assert call(other, {"id": 1, "method": "add", "params": [1, 2]}) == {"id": 1, "result": 3}


def test_rpc_answers_garbage_fragments_and_many_tiny_frames() -> None:
    with serving(rpc.RpcServer(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        assert "error" in call(sock, GARBAGE[:100].hex())  # JSON, not a request: an error reply, not a close
        sock.sendall(rpc.CODEC.encode(GARBAGE[:1000]))  # not JSON at all
        size = struct.unpack("!I", recv_exact(sock, 4))[0]
        assert "error" in json.loads(recv_exact(sock, size))
        in_tiny_fragments(sock, rpc.CODEC.encode(json.dumps({"id": 2, "method": "echo", "params": ["x"]}).encode()))
        size = struct.unpack("!I", recv_exact(sock, 4))[0]
        assert json.loads(recv_exact(sock, size)) == {"id": 2, "result": "x"}
        count = 2000  # two thousand frames in one write, each answered
        sock.sendall(rpc.CODEC.encode(b"{}") * count)
        for _ in range(count):
            size = struct.unpack("!I", recv_exact(sock, 4))[0]
            assert "error" in json.loads(recv_exact(sock, size))
        half = rpc.CODEC.encode(b'{"id": 3, "method": "echo"}')
        with connect(engine.addrs[0]) as truncated:  # half a frame, then a reset
            truncated.sendall(half[: len(half) // 2])
            reset(truncated)
        wait_until(lambda: engine.count_connections() == 1, what="the reset connection to close")
        assert call(sock, {"id": 4, "method": "add", "params": [2, 2]}) == {"id": 4, "result": 4}


# -- metrics -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nX: " + b"x" * (1 << 20), 431),
        (GARBAGE + b"\r\n\r\n", 431),  # past the head limit: 431 whether it arrives in one read or in many
        (GARBAGE[:4096] + b"\r\n\r\n", 400),
    ],
    ids=["endless-head", "oversized-garbage", "garbage"],
)
def test_metrics_refuses_hostile_requests_and_serves_on(attack: bytes, status: int) -> None:
    with serving(echo.Echo(), "tcp://127.0.0.1:0") as app:
        scraper = metrics.serve_metrics(app, "tcp://127.0.0.1:0")
        try:
            with connect(scraper.addrs[0]) as sock:
                send_ignoring_close(sock, attack)
                assert http_status(read_until_closed(sock)) == status
            with connect(scraper.addrs[0]) as sock:  # half a request, then a reset
                sock.sendall(b"GET /met")
                reset(sock)
            wait_until(lambda: scraper.count_connections() == 0, what="every connection to close")
            with connect(scraper.addrs[0]) as sock:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = read_until_closed(sock)
            assert http_status(answer) == 200 and b"netloop_connections_accepted_total" in answer
        finally:
            scraper.stop(timeout=TIMEOUT)
            assert scraper.wait(TIMEOUT)
