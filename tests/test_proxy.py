"""examples/proxy.py in front of netloop's echo server: integrity, backpressure, closing, and the program itself."""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import connect, echo_through, recv_exact, serving, split, wait_until

import netloop
from examples.echo import Echo
from examples.proxy import Proxy, Side

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 5.0
READ_CAP = 64 * 1024  # the proxy's read_buffer_cap: the most one on_traffic can add to a peer's outbound
# Socket buffers small enough that backpressure shows after a few MiB, and above loopback's 64 KiB MSS: smaller
# ones make TCP fall back to zero-window probes, which crawl.
SOCKET_BUFFER = 128 * 1024


class Probe(Proxy):
    """The proxy, also recording the most outbound bytes it ever left queued and writes made while dialing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peak = 0
        self.opened_upstreams: set[int] = set()
        self.early_writes = 0
        self.lock = threading.Lock()

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        if conn.context is not None:
            with self.lock:
                self.opened_upstreams.add(id(conn))
        return super().on_open(conn)

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        side: Side = conn.context
        with self.lock:
            if not side.upstream and id(side.peer) not in self.opened_upstreams:
                self.early_writes += 1
        action = super().on_traffic(conn)
        with self.lock:
            self.peak = max(self.peak, side.peer.outbound_buffered())
        return action


@contextlib.contextmanager
def listening(handler: netloop.EventHandler, **options: Any) -> Iterator[str]:
    """Serve ``handler`` on a loopback port; yields its address."""
    with serving(handler, "tcp://127.0.0.1:0", **options) as engine:
        yield engine.addrs[0]


@contextlib.contextmanager
def proxied(upstream: str, handler: Proxy | None = None, **options: Any) -> Iterator[str]:
    """The proxy as its program runs it: its own flow control across each pair (``backpressure_pause=False``)."""
    with listening(handler or Proxy(upstream), backpressure_pause=False, **options) as address:
        yield address


@pytest.fixture
def echo() -> Iterator[str]:
    with listening(Echo(), num_event_loop=2) as address:
        yield address


def round_trip(address: str, payload: bytes) -> bytes:
    with connect(address) as sock:
        return echo_through(sock, payload)


def test_several_clients_large_random_payloads(echo: str) -> None:
    rng = random.Random(1)
    payloads = [rng.randbytes(rng.randrange(256 * 1024, 1024 * 1024)) for _ in range(4)]
    results: queue.Queue[tuple[int, bytes]] = queue.Queue()
    with proxied(echo, num_event_loop=2) as proxy:

        def client(i: int) -> None:
            results.put((i, round_trip(proxy, payloads[i])))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        got = dict(results.get_nowait() for _ in payloads)
    for i, payload in enumerate(payloads):
        assert got[i] == payload, f"client {i}: bytes lost or reordered"


def test_bytes_sent_before_upstream_connects_are_kept(echo: str) -> None:
    handler = Probe(echo)
    with proxied(echo, handler) as proxy:
        # Sent before the proxy has even accepted: it usually reaches the proxy while the upstream is dialing, but
        # which of the two events a poll reports first is the kernel's to say: try until one such arrival was seen.
        for i in range(100):
            with connect(proxy) as sock:
                sock.sendall(b"first words %03d" % i)
                assert recv_exact(sock, 15) == b"first words %03d" % i
            if handler.early_writes:
                break
    assert handler.early_writes >= 1


def test_slow_reader_keeps_proxy_outbound_bounded() -> None:
    high_water = 64 * 1024
    small = {"socket_recv_buffer": SOCKET_BUFFER, "socket_send_buffer": SOCKET_BUFFER}
    total = 6 * 1024 * 1024
    payload = random.Random(2).randbytes(total)
    with listening(Echo(), write_buffer_cap=high_water, **small) as upstream:
        handler = Probe(upstream)
        with (
            proxied(upstream, handler, read_buffer_cap=READ_CAP, write_buffer_cap=high_water, **small) as proxy,
            socket.socket() as sock,
        ):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.connect(split(proxy)[1])
            sock.setblocking(False)
            sent = 0
            # Write without reading until the whole chain stops taking bytes for a while.
            while sent < total and select.select([], [sock], [], 0.3)[1]:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(payload[sent : sent + 65536])
            assert sent < total, "nothing pushed back on a client that never reads"
            assert 0 < handler.peak <= high_water + READ_CAP
            # Now read: the paused sides resume and every byte comes back, in order.
            sock.setblocking(True)
            sock.settimeout(TIMEOUT)
            sender = threading.Thread(target=sock.sendall, args=(payload[sent:],))
            sender.start()
            try:
                assert recv_exact(sock, total) == payload
            finally:
                sender.join(TIMEOUT)
            assert handler.peak <= high_water + READ_CAP


class Pusher(netloop.EventHandler):
    """Sends ``size`` bytes as soon as a connection opens and discards what it reads (a server that, like netloop's
    own default, stops reading a connection while its answer is queued)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def on_open(self, conn: netloop.Conn) -> None:
        conn.write(self.payload)

    def on_traffic(self, conn: netloop.Conn) -> None:
        conn.discard()


