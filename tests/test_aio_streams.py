"""netloop.aio.start_server / serve: asyncio-style ``handle(reader, writer)`` served by netloop's engine."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from loopback import TIMEOUT, connect, connect_when_listening, echo_through, recv_exact, recv_until_closed, wait_until
from tls_certs import Authority

import netloop
import netloop.aio


class started:
    """``netloop.aio.start_server`` as a context manager that stops the engine (and checks it stopped)."""

    def __init__(self, handle: Any, *addrs: str, **options: Any) -> None:
        self.engine = netloop.aio.start_server(handle, *(addrs or ("tcp://127.0.0.1:0",)), **options)

    def __enter__(self) -> netloop.Engine:
        return self.engine

    def __exit__(self, *exc: object) -> None:
        self.engine.stop(timeout=TIMEOUT)
        assert self.engine.wait(TIMEOUT), "engine did not stop"


async def line_echo(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
    """Each line back, numbered, until EOF; then a last line with the count."""
    count = 0
    async for line in reader:
        count += 1
        writer.write(b"%d:" % count + line)
        await writer.drain()
    writer.write(b"lines=%d\n" % count)


def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = Authority(tmp_path)
    leaf = ca.issue("localhost", hosts=["127.0.0.1"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(leaf.cert, leaf.key)
    return server_ctx, ssl.create_default_context(cafile=str(ca.cert))


@pytest.mark.parametrize("kind", ["tcp", "unix", "edge", "loops", "tls"])
def test_lines_come_back_in_order_until_eof(kind: str, tmp_path: Path) -> None:
    addr = f"unix://{tmp_path}/s.sock" if kind == "unix" else "tcp://127.0.0.1:0"
    options: dict[str, Any] = {"edge_triggered": kind == "edge", "num_event_loop": 3 if kind == "loops" else 1}
    client_ctx = None
    if kind == "tls":
        options["tls"], client_ctx = tls_contexts(tmp_path)
    lines = [b"line %d %s\n" % (i, os.urandom(i % 50).hex().encode()) for i in range(200)]
    expected = b"".join(b"%d:" % (i + 1) + line for i, line in enumerate(lines)) + b"lines=200\n"
    with started(line_echo, addr, **options) as engine:
        for _ in range(3 if kind == "loops" else 1):
            sock = connect(engine.addrs[0])
            if client_ctx is not None:
                sock = client_ctx.wrap_socket(sock, server_hostname="127.0.0.1")
            with sock:
                for start in range(0, len(lines), 7):  # in bursts, split anywhere
                    sock.sendall(b"".join(lines[start : start + 7]))
                # Edge-triggered: the core misses a FIN that arrives with the last bytes, so no EOF is sent there.
                if client_ctx is None and kind != "edge":
                    sock.shutdown(socket.SHUT_WR)
                    assert recv_until_closed(sock) == expected
                else:
                    assert recv_exact(sock, len(expected) - len(b"lines=200\n")) == expected[: -len(b"lines=200\n")]


def test_reader_methods_and_writer_extras() -> None:
    seen: dict[str, Any] = {}

    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        seen["exact"] = await reader.readexactly(5)
        seen["until"] = await reader.readuntil(b"END")
        seen["line"] = await reader.readline()
        seen["read"] = await reader.read(3)
        with pytest.raises(asyncio.IncompleteReadError) as short:
            await reader.readexactly(100)
        seen["partial"] = short.value.partial
        seen["eof"] = reader.at_eof()
        seen["peername"] = writer.get_extra_info("peername")
        seen["sockname"] = writer.get_extra_info("sockname")
        seen["socket"] = writer.get_extra_info("socket")
        seen["missing"] = writer.get_extra_info("no-such-thing", "default")
        seen["loop"] = asyncio.get_running_loop()
        seen["closing"] = writer.is_closing()
        writer.writelines([b"a", b"b", b"c"])
        writer.write_eof()  # the peer's EOF came already: the connection closes once ours is sent
        await writer.wait_closed()  # the peer closes once it has our FIN
        seen["closed"] = writer.is_closing()

    with started(handle) as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"12345xyzEND\nline\nabcdtail")
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_closed(sock) == b"abc"
        sock_name = sock.getsockname()
        sock.close()
        wait_until(lambda: "closed" in seen, what="handle to see the close")
    assert seen["exact"] == b"12345" and seen["until"] == b"xyzEND" and seen["line"] == b"\n"
    assert seen["read"] == b"lin" and seen["partial"] == b"e\nabcdtail" and seen["eof"] is True
    assert seen["peername"] == sock_name and seen["sockname"][1] == int(engine.addrs[0].rsplit(":", 1)[1])
    assert hasattr(seen["socket"], "getsockname") and seen["missing"] == "default"
    assert isinstance(seen["loop"], netloop.aio.Loop)
    assert seen["closing"] is False and seen["closed"] is True


def test_read_takes_all_that_is_buffered_up_to_n_and_then_waits_for_more() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        while len(seen) < 4:
            data = await reader.read(6)
            seen.append(data)
            writer.write(b"<" + data + b">")
            for _ in range(3):  # nothing to wait for: drain returns at once, every time
                await writer.drain()

    with started(handle) as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"abcdefgh")  # more than n: two reads, the second takes the rest (2 bytes)
        assert recv_exact(sock, len(b"<abcdef><gh>")) == b"<abcdef><gh>"
        sock.sendall(b"ij")  # fewer than n, after the buffer was emptied: read waits for them
        assert recv_exact(sock, len(b"<ij>")) == b"<ij>"
        sock.sendall(b"klmnop")  # exactly n
        assert recv_exact(sock, len(b"<klmnop>")) == b"<klmnop>"
    assert seen == [b"abcdef", b"gh", b"ij", b"klmnop"]


def test_a_slow_reader_pauses_the_connection_and_loses_nothing() -> None:
    """handle does not read until told: the client's bytes wait in the kernel, not in memory, until it does."""
    go = threading.Event()
    limit = 4096
    digest: dict[str, Any] = {}

    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait, TIMEOUT)
        data = await reader.read()
        digest["server"] = hashlib.sha256(data).hexdigest()
        writer.write(b"%d\n" % len(data))

    with (
        started(handle, limit=limit, socket_recv_buffer=16384) as engine,
        socket.create_connection(("127.0.0.1", int(engine.addrs[0].rsplit(":", 1)[1]))) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sock.setblocking(False)
        payload, sent = os.urandom(8 << 20), 0
        # Send until the kernel refuses for a while: everything the server holds is then in its buffers.
        stalled = threading.Event()
        while sent < len(payload) and not stalled.is_set():
            try:
                sent += sock.send(payload[sent : sent + 65536])
            except BlockingIOError:
                stalled.wait(0.2)
                try:
                    sent += sock.send(payload[sent : sent + 65536])
                except BlockingIOError:
                    stalled.set()
        assert stalled.is_set(), f"all {sent} bytes were taken: the reader never paused the connection"
        assert sent < 2 << 20, f"{sent} bytes were taken before the server stopped reading"
        go.set()
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
        sock.sendall(payload[sent:])
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_closed(sock) == b"%d\n" % len(payload)
    assert digest["server"] == hashlib.sha256(payload).hexdigest()


def test_drain_holds_a_writer_to_the_high_water_mark_of_a_slow_client() -> None:
    cap, chunk, chunks = 256 * 1024, 64 * 1024, 100
    highest: list[int] = []
    held = []

    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        for i in range(chunks):
            writer.write(bytes([i % 251]) * chunk)
            if writer.conn.outbound_buffered() >= cap:
                held.append(i)  # this drain waits for the client
            await writer.drain()
            highest.append(writer.conn.outbound_buffered())

    expected = b"".join(bytes([i % 251]) * chunk for i in range(chunks))
    with started(handle, write_buffer_cap=cap, socket_send_buffer=16384) as engine, connect(engine.addrs[0]) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        wait_until(lambda: len(held) > 0, what="a write to reach the high-water mark")
        got = recv_until_closed(sock)
    assert got == expected
    assert max(highest) < cap, max(highest)


def test_a_raising_handle_closes_its_connection_only(caplog: pytest.LogCaptureFixture) -> None:
    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        line = await reader.readline()
        if line.startswith(b"boom"):
            raise ValueError("boom asked for")
        writer.write(line)
        await reader.read()

    with caplog.at_level(logging.ERROR), started(handle) as engine:
        with connect(engine.addrs[0]) as good, connect(engine.addrs[0]) as bad:
            bad.sendall(b"boom\n")
            assert recv_until_closed(bad) == b""
            good.sendall(b"fine\n")
            assert recv_exact(good, 5) == b"fine\n"
        wait_until(lambda: engine.stats()["handler_errors"] == 1, what="the error to be counted")
    assert "boom asked for" in caplog.text


def test_a_reset_reaches_the_reader_and_wait_closed() -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        await reader.readexactly(3)
        try:
            await reader.read(1)
            await writer.wait_closed()
        except ConnectionError as exc:
            errors.append(exc)
        done.set()

    with started(handle) as engine:
        sock = connect(engine.addrs[0])
        sock.sendall(b"abc")
        wait_until(lambda: engine.count_connections() == 1, what="the connection")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        assert done.wait(TIMEOUT)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)


