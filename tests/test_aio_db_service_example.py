"""examples/db_service.py against a real redis-server: answers in order, hostile input, and clients that go away
while their request is awaited."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback import connect, recv_exact, recv_until_closed, serving, wait_until

import netloop
from bench.resp_differential import free_port
from bench.resp_differential import redis_server as _redis_server

pytest.importorskip("redis.asyncio")
from examples.db_service import MAX_LINE, DbService

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    with _redis_server() as port:
        yield port


@pytest.fixture
def service(redis_port: int) -> Iterator[netloop.Engine]:
    with serving(DbService(f"redis://127.0.0.1:{redis_port}/0"), "tcp://127.0.0.1:0") as engine:
        yield engine


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    return buf.splitlines()


def blocked_clients(port: int) -> int:
    import redis

    with redis.Redis(port=port) as client:
        return int(client.info("clients")["blocked_clients"])


def test_pipelined_requests_are_answered_in_order(service: netloop.Engine) -> None:
    with connect(service.addrs[0]) as sock:
        sock.sendall(b"SET colour blue\nGET colour\nPUSH q1 a\nPUSH q1 b\nTAKE q1\nGET nothing-here\n")
        assert read_lines(sock, 6) == [b"OK", b"blue", b"1", b"2", b"a", b"(nil)"]


def test_garbage_gets_errors_and_the_connection_serves_on(service: netloop.Engine) -> None:
    with connect(service.addrs[0]) as sock:
        sock.sendall(b"\xff\xfe\x00garbage\nFLY me to the moon\n\n   \nSET only-a-key\nSET k2 v2\nGET k2\n")
        lines = read_lines(sock, 7)
        assert [line[:4] for line in lines[:5]] == [b"ERR "] * 5
        assert lines[5:] == [b"OK", b"v2"]
        sock.sendall(os.urandom(1000).replace(b"\n", b"").replace(b"\r", b"") + b"\nGET k2\n")
        assert read_lines(sock, 2)[1] == b"v2"


def test_a_line_too_long_is_refused_and_closes_only_that_connection(service: netloop.Engine) -> None:
    with connect(service.addrs[0]) as other, connect(service.addrs[0]) as sock:
        sock.sendall(b"x" * (MAX_LINE + 10))
        assert recv_until_closed(sock) == b"ERR line too long\n"
        other.sendall(b"SET still here\nGET still\n")
        assert read_lines(other, 2) == [b"OK", b"here"]


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_reset_while_its_request_is_awaited(service: netloop.Engine, redis_port: int) -> None:
    """The pending TAKE is cancelled: Redis forgets its blocked pop, so the value pushed next is not lost to it."""
    with connect(service.addrs[0]) as watcher:
        sock = connect(service.addrs[0])
        sock.sendall(b"TAKE gone-queue\n")
        wait_until(lambda: blocked_clients(redis_port) == 1, what="the TAKE to block in Redis")
        reset(sock)
        wait_until(lambda: blocked_clients(redis_port) == 0, what="the cancelled TAKE to leave Redis")
        watcher.sendall(b"PUSH gone-queue kept\nTAKE gone-queue\n")
        assert read_lines(watcher, 2) == [b"1", b"kept"]
        wait_until(lambda: service.count_connections() == 1, what="the reset connection to close")


def test_garbage_then_a_reset_mid_request(service: netloop.Engine) -> None:
    """Half a request and a reset, many times over: nothing leaks into the next client's answers."""
    for i in range(20):
        sock = connect(service.addrs[0])
        sock.sendall(b"\x00\xff" * i + b"\nSET half" + b"-way" * i)
        reset(sock)
    with connect(service.addrs[0]) as sock:
        sock.sendall(b"SET after reset\nGET after\n")
        assert read_lines(sock, 2) == [b"OK", b"reset"]
    wait_until(lambda: service.count_connections() == 0, what="every connection to close")


def test_many_clients_at_once_each_get_their_own_answers(service: netloop.Engine) -> None:
    socks = [connect(service.addrs[0]) for _ in range(20)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(f"SET key{i} value{i}\nGET key{i}\n".encode())
        for i, sock in enumerate(socks):
            assert recv_exact(sock, len(f"OK\nvalue{i}\n")) == f"OK\nvalue{i}\n".encode()
    finally:
        for sock in socks:
            sock.close()


def test_the_example_as_a_user_runs_it(redis_port: int) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "examples.db_service",
        "--port",
        str(port),
        "--redis",
        f"redis://127.0.0.1:{redis_port}/0",
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _answers(port), what="the db service to listen")
        with connect(f"tcp://127.0.0.1:{port}") as sock:
            sock.sendall(b"SET user alice\nGET user\n")
            assert read_lines(sock, 2) == [b"OK", b"alice"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
    finally:
        proc.kill()
        proc.wait()


def _answers(port: int) -> bool:
    try:
        connect(f"tcp://127.0.0.1:{port}", timeout=1).close()
    except OSError:
        return False
    return True