def test_both_directions_full_at_once_do_not_deadlock() -> None:
    # The upstream pushes while the client sends: both of the proxy's ends have bytes queued above the cap at
    # once. The upstream won't read until its bytes drain, so the proxy must go on reading the upstream end while
    # that end's own queue is full (its flow control is across the pair, not per end).
    high_water = 64 * 1024
    small = {"socket_recv_buffer": SOCKET_BUFFER, "socket_send_buffer": SOCKET_BUFFER}
    pushed = random.Random(3).randbytes(8 * 1024 * 1024)
    request = bytes(4 * 1024 * 1024)
    with listening(Pusher(pushed), write_buffer_cap=high_water, **small) as upstream:
        handler = Probe(upstream)
        with (
            proxied(upstream, handler, read_buffer_cap=READ_CAP, write_buffer_cap=high_water, **small) as proxy,
            connect(proxy) as sock,
        ):
            sender = threading.Thread(target=sock.sendall, args=(request,), daemon=True)
            sender.start()
            assert recv_exact(sock, len(pushed)) == pushed
            sender.join(TIMEOUT)
            assert not sender.is_alive(), "the request did not get through"
            assert handler.peak <= high_water + READ_CAP


class Upstream(netloop.EventHandler):
    """Reports what it receives and when its connections close; says its last words and hangs up on b"bye"."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.next()
        self.events.put(("data", data))
        if data == b"bye":
            conn.write(b"last words")
            return netloop.Action.CLOSE
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        self.events.put(("close", err))


def test_client_closing_closes_upstream() -> None:
    upstream = Upstream()
    with listening(upstream) as address, proxied(address) as proxy:
        with connect(proxy) as sock:
            sock.sendall(b"hello")
            assert upstream.events.get(timeout=TIMEOUT) == ("data", b"hello")
        assert upstream.events.get(timeout=TIMEOUT) == ("close", None)


def test_upstream_closing_closes_client() -> None:
    upstream = Upstream()
    with listening(upstream) as address, proxied(address) as proxy, connect(proxy) as sock:
        sock.sendall(b"bye")
        assert recv_exact(sock, 10) == b"last words"
        assert sock.recv(1) == b""


def half_closed_round_trip(address: str, payload: bytes) -> bytes:
    """Send all of ``payload``, half-close (SHUT_WR), and read until the other end closes."""
    with connect(address) as sock:
        received = bytearray()

        def read() -> None:
            while chunk := sock.recv(1 << 16):
                received.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        reader.join(TIMEOUT)
        assert not reader.is_alive(), f"the proxy never closed ({len(received)} of {len(payload)} bytes back)"
        return bytes(received)


def test_a_client_half_close_lets_every_echoed_byte_come_back(echo: str) -> None:
    payload = random.Random(2).randbytes(4 * 1024 * 1024)
    with proxied(echo) as proxy:
        assert half_closed_round_trip(proxy, payload) == payload


def test_a_half_close_while_the_upstream_is_still_connecting_is_passed_on(echo: str) -> None:
    with proxied(echo) as proxy:
        for i in range(20):  # sent and ended at once: the FIN often reaches the proxy before the upstream connects
            assert half_closed_round_trip(proxy, b"early %d" % i) == b"early %d" % i


class Greeter(netloop.EventHandler):
    """Sends its greeting, half-closes, and keeps reading what the client says until the client ends too."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.heard: queue.Queue[bytes] = queue.Queue()

    def on_open(self, conn: netloop.Conn) -> None:
        conn.context = bytearray()
        conn.write(self.greeting)
        conn.shutdown_write()

    def on_traffic(self, conn: netloop.Conn) -> None:
        conn.context += conn.next()

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        self.heard.put(bytes(conn.context))


