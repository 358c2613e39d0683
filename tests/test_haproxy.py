"""Real HAProxy in front of two netloop servers: PROXY protocol v1 and v2, and failover on a health check."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from loopback import TIMEOUT, serving, wait_until

import netloop

HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
)
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (Debian's haproxy package)"),
]


class Who(netloop.EventHandler):
    """Answers each request line with its name and the client address it sees."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.peek()
        if not data.endswith(b"\n"):
            return None
        conn.discard()
        host, port = conn.remote_addr[:2]
        info = conn.proxy_info
        version = info.version if info is not None else 0
        conn.write(f"{self.name} {host} {port} v{version}\n".encode())
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@contextmanager
def haproxy(tmp_path: Path, servers: list[tuple[str, int, str]]) -> Iterator[tuple[int, Path]]:
    """HAProxy on a free port balancing over ``servers`` ((name, port, send-proxy option)); yields (port, stats)."""
    port = _free_port()
    stats = tmp_path / "haproxy.sock"
    lines = "\n".join(
        f"    server {name} 127.0.0.1:{p} {send} check inter 100 fall 2 rise 1" for name, p, send in servers
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""global
    stats socket {stats} level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    retries 0
frontend front
    bind 127.0.0.1:{port}
    default_backend back
backend back
    balance roundrobin
{lines}
"""
    )
    assert HAPROXY is not None
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _listening(port) and stats.exists(), what="HAProxy to listen")
        yield port, stats
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def ask(port: int) -> tuple[str, str, int, int, str]:
    """One request through HAProxy: (server name, host it saw, port it saw, our real port, version)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        ours = sock.getsockname()[1]
        sock.sendall(b"hello\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(100)
            if not chunk:
                raise ConnectionError(f"closed after {data!r}")
            data += chunk
    name, host, seen, version = data.decode().split()
    return name, host, int(seen), ours, version


def server_states(stats: Path) -> dict[str, str]:
    """HAProxy's view of each backend server (UP, DOWN, ...), from its stats socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(str(stats))
        except OSError:
            return {}  # not ready yet: no state known
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
    return {row[1]: row[17] for row in rows if row[0] == "back" and row[1] not in ("BACKEND", "FRONTEND")}


@pytest.mark.parametrize(("mode", "send"), [("v1", "send-proxy"), ("v2", "send-proxy-v2"), ("auto", "send-proxy-v2")])
def test_each_server_sees_the_true_client_address(tmp_path: Path, mode: str, send: str) -> None:
    with (
        serving(Who("a"), "tcp://127.0.0.1:0", proxy_protocol=mode) as a,
        serving(Who("b"), "tcp://127.0.0.1:0", proxy_protocol=mode) as b,
    ):
        servers = [("a", _port(a.addrs[0]), send), ("b", _port(b.addrs[0]), send)]
        with haproxy(tmp_path, servers) as (port, stats):
            wait_until(lambda: set(server_states(stats).values()) == {"UP"}, what="both servers UP")
            names = set()
            for _ in range(6):
                name, host, seen, ours, version = ask(port)
                names.add(name)
                assert (host, seen) == ("127.0.0.1", ours)  # the client's own port: not HAProxy's connection
                assert version == ("v1" if send == "send-proxy" else "v2")
            assert names == {"a", "b"}


def test_failover_after_the_health_check_loses_no_request(tmp_path: Path) -> None:
    with (
        serving(Who("a"), "tcp://127.0.0.1:0", proxy_protocol="v2") as a,
        serving(Who("b"), "tcp://127.0.0.1:0", proxy_protocol="v2") as b,
    ):
        servers = [("a", _port(a.addrs[0]), "send-proxy-v2"), ("b", _port(b.addrs[0]), "send-proxy-v2")]
        with haproxy(tmp_path, servers) as (port, stats):
            wait_until(lambda: set(server_states(stats).values()) == {"UP"}, what="both servers UP")
            assert {ask(port)[0] for _ in range(4)} == {"a", "b"}
            a.stop(timeout=TIMEOUT)
            assert a.wait(TIMEOUT)
            wait_until(lambda: server_states(stats).get("a") == "DOWN", what="HAProxy to mark a DOWN")
            answers = [ask(port) for _ in range(50)]  # every one answered, all by b
            assert {name for name, *_ in answers} == {"b"}
            assert all(host == "127.0.0.1" and seen == ours for _, host, seen, ours, _ in answers)
