"""The command-line runner, ``python -m netloop.serve``: started as an operator would, talked to over loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from loopback import TIMEOUT, recv_exact, wait_until

from netloop.proxy_protocol import encode_v1

pytestmark = pytest.mark.timeout(60)

TESTS = Path(__file__).parent


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, argv: list[str], prefix: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "netloop.serve", *argv],
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@contextmanager
def serve(argv: list[str], prefix: list[str] | None = None) -> Iterator[Server]:
    server = Server(argv, prefix)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        server.reader.join(TIMEOUT)


def talk(port: int, data: bytes, size: int | None = None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        return recv_exact(sock, len(data) if size is None else size)


def answers(port: int, data: bytes = b"ping") -> bool:
    try:
        return talk(port, data) == data
    except OSError:
        return False


def test_serves_and_stops_cleanly_on_sigterm() -> None:
    port = _free_port()
    with serve(["serve_apps:Echo", "--bind", f"tcp://127.0.0.1:{port}", "--idle-timeout", "30"]) as server:
        wait_until(lambda: answers(port), what="the server to serve")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_here:App", "cannot import 'no_such_module_here'"),
        ("serve_apps:Missing", "has no attribute 'Missing'"),
        ("serve_apps:NOT_A_HANDLER", "neither a netloop.EventHandler nor a callable"),
        ("serve_apps", "expected 'module:attribute'"),
    ],
)
def test_a_bad_target_fails_with_a_clear_message(target: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netloop.serve", target], env=_env(), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_a_bad_flag_fails_with_status_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netloop.serve", "serve_apps:Echo", "--idle-timeout", "-1"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "must be positive seconds" in done.stderr


@pytest.mark.parametrize("bind", ["tcp://127.0.0.1", "nonsense://127.0.0.1:80", "tcp://127.0.0.1:99999"])
def test_a_bad_bind_fails_with_status_2(bind: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netloop.serve", "serve_apps:Echo", "--bind", bind],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert bind in done.stderr


def test_workers_sighup_and_a_factory_target() -> None:
    port = _free_port()
    argv = ["serve_apps:make_echo", "--bind", f"tcp://127.0.0.1:{port}", "--workers", "2"]
    with serve([*argv, "--worker-balancing", "parent", "--drain-timeout", "0.5"]) as server:
        wait_until(lambda: answers(port), what="the workers to serve")
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: server.logged("restart done"), what="the restart")
        assert answers(port)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0


def test_a_worker_that_cannot_load_the_target_fails_the_start() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netloop.serve", "serve_apps:Missing", "--workers", "1", "--bind", "tcp://127.0.0.1:0"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "has no attribute 'Missing'" in done.stderr


def test_proxy_protocol_flags() -> None:
    port = _free_port()
    argv = ["serve_apps:Echo", "--bind", f"tcp://127.0.0.1:{port}", "--proxy-protocol", "v1"]
    with serve([*argv, "--proxy-allow-from", "127.0.0.0/8,::1"]):
        header = encode_v1(("192.0.2.9", 4242), ("127.0.0.1", port))

        def who() -> bytes | None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
                    sock.sendall(header + b"who")
                    return sock.recv(100)
            except OSError:
                return None

        wait_until(lambda: who() == b"('192.0.2.9', 4242)", what="the client's address from the header")


def test_systemd_socket_activation() -> None:
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed (Debian's systemd package)")
    port = _free_port()
    # It passes on no environment but LISTEN_*: the runner's import path is given with -E.
    prefix = [activate, "-l", f"127.0.0.1:{port}", "-E", f"PYTHONPATH={_env()['PYTHONPATH']}"]
    with serve(["serve_apps:Echo", "--bind", "systemd://"], prefix=prefix):
        # systemd-socket-activate listens first and starts the runner on the first connection.
        wait_until(lambda: answers(port), what="the activated server")
        assert answers(port, b"activated")


def test_max_connections_per_source_flag() -> None:
    port = _free_port()
    with serve(["serve_apps:Echo", "--bind", f"tcp://127.0.0.1:{port}", "--max-connections-per-source", "1"]):
        wait_until(lambda: answers(port), what="the server to serve")
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as kept:
            kept.sendall(b"kept")
            assert recv_exact(kept, 4) == b"kept"
            assert not answers(port)  # a second connection from this address is closed at once
        wait_until(lambda: answers(port), what="room again once the first closed")
