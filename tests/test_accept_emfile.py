"""accept() failing with EMFILE backs off without spinning, and resumes once descriptors free up."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from loopback import ECHO_SCRIPT, connect

SERVER = (
    textwrap.dedent(
        """
        import logging, resource, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, hard))
        """
    )
    + ECHO_SCRIPT
)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the CPU time")
def test_emfile_backs_off_and_recovers() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = proc.stdout.readline().strip()
        paused = threading.Event()

        def watch_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "pausing accepts" in line:
                    paused.set()

        threading.Thread(target=watch_stderr, daemon=True).start()
        for _ in range(60):
            sock = connect(url)
            sock.sendall(b"x")
            clients.append(sock)
        assert paused.wait(10), "the server never hit EMFILE"

        # While out of descriptors the server must not spin on the pending connections.
        before = _cpu_seconds(proc.pid)
        window = threading.Event()
        window.wait(0.5)
        spent = _cpu_seconds(proc.pid) - before
        assert spent < 0.2, f"server burned {spent:.2f}s of CPU in 0.5s while out of descriptors"

        served = _answered(clients, timeout=2.0)
        assert 0 < len(served) < len(clients)
        for sock in served:
            sock.close()
        rest = [s for s in clients if s not in served]
        assert len(_answered(rest, timeout=10.0)) == len(rest), "pending connections were not served"
    finally:
        for sock in clients:
            sock.close()
        proc.terminate()
        proc.wait(10)


def _answered(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Sockets that got their 1-byte echo within ``timeout`` (stops early once all have)."""
    pending = set(socks)
    got = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
        for sock in ready:
            assert sock.recv(1) == b"x"
            pending.discard(sock)
            got.append(sock)
    return got
