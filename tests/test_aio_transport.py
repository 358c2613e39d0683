"""netloop.aio's socket transports: asyncio Protocols over netloop connections, checked against real sockets."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import netloop
import netloop.aio
from netloop.aio._transport import SocketTransport

T = TypeVar("T")
TIMEOUT = 5.0


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return netloop.aio.run(asyncio.wait_for(main(), TIMEOUT))


class Recorder(asyncio.Protocol):
    """Records what the transport tells it; ``lost`` completes once ``connection_lost`` has run."""

    def __init__(self, keep_open: bool = False) -> None:
        self.keep_open = keep_open
        self.transport: Any = None
        self.data = bytearray()
        self.events: list[str] = []
        self.lost_with: list[BaseException | None] = []
        loop = asyncio.get_running_loop()
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.got = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.events.append("made")
        self.made.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got.set()

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost_with.append(exc)
        self.lost.set_result(None)

    async def until(self, size: int) -> bytes:
        while len(self.data) < size:
            self.got.clear()
            await self.got.wait()
        return bytes(self.data)


async def serve_one(
    factory: Callable[[], asyncio.BaseProtocol], unix: Path | None = None
) -> tuple[socket.socket, asyncio.Future[Any], asyncio.AbstractServer]:
    """A server on loopback (or ``unix``) and a connected non-blocking client socket; the future is the protocol
    the server made for it."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[Any] = loop.create_future()

    def make() -> asyncio.BaseProtocol:
        protocol = factory()
        made.set_result(protocol)
        return protocol

    if unix is None:
        server = await loop.create_server(make, "127.0.0.1", 0)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address: Any = server.sockets[0].getsockname()
    else:
        server = await loop.create_unix_server(make, str(unix))
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = str(unix)
    client.setblocking(False)
    await loop.sock_connect(client, address)
    return client, made, server


async def recv_all(sock: socket.socket) -> bytes:
    """Read ``sock`` until its peer's EOF."""
    loop = asyncio.get_running_loop()
    out = bytearray()
    while chunk := await loop.sock_recv(sock, 65536):
        out += chunk
    return bytes(out)


def test_a_server_transport_is_a_netloop_connection_and_echoes() -> None:
    class Echo(Recorder):
        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def main() -> tuple[object, list[str], list[BaseException | None], bytes, tuple[Any, Any]]:
        loop = asyncio.get_running_loop()
        client, made, server = await serve_one(Echo)
        protocol = await made
        await protocol.made
        transport = protocol.transport
        await loop.sock_sendall(client, b"ping")
        echoed = await loop.sock_recv(client, 100)
        names = (transport.get_extra_info("peername"), transport.get_extra_info("socket").getpeername())
        assert names[0] == client.getsockname()
        transport.close()
        assert transport.is_closing()
        await protocol.lost
        assert await recv_all(client) == b""
        client.close()
        server.close()
        return type(transport), protocol.events, protocol.lost_with, echoed, names

    kind, events, lost_with, echoed, names = run(main)
    assert kind is SocketTransport
    assert echoed == b"ping"
    assert events == ["made", "lost"]
    assert lost_with == [None]
    assert names[0] == names[1]


def test_eof_received_true_keeps_the_transport_half_open() -> None:
    async def main() -> tuple[list[str], bytes]:
        client, made, server = await serve_one(lambda: Recorder(keep_open=True))
        protocol = await made
        client.shutdown(socket.SHUT_WR)
        await protocol.eof
        protocol.transport.write(b"after your EOF")  # we may still write
        protocol.transport.close()
        reply = await recv_all(client)
        await protocol.lost
        client.close()
        server.close()
        return protocol.events, reply

    events, reply = run(main)
    assert reply == b"after your EOF"
    assert events == ["made", "eof", "lost"]


def test_eof_received_false_closes_the_transport() -> None:
    async def main() -> tuple[list[str], list[BaseException | None], bytes]:
        client, made, server = await serve_one(Recorder)
        protocol = await made
        client.shutdown(socket.SHUT_WR)
        await protocol.lost
        reply = await recv_all(client)
        client.close()
        server.close()
        return protocol.events, protocol.lost_with, reply

    events, lost_with, reply = run(main)
    assert events == ["made", "eof", "lost"]
    assert lost_with == [None]
    assert reply == b""


