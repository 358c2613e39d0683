"""Loopback clients for the tests: real sockets against real netloop servers, synchronised with timeouts."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import netloop

TIMEOUT = 10.0


@contextlib.contextmanager
def serving(handler: netloop.EventHandler, *addrs: str, **options: Any) -> Iterator[netloop.Engine]:
    """A started engine that is stopped (and checked to stop) when the block ends."""
    engine = netloop.start(handler, *addrs, **options)
    try:
        yield engine
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT), "engine did not stop"


ECHO_SCRIPT = """
import netloop
class Echo(netloop.EventHandler):
    def on_boot(self, engine):
        print(engine.addrs[0], flush=True)
    def on_traffic(self, conn):
        conn.write(conn.next())
netloop.run(Echo(), "tcp://127.0.0.1:0")
"""
"""A one-loop echo server for ``script_server``."""


@contextlib.contextmanager
def script_server(script: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``script`` (dedented) run by a new Python process that prints the address it serves as its first line.

    Yields the process and that address; the process is killed when the block ends, if it is still running.
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


def split(url: str) -> tuple[str, Any]:
    """('tcp'|'udp'|'unix', sockaddr) for a bound address string from ``engine.addrs``."""
    scheme, _, rest = url.partition("://")
    if scheme == "unix":
        return "unix", rest
    host, _, port = rest.rpartition(":")
    return scheme.rstrip("46"), (host.strip("[]"), int(port))


def connect(url: str, timeout: float = TIMEOUT) -> socket.socket:
    kind, addr = split(url)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(addr)
        return sock
    assert kind == "tcp", url
    return socket.create_connection(addr, timeout=timeout)


@contextlib.contextmanager
def switching_threads_often() -> Iterator[None]:
    """Switch threads every microsecond (GIL builds) while inside: a race between threads gets its chances."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def connect_when_listening(url: str, timeout: float = TIMEOUT) -> socket.socket:
    """``connect`` to a server another process is starting: its Unix socket file appears at ``bind``, a moment
    before ``listen``, and a connection in between is refused."""
    connected: list[socket.socket] = []

    def attempt() -> bool:
        try:
            connected.append(connect(url, timeout))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        return True

    wait_until(attempt, timeout, what=f"a server listening on {url}")
    return connected[0]


def datagram_socket(url: str, timeout: float = TIMEOUT) -> tuple[socket.socket, Any]:
    kind, addr = split(url)
    assert kind == "udp", url
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    return sock, addr


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_until_closed(sock: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return bytes(buf)
        buf += chunk


def echo_through(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` from a thread while reading the same number of bytes back (no send/recv deadlock)."""
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(payload)
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        return recv_exact(sock, len(payload))
    finally:
        sender.join(TIMEOUT)
        if errors:
            raise errors[0]


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause.wait(0.002)


class Recorder(netloop.EventHandler):
    """An echo handler that records its events (thread-safe) for assertions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Any]] = []
        self.opened = threading.Semaphore(0)
        self.closed = threading.Semaphore(0)
        self.errors: list[BaseException | None] = []

    def record(self, name: str, value: Any = None) -> None:
        with self.lock:
            self.events.append((name, value))

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.events]

    def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
        self.record("boot")
        return None

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        self.record("open", conn)
        self.opened.release()
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.write(conn.next())
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        self.record("close", err)
        with self.lock:
            self.errors.append(err)
        self.closed.release()
        return None

    def on_shutdown(self, engine: netloop.Engine) -> None:
        self.record("shutdown")
