"""asyncio inside netloop handlers: the running loop, async def events, ordering, cancellation, errors, drain."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from loopback import TIMEOUT, connect, datagram_socket, recv_exact, recv_until_closed, serving, wait_until
from tls_certs import Authority

import netloop
import netloop.aio
from netloop import Action


class Lines:
    """Complete ``\\n``-ended lines of a connection's buffered inbound bytes (the rest stays buffered)."""

    @staticmethod
    def take(conn: netloop.Conn) -> list[bytes]:
        data = conn.peek()
        end = data.rfind(b"\n") + 1
        conn.discard(end)
        return data[:end].splitlines(keepends=True)


def test_every_callback_runs_inside_the_loops_asyncio_loop() -> None:
    seen: dict[str, Any] = {}
    closed = threading.Event()

    class Probe(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> None:
            seen["open"] = (asyncio.get_running_loop(), netloop.aio.loop_of(conn.event_loop))

        def on_traffic(self, conn: netloop.Conn) -> None:
            loop = asyncio.get_running_loop()
            seen["traffic"] = (loop, loop.is_running(), threading.get_ident() == conn.event_loop.thread_id)  # type: ignore[attr-defined]
            conn.write(conn.next())

        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
            seen["close"] = asyncio.get_running_loop()
            closed.set()

    with serving(Probe(), "tcp://127.0.0.1:0") as engine:
        with connect(engine.addrs[0]) as sock:
            sock.sendall(b"hi")
            assert recv_exact(sock, 2) == b"hi"
        assert closed.wait(TIMEOUT)
    loop, face = seen["open"]
    assert isinstance(loop, netloop.aio.Loop) and loop is face
    assert seen["traffic"] == (loop, True, True)
    assert seen["close"] is loop
    wait_until(loop.is_closed, what="the engine's stop to close the loop's asyncio face")


class AsyncEcho(netloop.EventHandler):
    """Answers each line after an await: ``slow`` lines take 50 ms, the others none."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []

    async def on_traffic(self, conn: netloop.Conn) -> None:
        for line in Lines.take(conn):
            self.taken.append(line)
            await asyncio.sleep(0.05 if line.startswith(b"slow") else 0)
            conn.write(b"re:" + line)


@pytest.mark.parametrize("kind", ["tcp", "unix", "edge", "tls"])
def test_async_on_traffic_keeps_pipelined_replies_in_order(kind: str, tmp_path: Path) -> None:
    addr = f"unix://{tmp_path}/s.sock" if kind == "unix" else "tcp://127.0.0.1:0"
    options: dict[str, Any] = {"edge_triggered": True} if kind == "edge" else {}
    client_ctx = None
    if kind == "tls":
        ca = Authority(tmp_path)
        leaf = ca.issue("localhost", hosts=["127.0.0.1"])
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(leaf.cert, leaf.key)
        options["tls"] = server_ctx
        client_ctx = ssl.create_default_context(cafile=str(ca.cert))
    handler = AsyncEcho()
    with serving(handler, addr, **options) as engine, connect(engine.addrs[0]) as raw:
        sock = raw if client_ctx is None else client_ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(b"slow 1\n")
        wait_until(lambda: len(handler.taken) == 1, what="the first task")
        sock.sendall(b"fast 2\nfast 3\n")  # while the first request's task still sleeps
        sock.sendall(b"slow 4\nfast 5\n")
        expected = b"re:slow 1\nre:fast 2\nre:fast 3\nre:slow 4\nre:fast 5\n"
        try:
            assert recv_exact(sock, len(expected)) == expected  # type: ignore[arg-type]
        finally:
            sock.close()  # the TLS socket took the descriptor over from the raw one


def test_async_handler_awaits_an_asyncio_client_and_a_queue() -> None:
    """An async on_traffic talks to a second server with asyncio streams; on_open's task feeds from a Queue."""
    upstream_seen = threading.Event()

    class Upper(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> None:
            upstream_seen.set()
            conn.write(conn.next().upper())

    class Proxy(netloop.EventHandler):
        def __init__(self, upstream: str) -> None:
            self.host, port = upstream.removeprefix("tcp://").rsplit(":", 1)
            self.port = int(port)

        def on_open(self, conn: netloop.Conn) -> None:
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            conn.context = queue
            asyncio.get_running_loop().create_task(self.writer(conn, queue))

        async def writer(self, conn: netloop.Conn, queue: asyncio.Queue[bytes]) -> None:
            while True:
                conn.write(await queue.get())

        async def on_traffic(self, conn: netloop.Conn) -> None:
            for line in Lines.take(conn):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(line)
                answer = await reader.readline()
                writer.close()
                await writer.wait_closed()
                await conn.context.put(answer)

    with (
        serving(Upper(), "tcp://127.0.0.1:0") as upstream,
        serving(Proxy(upstream.addrs[0]), "tcp://127.0.0.1:0") as proxy,
        connect(proxy.addrs[0]) as sock,
    ):
        sock.sendall(b"one\ntwo\n")
        assert recv_exact(sock, 8) == b"ONE\nTWO\n"
    assert upstream_seen.is_set()


def test_returned_action_applies_when_the_task_ends() -> None:
    class Once(netloop.EventHandler):
        async def on_traffic(self, conn: netloop.Conn) -> Action:
            await asyncio.sleep(0)
            conn.write(b"bye:" + conn.next())
            return Action.CLOSE

    with serving(Once(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"x")
        assert recv_until_closed(sock) == b"bye:x"


def test_async_on_open_runs_before_the_first_on_traffic() -> None:
    class Greeter(netloop.EventHandler):
        async def on_open(self, conn: netloop.Conn) -> None:
            await asyncio.sleep(0.02)
            conn.write(b"hello\n")

        def on_traffic(self, conn: netloop.Conn) -> None:
            conn.write(conn.next())

    with serving(Greeter(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"early\n")  # arrives while on_open's task still sleeps
        assert recv_exact(sock, 12) == b"hello\nearly\n"


def test_closing_cancels_the_running_task_and_runs_async_on_close() -> None:
    events: list[str] = []
    done = threading.Event()

    class Stuck(netloop.EventHandler):
        async def on_traffic(self, conn: netloop.Conn) -> None:
            conn.next()
            events.append("started")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                events.append("cancelled")
                raise

        async def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
            await asyncio.sleep(0)
            events.append("on_close")
            done.set()

    with serving(Stuck(), "tcp://127.0.0.1:0") as engine:
        sock = connect(engine.addrs[0])
        sock.sendall(b"wait forever")
        wait_until(lambda: "started" in events, what="the task")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset: the connection closes while its task runs (a FIN waits for the task, see docs)
        assert done.wait(TIMEOUT)
    assert events == ["started", "cancelled", "on_close"]


def test_a_raising_task_closes_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BaseException | None] = []

    class Fragile(netloop.EventHandler):
        async def on_traffic(self, conn: netloop.Conn) -> None:
            data = conn.next()
            await asyncio.sleep(0)
            if data == b"boom":
                raise ValueError("bad request")
            conn.write(data)

        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
            errors.append(err)

    with caplog.at_level(logging.ERROR), serving(Fragile(), "tcp://127.0.0.1:0") as engine:
        with connect(engine.addrs[0]) as good, connect(engine.addrs[0]) as bad:
            bad.sendall(b"boom")
            assert recv_until_closed(bad) == b""
            bad.close()  # the server lingers for our end
            good.sendall(b"fine")
            assert recv_exact(good, 4) == b"fine"
            wait_until(lambda: len(errors) == 1, what="on_close of the failed connection")
        stats = engine.stats()
    assert isinstance(errors[0], ValueError)
    assert stats["handler_errors"] >= 1
    assert "bad request" in caplog.text or "on_traffic" in caplog.text


def test_drain_waits_for_the_outbound_to_fall() -> None:
    low_after: list[int] = []
    payload = b"z" * (4 << 20)

    class Bulk(netloop.EventHandler):
        async def on_traffic(self, conn: netloop.Conn) -> None:
            conn.next()
            for i in range(0, len(payload), 1 << 20):
                conn.write(payload[i : i + (1 << 20)])
                await netloop.aio.drain(conn)
                low_after.append(conn.outbound_buffered())

    cap = 64 << 10
    with serving(Bulk(), "tcp://127.0.0.1:0", write_buffer_cap=cap) as engine, connect(engine.addrs[0]) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
        sock.sendall(b"go")
        assert recv_exact(sock, len(payload)) == payload
    assert len(low_after) == 4
    assert max(low_after) <= cap


def test_drain_of_a_closed_connection_raises() -> None:
    results: list[BaseException] = []
    done = threading.Event()

    class Closer(netloop.EventHandler):
        async def on_traffic(self, conn: netloop.Conn) -> Action:
            conn.next()
            return Action.CLOSE

        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
            asyncio.get_running_loop().create_task(self.late(conn))

        async def late(self, conn: netloop.Conn) -> None:
            try:
                await netloop.aio.drain(conn)
            except netloop.ConnClosedError as exc:
                results.append(exc)
            done.set()

    with serving(Closer(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"x")
        assert recv_until_closed(sock) == b""
        sock.close()  # the server lingers for our end before on_close
        assert done.wait(TIMEOUT)
    assert len(results) == 1


def test_udp_coroutines_run_side_by_side() -> None:
    class Reverse(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Any:
            return self.answer(conn, conn.next())  # the datagram is read now; the coroutine gets it

        async def answer(self, conn: netloop.Conn, data: bytes) -> None:
            await asyncio.sleep(0.01 if data == b"slow" else 0)
            conn.write(data[::-1])

    with serving(Reverse(), "udp://127.0.0.1:0") as engine:
        sock, addr = datagram_socket(engine.addrs[0])
        with sock:
            sock.sendto(b"slow", addr)
            sock.sendto(b"fast", addr)
            assert [sock.recv(100), sock.recv(100)] == [b"tsaf", b"wols"]


def test_stopping_the_engine_cancels_background_tasks() -> None:
    cancelled = threading.Event()

    class Background(netloop.EventHandler):
        def on_boot(self, engine: netloop.Engine) -> None:
            pass

        def on_open(self, conn: netloop.Conn) -> None:
            asyncio.get_running_loop().create_task(self.forever())

        async def forever(self) -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    with serving(Background(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"x")
        wait_until(lambda: engine.count_connections() == 1, what="the connection")
    assert cancelled.wait(TIMEOUT)


def test_run_coroutine_threadsafe_onto_an_engine_loop() -> None:
    class Idle(netloop.EventHandler):
        pass

    async def where() -> int:
        await asyncio.sleep(0)
        return threading.get_ident()

    with serving(Idle(), "tcp://127.0.0.1:0") as engine:
        owner = engine.loops[0]
        loop = netloop.aio.loop_of(owner)
        ident = asyncio.run_coroutine_threadsafe(where(), loop).result(TIMEOUT)
        assert ident == owner.thread_id  # type: ignore[attr-defined]
        submitted: list[asyncio.AbstractEventLoop] = []
        ran = threading.Event()
        owner.submit(lambda: (submitted.append(asyncio.get_running_loop()), ran.set()))
        assert ran.wait(TIMEOUT)
        assert submitted == [loop]
        with pytest.raises(RuntimeError, match="engine"):
            loop.stop()


SIGNAL_SCRIPT = """
import asyncio, os, signal, socket, threading, netloop

class Handler(netloop.EventHandler):
    def on_boot(self, engine):
        def client():
            port = int(engine.addrs[0].rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                assert sock.recv(5) == b"ready"
                os.kill(os.getpid(), signal.SIGUSR1)
                print(sock.recv(3).decode(), flush=True)
            engine.stop()
        threading.Thread(target=client, daemon=True).start()

    def on_open(self, conn):
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, conn.write, b"sig")
        conn.write(b"ready")

netloop.run(Handler(), "tcp://127.0.0.1:0")  # one loop: it runs on the main thread
print("stopped", flush=True)
"""


def test_signal_handler_on_an_engine_loop_on_the_main_thread() -> None:
    proc = subprocess.run([sys.executable, "-c", SIGNAL_SCRIPT], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["sig", "stopped"]
