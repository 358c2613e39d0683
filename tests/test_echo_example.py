"""The echo example as a user runs it: ``python -m examples.echo`` over TCP, UDP and Unix, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from loopback import connect, datagram_socket, echo_through, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    # A port free for both TCP and UDP at the time of asking.
    while True:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def _answers(url: str) -> bool:
    try:
        connect(url, timeout=1).close()
    except OSError:
        return False
    return True


def test_echo_example_over_tcp_udp_and_unix(tmp_path: Path) -> None:
    port = _free_port()
    path = tmp_path / "echo.sock"
    cmd = [sys.executable, "-m", "examples.echo", "--port", str(port), "--udp", "--unix", str(path), "--loops", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _answers(f"tcp://127.0.0.1:{port}") and path.exists(), what="the echo server")
        payload = os.urandom(300_000)
        with connect(f"tcp://127.0.0.1:{port}") as sock:
            assert echo_through(sock, payload) == payload
        with connect(f"unix://{path}") as sock:
            assert echo_through(sock, payload) == payload
        sock, target = datagram_socket(f"udp://127.0.0.1:{port}")
        with sock:
            sock.sendto(b"datagram", target)
            assert sock.recv(100) == b"datagram"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert not path.exists(), "the Unix socket file is removed on a graceful stop"
    finally:
        proc.kill()
        proc.wait()
