"""``python -m netloop.asgi``: started as an operator would, with its flags, lifespan, signals and workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from loopback import TIMEOUT, wait_until

pytest.importorskip("httptools")
httpx = pytest.importorskip("httpx")

from netloop.asgi._cli import binds_from, build_parser, config_from  # noqa: E402
from netloop.proxy_protocol import encode_v1  # noqa: E402

pytestmark = pytest.mark.timeout(60)

TESTS = Path(__file__).parent


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]), **extra}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """The server process; its stdout (the test app's prints) and stderr (the logs) are collected as lines."""

    def __init__(self, argv: list[str], **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "netloop.asgi", *argv],
            env=_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(s,), daemon=True) for s in self._streams()]
        for reader in self.readers:
            reader.start()

    def _streams(self) -> list[object]:
        return [self.process.stdout, self.process.stderr]

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        for reader in self.readers:
            reader.join(TIMEOUT)
        return code


@contextmanager
def serve(argv: list[str], **env: str) -> Iterator[Server]:
    server = Server(argv, **env)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.process.wait(timeout=30)


def test_serves_with_lifespan_and_stops_on_sigterm() -> None:
    port = _free_port()
    with serve(["asgi_apps:app", "--port", str(port)]) as server:
        wait_until(lambda: server.logged("startup complete"), what="the app's startup")
        with httpx.Client() as client:
            assert client.get(f"http://127.0.0.1:{port}/state").json() is True  # the lifespan's state
            assert client.get(f"http://127.0.0.1:{port}/", params={"x": "1"}).text == "hello"
        wait_until(lambda: server.logged('"GET /?x=1 HTTP/1.1" 200'), what="the access log line")
        assert server.stop() == 0
        assert server.logged("shutdown complete")


def test_no_access_log_and_root_path() -> None:
    port = _free_port()
    with serve(["asgi_apps:app", "--port", str(port), "--no-access-log", "--root-path", "/mounted"]) as server:
        wait_until(lambda: server.logged("startup complete"), what="the app's startup")
        with httpx.Client() as client:
            scope = client.get(f"http://127.0.0.1:{port}/scope").json()
        assert server.stop() == 0
    assert scope["root_path"] == "/mounted" and scope["path"] == "/mounted/scope"
    assert not server.logged('HTTP/1.1" 200')


