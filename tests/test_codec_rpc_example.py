"""examples/rpc.py run as a program: a real server process, real socket clients."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    # The server logs each connection it closes on error: a file, unlike a pipe, never fills up.
    log = tmp_path_factory.mktemp("rpc") / "stderr.txt"
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "examples.rpc", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    stdout = server.stdout
    assert stdout is not None
    try:
        line = stdout.readline()  # "listening on tcp://127.0.0.1:PORT"; pytest-timeout guards it
        assert line.startswith("listening on tcp://127.0.0.1:"), line + log.read_text()
        yield int(line.rsplit(":", 1)[1])
    finally:
        server.terminate()
        server.wait(TIMEOUT)
        stdout.close()


def frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return len(body).to_bytes(4, "big") + body


def read_reply(sock: socket.socket) -> dict[str, Any]:
    header = sock.recv(4, socket.MSG_WAITALL)
    assert len(header) == 4, "connection closed"
    body = sock.recv(int.from_bytes(header, "big"), socket.MSG_WAITALL)
    reply: dict[str, Any] = json.loads(body)
    return reply


def test_calls_pipelined_and_split_across_writes(port: int) -> None:
    wire = frame({"id": 1, "method": "add", "params": [1, 2, 39]}) + frame(
        {"id": 2, "method": "echo", "params": [{"a": [1, "b"]}]}
    )
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(wire[:3])
        sock.sendall(wire[3:30])
        sock.sendall(wire[30:])
        assert read_reply(sock) == {"id": 1, "result": 42}
        assert read_reply(sock) == {"id": 2, "result": {"a": [1, "b"]}}


def test_a_bad_call_gets_an_error_reply_and_the_connection_stays(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(frame({"id": 7, "method": "divide", "params": [1, 0]}) + frame({"id": 8, "method": "add"}))
        assert read_reply(sock) == {"id": 7, "error": "KeyError: 'divide'"}
        assert read_reply(sock) == {"id": 8, "result": 0}
        sock.sendall(b"\x00\x00\x00\x03{x}")
        assert read_reply(sock)["error"].startswith("JSONDecodeError")


def test_an_overlong_request_closes_the_connection(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall((1 << 30).to_bytes(4, "big"))
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass  # closed with unread bytes: the kernel may reset instead


def test_the_command_line_client(port: int) -> None:
    client = subprocess.run(
        [sys.executable, "-m", "examples.rpc", "--port", str(port), "--call", "echo", "[1, 2]"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert json.loads(client.stdout) == [1, 2]


def test_the_command_line_client_reports_a_failed_call(port: int) -> None:
    client = subprocess.run(
        [sys.executable, "-m", "examples.rpc", "--port", str(port), "--call", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert (client.returncode, client.stderr) == (1, "error: KeyError: 'nope'\n")
