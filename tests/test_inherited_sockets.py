"""Inherited listening sockets: fd://N and systemd:// (socket activation), alone and with workers=N."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
from loopback import recv_exact

import netloop

TIMEOUT = 10.0

SERVER = """
import os, sys
import netloop
class Echo(netloop.EventHandler):
    def on_boot(self, engine):
        # What a child of this process would inherit, and where we listen.
        print(os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID"), *engine.addrs, flush=True)
    def on_traffic(self, conn):
        data = conn.next()
        conn.write(b"%d:" % os.getpid() + data)
        if data == b"stop":
            return netloop.Action.SHUTDOWN
options = {"workers": int(sys.argv[2])} if len(sys.argv) > 2 else {}
netloop.run(Echo(), sys.argv[1], **options)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ask(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        head = b""
        while b":" not in head:
            chunk = sock.recv(64)
            assert chunk, "closed before answering"
            head += chunk
        _pid, _, rest = head.partition(b":")
        return rest + recv_exact(sock, len(data) - len(rest))


def test_fd_address_serves_a_socket_the_parent_made() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = listener.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER), f"fd://{fd}"], pass_fds=[fd], stdout=subprocess.PIPE, text=True
    )
    listener.close()  # the child has it now
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[2] == f"tcp://127.0.0.1:{port}"
        assert ask(port, b"hello") == b"hello"
        ask(port, b"stop")
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
@pytest.mark.parametrize("workers", [0, 2])
def test_systemd_socket_activation(workers: int) -> None:
    port = free_port()
    command = [
        "systemd-socket-activate",
        "-l",
        f"127.0.0.1:{port}",
        "--fdname=web",
        sys.executable,
        "-c",
        textwrap.dedent(SERVER),
        "systemd://web",
        *([str(workers)] if workers else []),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "Listening on" in proc.stderr.readline()  # its own socket is ready
        # systemd-socket-activate starts the server on the first connection.
        assert ask(port, b"first") == b"first"
        assert proc.stdout is not None
        listen_fds, listen_pid, addr = proc.stdout.readline().split()[:3]
        assert (listen_fds, listen_pid) == ("None", "None")  # read once and cleared: children don't take them
        assert addr == f"tcp://127.0.0.1:{port}"
        for i in range(8):
            assert ask(port, b"again %d" % i) == b"again %d" % i
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)


def test_bad_inherited_addresses_name_themselves() -> None:
    with pytest.raises(netloop.AddressError, match="fd://x"):
        netloop.start(netloop.EventHandler(), "fd://x")
    r, w = os.pipe()
    try:
        with pytest.raises(netloop.AddressError, match=f"fd://{r}"):
            netloop.start(netloop.EventHandler(), f"fd://{r}")
    finally:
        os.close(r)
        os.close(w)
    os.environ.pop("LISTEN_FDS", None)
    with pytest.raises(netloop.AddressError, match="systemd://"):
        netloop.start(netloop.EventHandler(), "systemd://")