def test_a_unix_peer_that_closes_after_its_reply_is_not_a_reset(tmp_path: Path) -> None:
    # A Unix socket whose peer closes reports HUP with the EOF: the transport kept half-open by eof_received
    # must take it as the EOF it is, not as a reset (which made a stream reader raise instead of returning).
    async def main() -> tuple[bytes, list[str], list[BaseException | None]]:
        loop = asyncio.get_running_loop()
        path = str(tmp_path / "s")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        listener.setblocking(False)
        connecting = asyncio.ensure_future(loop.create_unix_connection(lambda: Recorder(keep_open=True), path))
        peer, _ = await loop.sock_accept(listener)
        transport, protocol = await connecting
        assert isinstance(transport, SocketTransport)
        await loop.sock_sendall(peer, b"reply")
        peer.close()
        listener.close()
        await protocol.eof  # the HUP came with it, in the same event
        transport.close()
        await protocol.lost
        return bytes(protocol.data), protocol.events, protocol.lost_with

    data, events, lost_with = run(main)
    assert data == b"reply"
    assert events == ["made", "eof", "lost"]
    assert lost_with == [None]


def test_write_eof_sends_our_fin_and_reading_goes_on() -> None:
    async def main() -> tuple[bytes, bytes, list[str]]:
        loop = asyncio.get_running_loop()
        client, made, server = await serve_one(Recorder)
        protocol = await made
        await protocol.made
        transport = protocol.transport
        transport.write(b"all I say")
        transport.write_eof()
        with pytest.raises(RuntimeError, match="write_eof"):
            transport.write(b"more")
        said = await recv_all(client)
        await loop.sock_sendall(client, b"still heard")
        heard = await protocol.until(11)
        client.close()
        await protocol.lost
        server.close()
        return said, heard, protocol.events

    said, heard, events = run(main)
    assert said == b"all I say"
    assert heard == b"still heard"
    assert events == ["made", "eof", "lost"]


def test_a_peer_reset_reaches_connection_lost_once() -> None:
    async def main() -> list[BaseException | None]:
        client, made, server = await serve_one(Recorder)
        protocol = await made
        await protocol.made
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset
        await protocol.lost
        await asyncio.sleep(0)
        server.close()
        return protocol.lost_with

    lost_with = run(main)
    assert len(lost_with) == 1
    assert isinstance(lost_with[0], ConnectionResetError)


def test_writes_after_the_connection_is_lost_are_dropped() -> None:
    async def main() -> tuple[list[str], int]:
        client, made, server = await serve_one(Recorder)
        protocol = await made
        await protocol.made
        transport = protocol.transport
        transport.abort()
        await protocol.lost
        transport.write(b"into the void")  # asyncio drops it; nothing raises
        client.close()
        server.close()
        return protocol.events, transport.get_write_buffer_size()

    events, buffered = run(main)
    assert events == ["made", "lost"]
    assert buffered == 0


def test_pause_writing_above_the_high_water_mark_and_resume_once_drained() -> None:
    async def main() -> tuple[list[str], int]:
        loop = asyncio.get_running_loop()
        client, made, server = await serve_one(Recorder)
        protocol = await made
        await protocol.made
        transport = protocol.transport
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b"x" * 65536
        sent = 0
        while "pause_writing" not in protocol.events:  # the client reads nothing meanwhile
            transport.write(chunk)
            sent += len(chunk)
        assert transport.get_write_buffer_size() > 64 * 1024
        received = 0
        while received < sent:
            received += len(await loop.sock_recv(client, 1 << 20))
        transport.close()
        await protocol.lost
        client.close()
        server.close()
        return protocol.events, received - sent

    events, difference = run(main)
    assert events == ["made", "pause_writing", "resume_writing", "lost"]
    assert difference == 0


def test_writelines_and_a_protocol_switched_with_set_protocol() -> None:
    async def main() -> tuple[bytes, bytes, bytes, list[str]]:
        loop = asyncio.get_running_loop()
        client, made, server = await serve_one(Recorder)
        first = await made
        await first.made
        transport = first.transport
        transport.writelines([b"one ", bytearray(b"two "), memoryview(b"three")])
        written = b""
        while len(written) < 13:
            written += await loop.sock_recv(client, 100)
        await loop.sock_sendall(client, b"to the first")
        heard_first = await first.until(12)
        second = Recorder()
        transport.set_protocol(second)
        assert transport.get_protocol() is second
        await loop.sock_sendall(client, b"to the second")
        heard_second = await second.until(13)
        client.close()
        await second.lost
        server.close()
        return written, heard_first, heard_second, first.events

    written, heard_first, heard_second, first_events = run(main)
    assert written == b"one two three"
    assert heard_first == b"to the first"
    assert heard_second == b"to the second"
    assert first_events == ["made"]  # the connection's end went to the protocol that had it by then


