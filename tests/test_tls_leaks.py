"""TLS connections are freed when they end, by reference counting alone: no cycle waits for a full collection.

Each test turns the cyclic collector off while it runs (``no_collector``), so a connection that only a collection
would free stays alive and is counted: through weak references to the connections the handler saw, or by counting
the ``TlsConn`` objects among ``gc.get_objects()`` for connections it never saw (failed handshakes). The servers run
in-process; ``tests/test_soak.py`` checks the same of a server process's RSS and object count.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import ssl
import struct
import threading
import weakref
from collections.abc import Iterator

import pytest
from loopback import TIMEOUT, connect, recv_exact, serving, wait_until
from tls_certs import Authority, Issued

import netloop
from netloop._eventloop import Timer
from netloop._tls import TlsConn

SIZE = 4 << 20  # each answer: one write the client never reads to its end
CLIENTS = 12


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Issued]:
    ca = Authority(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("localhost", ["localhost", "127.0.0.1"])


@pytest.fixture
def server_ctx(certs: tuple[Authority, Issued]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs[1].cert, certs[1].key)
    return ctx


@pytest.fixture
def client_ctx(certs: tuple[Authority, Issued]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs[0].cert))


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector off for the test: only reference counting frees anything."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Download(netloop.EventHandler):
    """Answers each request with SIZE fresh bytes in one write; keeps a weak reference to each connection."""

    def __init__(self) -> None:
        self.conns: list[weakref.ref[netloop.Conn]] = []
        self.closed = threading.Semaphore(0)

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        self.conns.append(weakref.ref(conn))
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.next()
        conn.write(b"x" * SIZE)
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        self.closed.release()  # err is not kept: a handler that keeps it keeps what its traceback holds
        return None


def probe(url: str, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """A client that shakes hands and stays: its events are the loop's latest (a loop's locals hold the last
    connection it served until the next event)."""
    return ctx.wrap_socket(connect(url), server_hostname="localhost")


def read_until_dropped(sock: socket.socket) -> None:
    """Read until the server closes (an alert may come first; a reset counts as closed)."""
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(1 << 16):
            pass


def alive(refs: list[weakref.ref[netloop.Conn]]) -> int:
    return sum(ref() is not None for ref in refs)


def tls_conns() -> int:
    return sum(isinstance(obj, TlsConn) for obj in gc.get_objects())


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
def test_connections_dropped_mid_download_are_freed_without_a_collection(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, no_collector: None, reset: bool
) -> None:
    """Clients ask for 4 MiB, read part of it and close without close_notify. Each server connection (and the
    outbound bytes it held) is freed when it closes: the send error it kept once held its frames, the frames the
    connection (a cycle), and its cancelled handshake timer held it for ``tls_handshake_timeout``."""
    handler = Download()
    with serving(handler, "tcp://127.0.0.1:0", tls=server_ctx, write_buffer_limit=0) as engine:
        url = engine.addrs[0]
        for i in range(CLIENTS):
            with client_ctx.wrap_socket(connect(url), server_hostname="localhost") as sock:
                sock.sendall(b"get")
                recv_exact(sock, (i + 1) * 64 * 1024)
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for _ in range(CLIENTS):
            assert handler.closed.acquire(timeout=TIMEOUT)
        dropped = list(handler.conns)
        with probe(url, client_ctx):
            wait_until(lambda: len(handler.conns) > CLIENTS, what="the probe to open")
            assert alive(dropped) == 0, f"{alive(dropped)} of {CLIENTS} dropped connections are still alive"


def test_failed_handshakes_are_freed_without_a_collection(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, no_collector: None
) -> None:
    """A connection whose handshake failed keeps the error for a dial to raise: without the error's frames, which
    held the connection itself."""
    before = tls_conns()
    with serving(netloop.EventHandler(), "tcp://127.0.0.1:0", tls=server_ctx) as engine:
        url = engine.addrs[0]
        for i in range(CLIENTS):
            with connect(url) as bad:
                bad.sendall(b"GET / HTTP/1.1\r\n\r\n" if i % 2 else b"\x16\x03\x01\x00\x05hello")
                with contextlib.suppress(OSError):  # the server may have refused the garbage (and reset) already
                    bad.shutdown(socket.SHUT_WR)
                read_until_dropped(bad)
        wait_until(lambda: engine.stats()["tls_handshake_failures"] == CLIENTS, what="the failures to be counted")
        with probe(url, client_ctx):
            wait_until(lambda: engine.count_connections() == 1, what="the probe to be taken")
            assert tls_conns() - before <= 1, f"{tls_conns() - before - 1} failed handshakes are still alive"


def test_cancelled_handshake_timers_do_not_pile_up(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, no_collector: None
) -> None:
    """Each handshake's timer is cancelled when it completes; the loop drops cancelled timers from its heap as it
    grows, instead of keeping every one for ``tls_handshake_timeout`` (a handshake flood's worth)."""
    handshakes = 150
    before = sum(isinstance(obj, Timer) for obj in gc.get_objects())
    with serving(netloop.EventHandler(), "tcp://127.0.0.1:0", tls=server_ctx, tls_handshake_timeout=60) as engine:
        url = engine.addrs[0]
        for _ in range(handshakes):
            probe(url, client_ctx).close()
        with probe(url, client_ctx):
            wait_until(lambda: engine.stats()["accepted"] == handshakes + 1, what="every handshake to be taken")
            timers = sum(isinstance(obj, Timer) for obj in gc.get_objects()) - before
    assert timers < handshakes // 2, f"{timers} timers kept after {handshakes} handshakes"
