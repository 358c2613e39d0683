"""netloop.aio's standalone asyncio loop: callbacks, timers, descriptors, sockets, streams, TLS, signals, runners."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tls_certs import Authority

import netloop
import netloop.aio
from netloop._eventloop import EventLoop

T = TypeVar("T")
TIMEOUT = 5.0


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return netloop.aio.run(asyncio.wait_for(main(), TIMEOUT))


def test_run_returns_the_result_on_a_netloop_loop() -> None:
    async def main() -> tuple[object, object, int]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)
        return loop, loop.netloop_loop if isinstance(loop, netloop.aio.Loop) else None, 7

    loop, owner, value = netloop.aio.run(main())
    assert isinstance(loop, netloop.aio.Loop)
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(owner, EventLoop)
    assert value == 7
    assert loop.is_closed()


def test_callbacks_run_in_order_and_a_cancelled_one_never_runs() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        seen: list[int] = []
        done = loop.create_future()
        loop.call_soon(seen.append, 1)
        loop.call_soon(seen.append, 2).cancel()
        loop.call_soon(seen.append, 3)
        loop.call_soon(done.set_result, None)
        await done
        return seen

    assert run(main) == [1, 3]


def test_timers_fire_in_time_order_and_cancelled_ones_do_not() -> None:
    async def main() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        done = loop.create_future()
        start = loop.time()
        loop.call_later(0.03, seen.append, "late")
        loop.call_at(start + 0.01, seen.append, "early")
        loop.call_later(0.02, seen.append, "cancelled").cancel()
        loop.call_later(0.04, done.set_result, None)
        await done
        return seen, loop.time() - start

    seen, elapsed = run(main)
    assert seen == ["early", "late"]
    assert elapsed >= 0.04


def test_a_due_timer_runs_after_the_callbacks_already_queued() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        done = loop.create_future()
        loop.call_at(loop.time() - 1, order.append, "timer")  # due at once
        loop.call_soon(order.append, "queued")
        loop.call_later(0.01, done.set_result, None)
        await done
        return order

    assert run(main) == ["queued", "timer"]


def test_cancelled_timers_do_not_pile_up_in_the_heap() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, netloop.aio.Loop)
        heap = loop.netloop_loop._timers
        before = len(heap)
        for _ in range(10_000):
            loop.call_later(3600, lambda: None).cancel()
        return before, len(heap)

    before, after = run(main)
    assert after - before <= 250


def test_sleep_and_wait_for_timeout() -> None:
    async def main() -> float:
        start = time.monotonic()
        await asyncio.sleep(0.02)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.02)
        return time.monotonic() - start

    assert 0.04 <= run(main) < 2


def test_call_soon_threadsafe_wakes_a_sleeping_loop() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        threading.Timer(0.02, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
        return await fut

    assert run(main) == "woken"


def test_run_in_executor_and_getaddrinfo() -> None:
    async def main() -> tuple[int, Any]:
        loop = asyncio.get_running_loop()
        total = await loop.run_in_executor(None, sum, [1, 2, 3])
        infos = await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        return total, infos[0][4]

    assert run(main) == (6, ("127.0.0.1", 80))


def test_reader_and_writer_on_one_descriptor() -> None:
    async def main() -> tuple[bytes, bool]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        with a, b:
            writable = loop.create_future()
            readable: asyncio.Future[bytes] = loop.create_future()
            loop.add_writer(a.fileno(), lambda: writable.done() or writable.set_result(True))
            loop.add_reader(a.fileno(), lambda: readable.done() or readable.set_result(a.recv(100)))
            assert await writable
            assert loop.remove_writer(a.fileno())
            b.sendall(b"ping")
            data = await readable  # the reader outlived the writer's removal
            assert loop.remove_reader(a.fileno())
            return data, loop.remove_reader(a.fileno())

    assert run(main) == (b"ping", False)


def test_callbacks_queued_before_a_poll_run_before_its_readiness_callbacks() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        a, b = socket.socketpair()
        with a, b:
            done = loop.create_future()
            loop.add_reader(a.fileno(), lambda: done.done() or (order.append("readable"), done.set_result(None)))
            b.sendall(b"x")  # readable before the loop polls again
            loop.call_soon(order.append, "queued")
            await done
            loop.remove_reader(a.fileno())
        return order

    assert run(main) == ["queued", "readable"]


def test_a_descriptor_netloop_serves_is_refused() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, netloop.aio.Loop)
        wake = loop.netloop_loop._wake_r  # the loop's own wake-up descriptor
        with pytest.raises(ValueError, match="served by the netloop loop"):
            loop.add_reader(wake, lambda: None)

    run(main)


def test_sock_methods_against_a_listener() -> None:
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
            client = socket.socket()
            client.setblocking(False)
            with client:
                accepting = loop.create_task(loop.sock_accept(listener))
                await loop.sock_connect(client, listener.getsockname())
                server, _ = await accepting
                with server:
                    await loop.sock_sendall(client, b"hello")
                    data = await loop.sock_recv(server, 5)
                    await loop.sock_sendall(server, data.upper())
                    return await loop.sock_recv(client, 5)

    assert run(main) == b"HELLO"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_streams_over_tcp() -> None:
    async def main() -> bytes:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            payload = b"x" * 300_000 + b"\n"  # more than one read and one write
            writer.write(payload)
            data = await reader.readexactly(len(payload))
            writer.close()
            await writer.wait_closed()
            return data

    assert run(main) == b"x" * 300_000 + b"\n"


def test_streams_over_unix_sockets(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")

    async def main() -> bytes:
        server = await asyncio.start_unix_server(_echo, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"over unix\n")
            data = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return data

    assert run(main) == b"over unix\n"


def test_datagram_endpoint() -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data[::-1], addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self, got: asyncio.Future[bytes]) -> None:
            self.got = got

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.got.set_result(data)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        got: asyncio.Future[bytes] = loop.create_future()
        client, _ = await loop.create_datagram_endpoint(
            lambda: Client(got), remote_addr=server.get_extra_info("sockname")
        )
        client.sendto(b"datagram")
        try:
            return await got
        finally:
            client.close()
            server.close()

    assert run(main) == b"margatad"


def test_tls_server_and_client(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    leaf = ca.issue("localhost", hosts=["127.0.0.1"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(leaf.cert, leaf.key)
    client_ctx = ssl.create_default_context(cafile=str(ca.cert))

    async def main() -> tuple[bytes, bytes]:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=server_ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
            writer.write(b"secret\n")
            first = await reader.readline()
            writer.close()
            await writer.wait_closed()
        return first, await _start_tls_echo(server_ctx, client_ctx)

    assert run(main) == (b"secret\n", b"upgraded\n")


async def _start_tls_echo(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes:
    loop = asyncio.get_running_loop()

    async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()  # "STARTTLS"
        writer.write(b"go\n")
        await writer.drain()
        transport = writer.transport
        protocol = transport.get_protocol()
        tls = await loop.start_tls(transport, protocol, server_ctx, server_side=True)
        assert tls is not None
        reader._transport = tls  # type: ignore[attr-defined]  # as StreamWriter.start_tls does (3.11+)
        line = await reader.readline()
        tls.write(line)
        tls.close()

    server = await asyncio.start_server(upgrade, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"go\n"
        transport = writer.transport
        tls = await loop.start_tls(transport, transport.get_protocol(), client_ctx, server_hostname="127.0.0.1")
        assert tls is not None
        reader._transport = tls  # type: ignore[attr-defined]
        tls.write(b"upgraded\n")
        line = await reader.readline()
        tls.close()
        return line


def test_subprocess() -> None:
    async def main() -> bytes:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('child')", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out

    assert run(main).strip() == b"child"


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_signal_handler_runs_on_the_loop() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[int] = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, 1)
        try:
            threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            return await got
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    assert run(main) == 1


def test_stop_before_run_forever_runs_one_round() -> None:
    loop = netloop.aio.new_event_loop()
    try:
        seen: list[str] = []
        loop.call_soon(seen.append, "queued")
        loop.call_soon(lambda: loop.call_soon(seen.append, "next round"))
        loop.stop()
        loop.run_forever()
        assert seen == ["queued"]
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert seen == ["queued", "next round"]
        assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"  # a loop runs many times
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)


def test_stop_from_a_timer_returns_without_waiting_for_an_event() -> None:
    loop = netloop.aio.new_event_loop()
    rescue = threading.Timer(2.0, loop.call_soon_threadsafe, (loop.stop,))  # a bound on a regression's hang
    try:
        loop.call_later(0.01, loop.stop)
        start = time.monotonic()
        rescue.start()
        loop.run_forever()
        assert time.monotonic() - start < 1.0
    finally:
        rescue.cancel()
        loop.close()


def test_policy_and_loop_factory() -> None:
    async def kind() -> type:
        return type(asyncio.get_running_loop())

    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(netloop.aio.EventLoopPolicy())
    try:
        assert asyncio.run(kind()) is netloop.aio.Loop
    finally:
        asyncio.set_event_loop_policy(old)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=netloop.aio.new_event_loop) as runner:
            assert runner.run(kind()) is netloop.aio.Loop
    assert asyncio.run(kind()) is not netloop.aio.Loop


def test_run_cancels_what_is_left() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> None:
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)

    netloop.aio.run(main())
    assert cancelled.is_set()