def test_pause_reading_holds_data_received_until_resume_reading() -> None:
    async def main() -> tuple[bool, bytes, bool]:
        loop = asyncio.get_running_loop()
        client, made, server = await serve_one(Recorder)
        protocol = await made
        await protocol.made
        transport = protocol.transport
        transport.pause_reading()
        paused_reading = transport.is_reading()
        await loop.sock_sendall(client, b"held")
        server_side = transport.get_extra_info("socket")
        while unread(server_side) < 4:  # until the bytes wait in the kernel
            await asyncio.sleep(0)
        for _ in range(3):  # rounds in which a read would have come
            await asyncio.sleep(0)
        held = bytes(protocol.data)
        transport.resume_reading()
        assert await protocol.until(4) == b"held"
        reading = transport.is_reading()
        transport.close()
        await protocol.lost
        client.close()
        server.close()
        return paused_reading, held, reading

    paused_reading, held, reading = run(main)
    assert (paused_reading, held, reading) == (False, b"", True)


def unread(sock: Any) -> int:
    """How many received bytes wait in ``sock``'s kernel buffer (FIONREAD)."""
    import fcntl
    import termios

    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])


def test_a_buffered_protocol_gets_every_byte_through_its_buffers() -> None:
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buf = bytearray(7)  # smaller than a read: a read fills several buffers
            self.data = bytearray()
            self.lost = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            self.data += self.buf[:nbytes]

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost.set_result(exc)

    async def main() -> tuple[bytes, object]:
        loop = asyncio.get_running_loop()
        client, made, server = await serve_one(Buffered)
        protocol = await made
        payload = bytes(range(256)) * 40
        await loop.sock_sendall(client, payload)
        client.close()
        exc = await protocol.lost
        server.close()
        assert bytes(protocol.data) == payload
        return bytes(protocol.data[:3]), exc

    head, exc = run(main)
    assert head == b"\x00\x01\x02"
    assert exc is None


def test_a_raising_data_received_is_reported_and_loses_the_connection() -> None:
    class Raising(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ValueError("bad input")

    async def main() -> tuple[list[str], list[BaseException | None], list[str]]:
        loop = asyncio.get_running_loop()
        reported: list[str] = []
        loop.set_exception_handler(lambda loop, context: reported.append(context["message"]))
        client, made, server = await serve_one(Raising)
        protocol = await made
        await loop.sock_sendall(client, b"anything")
        await protocol.lost
        client.close()
        server.close()
        return protocol.events, protocol.lost_with, reported

    events, lost_with, reported = run(main)
    assert events == ["made", "lost"]
    assert isinstance(lost_with[0], ValueError)
    assert reported == ["Fatal error: protocol.data_received() call failed."]


def test_an_engine_handler_dials_an_asyncio_client_that_is_not_its_connection() -> None:
    # Inside an engine's loop the transport's reads reach its protocol, not the engine's handler, and the
    # engine does not count it among its connections.
    upstream = netloop.start(EchoHandler(), "tcp://127.0.0.1:0")
    host, port = upstream.addrs[0].removeprefix("tcp://").rsplit(":", 1)
    server = netloop.start(Forward(host, int(port)), "tcp://127.0.0.1:0")
    try:
        shost, sport = server.addrs[0].removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((shost, int(sport)), timeout=TIMEOUT) as client:
            client.sendall(b"through")
            assert client.recv(100) == b"THROUGH"
            assert server.count_connections() == 1
    finally:
        server.stop()
        upstream.stop()


class EchoHandler(netloop.EventHandler):
    def on_traffic(self, conn: netloop.Conn) -> None:
        conn.write(conn.next().upper())


class Forward(netloop.EventHandler):
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)

    async def on_traffic(self, conn: netloop.Conn) -> None:  # type: ignore[override]
        request = conn.next()
        reader, writer = await asyncio.open_connection(*self.upstream)
        assert isinstance(writer.transport, SocketTransport)
        writer.write(request)
        conn.write(await reader.read(100))
        writer.close()
        await writer.wait_closed()