def test_an_upstream_half_close_still_carries_what_the_client_sends_after_it() -> None:
    greeting = random.Random(3).randbytes(1024 * 1024)
    upstream = Greeter(greeting)
    with listening(upstream) as address, proxied(address) as proxy, connect(proxy) as sock:
        assert recv_exact(sock, len(greeting)) == greeting
        assert sock.recv(1) == b""  # the upstream's FIN, passed on
        sock.sendall(b"still talking")
        sock.shutdown(socket.SHUT_WR)
        assert upstream.heard.get(timeout=TIMEOUT) == b"still talking"


def test_unreachable_upstream_closes_client() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
        with proxied(f"tcp://127.0.0.1:{unused.getsockname()[1]}") as proxy, connect(proxy) as sock:
            assert sock.recv(1) == b""


def test_bad_high_water() -> None:
    command = [sys.executable, "-m", "examples.proxy", "--upstream", "tcp://127.0.0.1:9", "--high-water", "0"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode != 0 and "write_buffer_cap" in result.stderr


def test_program(echo: str) -> None:
    command = [sys.executable, "-m", "examples.proxy", "--listen", "tcp://127.0.0.1:0", "--upstream", echo]
    proxy = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proxy.stdout
    assert stdout is not None
    try:
        line = stdout.readline()  # "listening on tcp://127.0.0.1:PORT -> UPSTREAM"; pytest-timeout guards it
        assert line.startswith("listening on tcp://127.0.0.1:") and line.rstrip().endswith(echo), line
        assert round_trip(line.split()[2], b"through the program") == b"through the program"
    finally:
        proxy.terminate()
        proxy.wait(TIMEOUT)
        stdout.close()
    assert proxy.returncode == 0


def test_a_dead_upstream_is_logged_once_not_once_per_client(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, not listening: every connect is refused
        dead = f"tcp://127.0.0.1:{unused.getsockname()[1]}"
        with caplog.at_level(logging.WARNING, logger="examples.proxy"), proxied(dead) as proxy:
            for _ in range(50):
                with connect(proxy) as sock:
                    assert sock.recv(1) == b""
    warnings = [r for r in caplog.records if r.name == "examples.proxy"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "refused" in warnings[0].getMessage().lower()


def test_slow_readers_that_leave_return_every_descriptor() -> None:
    """Clients that never read and then disconnect leave no proxy<->upstream pair holding full queues."""
    small = {"socket_recv_buffer": SOCKET_BUFFER, "socket_send_buffer": SOCKET_BUFFER, "write_buffer_cap": 64 * 1024}
    with serving(Echo(), "tcp://127.0.0.1:0", linger_timeout=0.5, **small) as upstream_engine:
        upstream = upstream_engine.addrs[0]
        with serving(Proxy(upstream), "tcp://127.0.0.1:0", linger_timeout=0.5, **small) as proxy_engine:
            for _ in range(5):
                sock = socket.create_connection(split(proxy_engine.addrs[0])[1], timeout=TIMEOUT)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
                sock.setblocking(False)
                payload = b"x" * 65536
                while select.select([], [sock], [], 0.2)[1]:  # push until the whole chain is full
                    with contextlib.suppress(BlockingIOError):
                        sock.send(payload)
                sock.close()  # leaves without reading
            wait_until(lambda: proxy_engine.count_connections() == 0, what="the proxy's connections to go")
            wait_until(lambda: upstream_engine.count_connections() == 0, what="the upstream's connections to go")
