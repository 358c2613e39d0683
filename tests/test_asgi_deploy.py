"""``python -m netloop.asgi`` deployed: a SIGHUP restart under wrk, behind HAProxy, and its counters scraped."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopback import TIMEOUT, connect, recv_exact, wait_until
from wrk_restart import restart_under_wrk

pytest.importorskip("httptools")

import asgi_apps

import netloop
from netloop.asgi import ASGIHandler, Config

pytestmark = pytest.mark.timeout(90)

TESTS = Path(__file__).parent

# An app that answers every request with its VERSION: a restart is seen by what the answers say.
VERSIONED_APP = """
VERSION = b"{version}"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}})
    await send({{"type": "http.response.body", "body": VERSION}})
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, path: str = "/") -> tuple[bytes, bytes]:
    """One request on a new connection: the head and the body."""
    with connect(url) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        return head, body + recv_exact(sock, length - len(body))


def _answers(url: str) -> bytes | None:
    try:
        return _get(url)[1]
    except OSError:
        return None


def test_sighup_restarts_the_asgi_server_under_wrk_with_no_error(tmp_path: Path) -> None:
    # PARENT mode: the parent's one listener never closes (docs/deploy.md), so no connection meets a closing one.
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed")
    if not Path("/proc/net/tcp").exists():
        pytest.skip("counts wrk's connections in /proc/net/tcp (Linux)")
    (tmp_path / "versioned_app.py").write_text(VERSIONED_APP.format(version="first"))
    port = _free_port()
    argv = ["versioned_app:app", "--port", str(port), "--workers", "2", "--worker-balancing", "parent"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS), *sys.path])}
    server = subprocess.Popen(
        [sys.executable, "-m", "netloop.asgi", *argv, "--graceful-timeout", "2", "--no-access-log"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"tcp://127.0.0.1:{port}"
    restart_under_wrk(
        wrk,
        server,
        port,
        lambda: _answers(url),
        lambda: (tmp_path / "versioned_app.py").write_text(VERSIONED_APP.format(version="second")),
    )


def test_an_idle_keep_alive_client_holds_a_stop_only_briefly() -> None:
    # A client that keeps its connection after one answer (a browser): the stop closes it once it has been idle
    # STOP_IDLE_S, and ends then, not when --graceful-timeout (10 s here) passes.
    port = _free_port()
    argv = ["asgi_apps:app", "--port", str(port), "--graceful-timeout", "10", "--lifespan", "off", "--no-access-log"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    server = subprocess.Popen([sys.executable, "-m", "netloop.asgi", *argv], env=env, stderr=subprocess.PIPE)
    try:
        url = f"tcp://127.0.0.1:{port}"
        wait_until(lambda: _answers(url) is not None, what="the server to start")
        with connect(url) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            began = time.monotonic()
            server.send_signal(signal.SIGTERM)
            assert sock.recv(4096) == b""  # the server's FIN, the client's end still open
            assert server.wait(timeout=TIMEOUT) == 0
            took = time.monotonic() - began
    finally:
        server.kill()
        server.wait()
    assert took < 2.5, took


METRICS_SCRIPT = """
import sys
import netloop.asgi
from examples import metrics

def started(engine):
    print(engine.addrs[0], metrics.serve_metrics(engine, "tcp://127.0.0.1:0").addrs[0], flush=True)

workers = int(sys.argv[1]) or None
netloop.asgi.serve("asgi_apps:app", "tcp://127.0.0.1:0", config=netloop.asgi.Config(lifespan="off", access_log=False),
                   workers=workers, worker_balancing="parent", on_started=started)
"""


def _scrape(url: str) -> dict[str, float]:
    """The metrics page's samples, summed over their labels but ``cause``: ``name`` or ``name{cause}``."""
    with connect(url) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    samples: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line:
            continue
        series, value = line.rsplit(" ", 1)
        name = series.split("{", 1)[0]
        cause = re.search(r'cause="(\w+)"', series)
        key = f"{name}{{{cause.group(1)}}}" if cause else name
        samples[key] = samples.get(key, 0.0) + float(value)
    return samples


@pytest.mark.parametrize("workers", [0, 2])
def test_stats_count_the_asgi_traffic_and_the_metrics_example_serves_them(workers: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), *sys.path])}
    server = subprocess.Popen(
        [sys.executable, "-c", METRICS_SCRIPT, str(workers)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        app_url, metrics_url = server.stdout.readline().split()
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        sent = received = 0
        for _ in range(3):  # three clients, four requests each, then each closes
            with connect(app_url) as sock:
                for _ in range(4):
                    sock.sendall(request)
                    sent += len(request)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += sock.recv(4096)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
                    body += recv_exact(sock, length - len(body))
                    assert body == b"hello"
                    received += len(head) + 4 + len(body)
        bad = b"NOT HTTP\r\n\r\n"
        with connect(app_url) as sock:  # a request the server refuses (400) and closes
            sock.sendall(bad)
            sent += len(bad)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            assert data.startswith(b"HTTP/1.1 400 ")
            received += len(data)
        wait_until(
            lambda: _scrape(metrics_url).get("netloop_connections_closed_total{peer}") == 3,
            what="the three clients' closes counted",
        )
        samples = _scrape(metrics_url)
        assert samples["netloop_connections_accepted_total"] == 4
        assert samples["netloop_connections_closed_total{handler}"] == 1  # the 400's close
        assert samples["netloop_connections"] == 0
        assert samples["netloop_received_bytes_total"] == sent
        assert samples["netloop_sent_bytes_total"] == received
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=TIMEOUT) == 0


HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
)


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (Debian's haproxy package)")
@pytest.mark.parametrize(("mode", "send"), [("v1", "send-proxy"), ("v2", "send-proxy-v2")])
def test_behind_haproxy_the_scope_names_the_true_client(tmp_path: Path, mode: str, send: str) -> None:
    # HAProxy in HTTP mode in front, as docs/asgi.md sets it up: each connection to the server opens with a PROXY
    # header, and scope["client"] is the address of the client's own socket, not HAProxy's.
    engine = netloop.start(
        ASGIHandler(asgi_apps.app, Config(lifespan="off", access_log=False)),
        "tcp://127.0.0.1:0",
        proxy_protocol=mode,
        drain_timeout=1.0,
    )
    port = _free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:{port}
    default_backend asgi
backend asgi
    server app1 {engine.addrs[0].removeprefix("tcp://")} {send}
"""
    )
    assert HAPROXY is not None
    proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"tcp://127.0.0.1:{port}"
        wait_until(lambda: _answers(url) == b"hello", what="HAProxy to pass a request on")
        for _ in range(3):
            with connect(url) as sock:
                ours = sock.getsockname()
                sock.sendall(b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    data += sock.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
                scope = json.loads(body + recv_exact(sock, length - len(body)))
            assert scope["client"] == [ours[0], ours[1]]
            assert scope["server"][1] == int(engine.addrs[0].rsplit(":", 1)[1])
    finally:
        proxy.terminate()
        proxy.wait(timeout=TIMEOUT)
        engine.stop(timeout=TIMEOUT)


def test_systemd_socket_activation_with_workers() -> None:
    # The unit pair of docs/asgi.md, run by systemd-socket-activate: it listens, passes the socket named "web" and
    # starts the server on the first connection, which is answered.
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed (Debian's systemd package)")
    port = _free_port()
    path = os.pathsep.join([str(TESTS), *sys.path])
    prefix = [activate, "-l", f"127.0.0.1:{port}", "--fdname=web", "-E", f"PYTHONPATH={path}"]
    argv = ["asgi_apps:app", "--bind", "systemd://web", "--workers", "2", "--worker-balancing", "parent"]
    command = [*prefix, sys.executable, "-m", "netloop.asgi", *argv, "--lifespan", "off", "--no-access-log"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _answers(f"tcp://127.0.0.1:{port}") == b"hello", what="the activated server")
        assert _get(f"tcp://127.0.0.1:{port}", "/pid")[1] != str(server.pid).encode()  # a worker answered
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=TIMEOUT)
    assert code == 0