def test_graceful_stop_flushes_what_handle_wrote(tmp_path: Path) -> None:
    answered = threading.Event()

    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"x" * 1_000_000)
        answered.set()
        await asyncio.sleep(TIMEOUT)  # still running when the engine stops

    engine = netloop.aio.start_server(handle, f"unix://{tmp_path}/s.sock")
    with connect(engine.addrs[0]) as sock:
        sock.sendall(b"go\n")
        assert answered.wait(TIMEOUT)
        stopper = threading.Thread(target=engine.stop, kwargs={"timeout": TIMEOUT})
        stopper.start()
        assert recv_until_closed(sock) == b"x" * 1_000_000
        stopper.join(TIMEOUT)
    assert engine.wait(TIMEOUT)


def test_proxy_protocol_gives_the_client_as_peername() -> None:
    seen: list[Any] = []

    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername"))
        writer.write(await reader.readline())

    with started(handle, proxy_protocol="v1") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\nhello\n")
        assert recv_exact(sock, 6) == b"hello\n"
    assert seen == [("203.0.113.7", 40000)]


def test_serve_blocks_until_sigterm_stops_it(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    script = f"""
import netloop.aio

async def handle(reader, writer):
    writer.write((await reader.readline()).upper())

netloop.aio.serve(handle, "unix://{path}")
print("stopped", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        with connect_when_listening(f"unix://{path}") as sock:
            sock.sendall(b"hi\n")
            assert recv_until_closed(sock) == b"HI\n"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0 and out == "stopped\n"
    finally:
        proc.kill()
        proc.wait()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="handle"):
        netloop.aio.start_server(b"not callable", "tcp://127.0.0.1:0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        netloop.aio.start_server(line_echo, "tcp://127.0.0.1:0", limit=0)
    with pytest.raises(TypeError):
        netloop.aio.start_server(line_echo, "tcp://127.0.0.1:0", no_such_option=1)


def test_workers_serve_streams(tmp_path: Path) -> None:
    script = f"""
import asyncio, os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import netloop.aio

async def handle(reader, writer):
    writer.write(b"%d:" % os.getpid() + await reader.readline())

engine = netloop.aio.start_server(handle, "tcp://127.0.0.1:0", workers=2)
print(engine.addrs[0], flush=True)
sys.stdin.readline()
engine.stop(timeout=10)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        addr = proc.stdout.readline().strip()
        pids = set()
        for _ in range(12):
            with connect(addr) as sock:
                sock.sendall(b"hi\n")
                answer = recv_until_closed(sock)
            pid, _, rest = answer.partition(b":")
            assert rest == b"hi\n", answer
            pids.add(int(pid))
        assert proc.pid not in pids and len(pids) >= 1
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()


def test_echo_of_a_large_payload() -> None:
    async def echo(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    payload = os.urandom(3_000_000)
    with started(echo) as engine, connect(engine.addrs[0]) as sock:
        assert echo_through(sock, payload) == payload


def test_idle_timeout_ends_a_silent_client_and_its_reader_raises() -> None:
    raised: list[BaseException] = []

    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        try:
            await reader.read()
        except TimeoutError as exc:
            raised.append(exc)

    with started(handle, idle_timeout=0.1) as engine, connect(engine.addrs[0]) as sock:
        assert recv_until_closed(sock) == b""  # closed by the server, the client having sent nothing
        wait_until(lambda: len(raised) == 1, what="the reader to raise the timeout")
    assert isinstance(raised[0], netloop.ConnTimeoutError), raised


def test_max_connections_refuses_the_one_too_many() -> None:
    async def handle(reader: asyncio.StreamReader, writer: netloop.aio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await reader.read()

    with started(handle, max_connections=1) as engine, connect(engine.addrs[0]) as first:
        first.sendall(b"one\n")
        assert recv_exact(first, 4) == b"one\n"
        with connect(engine.addrs[0]) as second:
            assert recv_until_closed(second) == b""
        assert engine.stats()["refused_max_connections"] == 1
        first.sendall(b"two")  # the first connection is still served
        first.shutdown(socket.SHUT_WR)
        assert recv_until_closed(first) == b""
