"""Every Python snippet in README.md and docs/ runs as written.

Each fenced ``python`` block is saved to a file of its own in a temporary directory and run there with this checkout
on the path. A snippet that serves (``netloop.run(..., "tcp://HOST:PORT", ...)``) is run until it accepts a
connection on that port (a UDP one until it answers a datagram), then stopped with SIGTERM, which must end it
cleanly; any other snippet must exit 0 by itself. Either way nothing may be written to stderr but log lines. The
files a snippet names as its own setup (``cert.pem`` and ``key.pem`` for a TLS server, ``ca.pem`` for a client) are
made in that directory first.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.tls_certs import Authority

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)
SERVES = re.compile(r"netloop\.run\([^\n]*?\"(tcp|udp)://([^:\"]+|\[[^\]]+\]):(\d+)\"")


def _snippets() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            code = textwrap.dedent(match.group(2)) if match.group(1) else match.group(2)  # a fence inside a list
            found.append((f"{path.relative_to(ROOT)}:{line}", code))
    return found


SNIPPETS = _snippets()


def test_the_docs_have_snippets() -> None:
    assert len(SNIPPETS) >= 10, [name for name, _ in SNIPPETS]


def _connectable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _answers_datagrams(host: str, port: int) -> bool:
    """A UDP server is serving once a datagram sent to it gets one back (the documented UDP servers answer)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(b"ping", (host, port))
            sock.recv(65536)
            return True
        except OSError:
            return False


def _write_setup_files(tmp: Path, code: str) -> None:
    if "cert.pem" in code or "ca.pem" in code:
        ca = Authority(tmp / "pki")
        leaf = ca.issue("localhost", hosts=["localhost", "127.0.0.1"])
        (tmp / "cert.pem").write_bytes(leaf.cert.read_bytes())
        (tmp / "key.pem").write_bytes(leaf.key.read_bytes())
        (tmp / "ca.pem").write_bytes(ca.cert.read_bytes())


def _stderr_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Traceback" in line or "Error" in line or "Warning" in line]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[name for name, _ in SNIPPETS])
def test_snippet_runs_as_written(where: str, code: str, tmp_path: Path) -> None:
    _write_setup_files(tmp_path, code)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    serves = SERVES.search(code)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if serves is not None:
            kind, host = serves.group(1), serves.group(2).strip("[]")
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            port = int(serves.group(3))
            ready = _connectable if kind == "tcp" else _answers_datagrams
            deadline = time.monotonic() + 20
            while not ready(host, port):
                assert proc.poll() is None, f"{where} exited before serving: {proc.communicate()}"
                assert time.monotonic() < deadline, f"{where} never accepted a connection on {host}:{port}"
                time.sleep(0.05)  # polling a port another process opens: no event to wait on
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, f"{where} exited {proc.returncode}:\n{out}\n{err}"
    assert not _stderr_problems(err), f"{where} wrote to stderr:\n{err}"
