"""Codecs on real connections: a netloop server decodes and echoes frames to a plain socket client."""

from __future__ import annotations

import contextlib
import queue
import socket
from collections.abc import Iterator

import pytest

import netloop
from netloop import CodecError, FrameTooLongError
from netloop.codec import (
    DelimiterBasedFrameCodec,
    FixedLengthFrameCodec,
    FrameCodec,
    LengthFieldBasedFrameCodec,
    LineBasedFrameCodec,
)

TIMEOUT = 5.0
LIMIT = 64


class FrameEcho(netloop.EventHandler):
    """Echoes each decoded frame, encoded again; reports every closed connection's error."""

    def __init__(self, codec: FrameCodec) -> None:
        self.codec = codec
        self.closed: queue.Queue[BaseException | None] = queue.Queue()

    def on_traffic(self, conn: netloop.Conn) -> None:
        for frame in self.codec.decode(conn):
            conn.write(self.codec.encode(frame))

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        self.closed.put(err)


CODECS = {
    "line": LineBasedFrameCodec(max_frame_length=LIMIT),
    "delimiter": DelimiterBasedFrameCodec(b"<>", max_frame_length=LIMIT),
    "fixed": FixedLengthFrameCodec(5, max_frame_length=LIMIT),
    "length": LengthFieldBasedFrameCodec(length_field_length=2, max_frame_length=LIMIT),
}


@pytest.fixture(params=list(CODECS))
def codec(request: pytest.FixtureRequest) -> FrameCodec:
    return CODECS[request.param]


@contextlib.contextmanager
def serving(handler: FrameEcho) -> Iterator[tuple[str, int]]:
    """Run ``handler`` on a loopback port; yields the address to connect to."""
    engine = netloop.start(handler, "tcp://127.0.0.1:0")
    try:
        host, port = engine.addrs[0].removeprefix("tcp://").rsplit(":", 1)
        yield host, int(port)
    finally:
        engine.stop()


@pytest.fixture
def server(codec: FrameCodec) -> Iterator[tuple[FrameEcho, tuple[str, int]]]:
    handler = FrameEcho(codec)
    with serving(handler) as address:
        yield handler, address


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def test_frames_split_across_writes_come_back_whole(
    codec: FrameCodec, server: tuple[FrameEcho, tuple[str, int]]
) -> None:
    _, address = server
    payloads = [b"hello", b"12345", b"abcde", b"xyz!?"]
    wire = [codec.encode(p) for p in payloads]
    with connect(address) as sock:
        # One whole frame plus half of the next: its echo proves the server saw the partial frame.
        first = wire[0] + wire[1][:3]
        sock.sendall(first)
        assert receive_exactly(sock, len(wire[0])) == wire[0]
        sock.sendall(wire[1][3:] + wire[2][:1])
        assert receive_exactly(sock, len(wire[1])) == wire[1]
        for byte in wire[2][1:] + wire[3]:
            sock.sendall(bytes([byte]))
        assert receive_exactly(sock, len(wire[2]) + len(wire[3])) == wire[2] + wire[3]


def test_many_frames_in_one_write_are_all_decoded(codec: FrameCodec, server: tuple[FrameEcho, tuple[str, int]]) -> None:
    _, address = server
    wire = b"".join(codec.encode(b"%05d" % n) for n in range(500))
    with connect(address) as sock:
        sock.sendall(wire)
        assert receive_exactly(sock, len(wire)) == wire


OVERLONG = {
    "line": b"x" * (LIMIT + 2),
    "delimiter": b"x" * (LIMIT + 2),
    "length": (LIMIT - 1).to_bytes(2, "big"),  # declares a 65-byte frame: only the header is sent
}


@pytest.mark.parametrize("name", list(OVERLONG))
def test_an_overlong_frame_closes_the_connection_with_frame_too_long(name: str) -> None:
    handler = FrameEcho(CODECS[name])
    with serving(handler) as address, connect(address) as sock:
        good = CODECS[name].encode(b"fine!")
        sock.sendall(good)
        assert receive_exactly(sock, len(good)) == good
        sock.sendall(OVERLONG[name])
        # A lingering close: the server's FIN, never a reset, even with our bytes unread; on_close once we end.
        assert sock.recv(1) == b""
        sock.close()
        assert isinstance(handler.closed.get(timeout=TIMEOUT), FrameTooLongError)


def test_a_malformed_header_closes_the_connection_with_codec_error() -> None:
    handler = FrameEcho(LengthFieldBasedFrameCodec(length_field_length=2, length_adjustment=-4))
    with serving(handler) as address, connect(address) as sock:
        sock.sendall(b"\x00\x01")  # 1 - 4 + 2 = -1 bytes: not a frame
        assert sock.recv(1) == b""
        sock.close()
        assert isinstance(handler.closed.get(timeout=TIMEOUT), CodecError)