def test_a_failed_startup_exits_with_status_3() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netloop.asgi", "asgi_apps:app", "--port", str(_free_port())],
        env=_env(ASGI_TEST_STARTUP_FAILS="1"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 3, done.stderr
    assert "no database" in done.stderr


def test_a_bad_target_is_a_bad_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netloop.asgi", "asgi_apps:missing"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "has no attribute 'missing'" in done.stderr


def test_unix_socket_and_proxy_protocol_gives_the_client() -> None:
    port = _free_port()
    argv = ["asgi_apps:app", "--port", str(port), "--proxy-protocol", "v1", "--no-access-log"]
    with serve(argv) as server:
        wait_until(lambda: server.logged("startup complete"), what="the app's startup")
        header = encode_v1(("192.0.2.9", 4242), ("127.0.0.1", port))
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(header + b"GET /scope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert server.stop() == 0
    assert b'"client": ["192.0.2.9", 4242]' in data


def test_uds(tmp_path: Path) -> None:
    path = tmp_path / "asgi.sock"
    with serve(["asgi_apps:app", "--uds", str(path), "--no-access-log"]) as server:
        wait_until(lambda: server.logged("startup complete"), what="the app's startup")
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            assert client.get("http://local/").text == "hello"
        assert server.stop() == 0


def test_tls(tmp_path: Path) -> None:
    tls_certs = pytest.importorskip("tls_certs")
    issued = tls_certs.Authority(tmp_path).issue("localhost", hosts=["127.0.0.1"])
    port = _free_port()
    argv = ["asgi_apps:app", "--port", str(port), "--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]
    with serve([*argv, "--no-access-log"]) as server:
        wait_until(lambda: server.logged("startup complete"), what="the app's startup")
        with httpx.Client(verify=False) as client:
            scope = client.get(f"https://127.0.0.1:{port}/scope").json()
        assert server.stop() == 0
    assert scope["scheme"] == "https"


def test_workers_serve_and_restart_on_sighup() -> None:
    port = _free_port()
    argv = ["asgi_apps:app", "--port", str(port), "--workers", "2", "--no-access-log", "--graceful-timeout", "1"]
    with serve(argv) as server:
        wait_until(lambda: sum(line.count("startup complete") for line in server.lines) >= 2, what="2 workers")

        def pid() -> str:
            with httpx.Client() as client:  # a new connection each time: the workers share the port
                return client.get(f"http://127.0.0.1:{port}/pid").text

        before = {pid() for _ in range(4)}
        assert str(server.process.pid) not in before  # the parent serves nothing itself
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: server.logged("restart done"), what="the restart")
        after = {pid() for _ in range(4)}
        assert not before & after  # served by the new workers
        assert server.stop() == 0


def test_flags_reach_the_config_and_the_binds() -> None:
    args = build_parser().parse_args(
        [
            "m:app",
            "--host",
            "::1",
            "--port",
            "9001",
            "--timeout-keep-alive",
            "2.5",
            "--limit-concurrency",
            "7",
            "--limit-request-body",
            "100",
            "--lifespan",
            "off",
            "--ws",
            "none",
        ]
    )
    config = config_from(args)
    assert binds_from(args) == ["tcp6://[::1]:9001"]
    assert (config.timeout_keep_alive, config.limit_concurrency, config.limit_request_body) == (2.5, 7, 100)
    assert (config.lifespan, config.ws, config.access_log) == ("off", False, True)


def test_import_netloop_does_not_import_the_asgi_server() -> None:
    code = (
        "import sys, netloop\n"
        "print([m for m in sys.modules if m.startswith('netloop.asgi') or m.split('.')[0] in ('httptools', 'wsproto')])"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_netloop_run_is_refused_with_the_lifespan_on() -> None:
    from asgi_apps import app

    import netloop
    from netloop.asgi import ASGIHandler

    with pytest.raises(RuntimeError, match=r"netloop\.start"):
        netloop.run(ASGIHandler(app), "tcp://127.0.0.1:0")


SIGNAL_TO_A_LOOP_THREAD = """
import signal, sys, threading
import netloop.asgi
from asgi_apps import app

def signal_a_loop_thread():
    found = threading.Event()
    while not found.wait(0.005):
        loops = [t for t in threading.enumerate() if t.name.startswith("netloop-loop") and t.ident is not None]
        if loops:
            found.set()
    signal.pthread_kill(loops[0].ident, signal.SIGTERM)  # the kernel may hand a process's signal to any thread

threading.Thread(target=signal_a_loop_thread, daemon=True).start()
netloop.asgi.serve(app, "tcp://127.0.0.1:0", config=netloop.asgi.Config(lifespan="off"), drain_timeout=0.5)
print("stopped", flush=True)
"""


def test_a_sigterm_delivered_to_a_loop_thread_stops_the_server() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_TO_A_LOOP_THREAD], env=_env(), capture_output=True, text=True, timeout=15
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"


def test_several_loops_serve_and_stop() -> None:
    port = _free_port()
    with serve(["asgi_apps:app", "--port", str(port), "--loops", "2", "--no-access-log"]) as server:
        wait_until(lambda: server.logged("startup complete"), what="the app's startup")
        clients = [httpx.Client() for _ in range(6)]  # connections spread over both loops
        try:
            answers = [client.get(f"http://127.0.0.1:{port}/state").json() for client in clients]
        finally:
            for client in clients:
                client.close()
        assert server.stop() == 0
        assert server.logged("shutdown complete")
    assert answers == [True] * 6
