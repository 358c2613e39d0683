"""Deployment: zero-downtime restart (SIGHUP, Engine.restart), drain_timeout, worker heartbeat, foreign listeners."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import TIMEOUT, connect, recv_exact, recv_until_closed, serving, wait_until
from wrk_restart import LineLog, restart_under_wrk

import netloop

pytestmark = pytest.mark.timeout(90)

# A tiny keep-alive HTTP/1.1 responder: answers every GET with its VERSION; once on_shutdown has run it answers
# the next request on each connection with "Connection: close" and closes it, so that no request is ever cut.
APP = """
import netloop

VERSION = b"{version}"


class App(netloop.EventHandler):
    draining = False

    def on_shutdown(self, engine):
        App.draining = True

    def on_traffic(self, conn):
        data = conn.peek()
        count = data.count(b"\\r\\n\\r\\n")
        if not count:
            return None
        conn.discard(data.rindex(b"\\r\\n\\r\\n") + 4)
        head = b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n" % len(VERSION)
        if App.draining:
            conn.write((head + b"Connection: close\\r\\n\\r\\n" + VERSION) * count)
            return netloop.Action.CLOSE
        conn.write((head + b"\\r\\n" + VERSION) * count)
        return None
"""


def write_app(directory: Path, name: str, version: str) -> None:
    (directory / f"{name}.py").write_text(APP.format(version=version))


def get(url: str) -> bytes:
    """One request on a new connection: the body."""
    with connect(url) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        return body + recv_exact(sock, length - len(body))


@contextlib.contextmanager
def app_path(tmp_path: Path) -> Iterator[None]:
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))


class KeepAliveLoad(threading.Thread):
    """Keep-alive clients sending request after request, counting answers and failures (a cut answer)."""

    def __init__(self, url: str, clients: int = 4) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.clients = clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: dict[bytes, int] = {}
        self.failures: list[str] = []

    def run(self) -> None:
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _client(self) -> None:
        sock: socket.socket | None = None
        buf = b""
        while not self.stop.is_set():
            try:
                if sock is None:
                    sock = connect(self.url)
                    buf = b""
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed with a request outstanding")
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
                while len(rest) < length:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed inside an answer")
                    rest += chunk
                body, buf = rest[:length], rest[length:]
                with self.lock:
                    self.answers[body] = self.answers.get(body, 0) + 1
                if b"Connection: close" in head:
                    sock.close()
                    sock = None
            except OSError as exc:
                with self.lock:
                    self.failures.append(repr(exc))
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def count(self, body: bytes) -> int:
        with self.lock:
            return self.answers.get(body, 0)


@pytest.mark.parametrize("balancing", ["parent"])
def test_restart_loads_new_code_without_a_failed_request(tmp_path: Path, balancing: str) -> None:
    # PARENT mode only: with reuse-port the old workers close listeners of their own, and a connection can be reset
    # on the way (docs/deploy.md says when); the parent's one listener never closes.
    write_app(tmp_path, "restart_app_a", "one")
    with (
        app_path(tmp_path),
        serving(
            "restart_app_a:App",  # type: ignore[arg-type]
            "tcp://127.0.0.1:0",
            workers=2,
            worker_balancing=balancing,
            drain_timeout=2.0,
        ) as engine,
    ):
        url = engine.addrs[0]
        old = {w["pid"] for w in engine.stats()["workers"]}
        assert get(url) == b"one"
        load = KeepAliveLoad(url)
        load.start()
        wait_until(lambda: load.count(b"one") > 50, what="load on the old workers")
        write_app(tmp_path, "restart_app_a", "two!")
        engine.restart()
        wait_until(lambda: load.count(b"two!") > 50, what="the new workers to serve the new code")
        wait_until(lambda: not old & {w["pid"] for w in engine.stats()["workers"]}, what="old workers retired")
        load.stop.set()
        load.join(TIMEOUT)
        assert get(url) == b"two!"
    assert load.failures == []


@pytest.mark.slow
@pytest.mark.parametrize("balancing", ["parent", "reuse-port"])
def test_restarts_under_load_with_default_options_fail_no_request(tmp_path: Path, balancing: str) -> None:
    # What `netloop.serve --help` promises for SIGHUP, with no drain option given: a restart's old workers serve
    # on while the handler closes their connections at a message boundary. In PARENT mode no request fails; with
    # reuse-port (the default) an old worker's own listener closes, and a connection can be reset on the way
    # (docs/deploy.md): never an answer cut short.
    write_app(tmp_path, "restart_app_d", "v0")
    with (
        app_path(tmp_path),
        serving("restart_app_d:App", "tcp://127.0.0.1:0", workers=2, worker_balancing=balancing) as engine,  # type: ignore[arg-type]
    ):
        url = engine.addrs[0]
        load = KeepAliveLoad(url, clients=6)
        load.start()
        try:
            wait_until(lambda: load.count(b"v0") > 20, what="load on the first workers")
            for version in range(1, 6):
                old = {w["pid"] for w in engine.stats()["workers"]}
                body = f"v{version}".encode()
                write_app(tmp_path, "restart_app_d", body.decode())
                engine.restart()
                wait_until(lambda body=body: load.count(body) > 20, what=f"restart {version} serving")  # type: ignore[misc]
                wait_until(lambda old=old: not old & {w["pid"] for w in engine.stats()["workers"]}, what="retired")  # type: ignore[misc]
        finally:
            load.stop.set()
            load.join(TIMEOUT)
    if balancing == "parent":
        assert load.failures == []
    else:
        # An old worker's own listener closes: a connection the kernel gives it in that instant, or one it had
        # queued, can be reset (docs/deploy.md). What must never happen is an answer cut short.
        assert all("reset" in f.lower() or "refused" in f.lower() for f in load.failures), load.failures


def test_workers_leave_the_processes_other_listeners_to_it() -> None:
    # examples/metrics.py: a second engine in the workers' parent serves its own port. The workers a restart forks
    # must not hold that listener (nor that engine's loop): once the parent closes it, the port is free.
    with serving(Echo(), "tcp://127.0.0.1:0", workers=2) as app:
        other = netloop.start(Echo(), "tcp://127.0.0.1:0")
        try:
            port = int(other.addrs[0].rsplit(":", 1)[1])
            old = {w["pid"] for w in app.stats()["workers"]}
            app.restart()
            wait_until(lambda: not old & {w["pid"] for w in app.stats()["workers"]}, what="the new workers")
            with connect(other.addrs[0]) as sock:
                sock.sendall(b"ping")
                assert recv_exact(sock, 4) == b"ping"
        finally:
            other.stop(timeout=TIMEOUT)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # EADDRINUSE while a worker holds the old listener
            probe.listen()
        with connect(app.addrs[0]) as sock:
            sock.sendall(b"still")
            assert recv_exact(sock, 5) == b"still"


def test_a_restart_that_fails_to_boot_leaves_the_old_workers_serving(tmp_path: Path) -> None:
    write_app(tmp_path, "restart_app_b", "good")
    with (
        app_path(tmp_path),
        serving(
            "restart_app_b:App",  # type: ignore[arg-type]
            "tcp://127.0.0.1:0",
            workers=2,
            worker_balancing="parent",
        ) as engine,
    ):
        url = engine.addrs[0]
        old = [w["pid"] for w in engine.stats()["workers"]]
        (tmp_path / "restart_app_b.py").write_text("raise RuntimeError('this version is broken')\n")
        engine.restart()
        # The broken generation dies while starting; the old one never stops serving.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert get(url) == b"good"
        assert [w["pid"] for w in engine.stats()["workers"]] == old


def test_sighup_restarts_under_wrk_with_no_error(tmp_path: Path) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed")
    if not Path("/proc/net/tcp").exists():
        pytest.skip("counts wrk's connections in /proc/net/tcp (Linux)")
    write_app(tmp_path, "restart_app_c", "first")
    script = textwrap.dedent(
        """
        import logging
        import sys
        import netloop

        logging.basicConfig(level=logging.INFO)
        netloop.run("restart_app_c:App", "tcp://127.0.0.1:" + sys.argv[1], workers=2, worker_balancing="parent",
                    drain_timeout=2.0)
        """
    )
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    server = subprocess.Popen([sys.executable, "-c", script, str(port)], env=env, stderr=subprocess.PIPE, text=True)
    url = f"tcp://127.0.0.1:{port}"
    restart_under_wrk(wrk, server, port, lambda: _answers(url), lambda: write_app(tmp_path, "restart_app_c", "second"))


def _answers(url: str) -> bytes | None:
    try:
        return get(url)
    except OSError:
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Echo(netloop.EventHandler):
    def on_traffic(self, conn: netloop.Conn) -> None:
        conn.write(conn.next())


def test_a_frozen_worker_gets_no_connections_and_is_replaced() -> None:
    with serving(Echo(), "tcp://127.0.0.1:0", workers=2, worker_balancing="parent", heartbeat_timeout=4.0) as engine:
        url = engine.addrs[0]
        frozen = engine.stats()["workers"][0]["pid"]
        os.kill(frozen, signal.SIGSTOP)
        try:
            wait_until(lambda: engine.stats()["workers"][0]["responsive"] == 0, what="the parent to notice")
            for i in range(20):  # every client is answered, by the worker that is alive
                with connect(url, timeout=2.0) as sock:
                    sock.sendall(b"%d" % i)
                    assert recv_exact(sock, len(b"%d" % i)) == b"%d" % i
            wait_until(lambda: engine.stats()["workers"][0]["pid"] not in (0, frozen), what="a replacement")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGKILL)
        wait_until(lambda: engine.stats()["workers"][0]["responsive"] == 1, what="the replacement's heartbeat")
        with connect(url) as sock:
            sock.sendall(b"again")
            assert recv_exact(sock, 5) == b"again"


def test_drain_timeout_lets_the_handler_close_at_a_message_boundary() -> None:
    handler: Any = _load_app("drain")
    engine = netloop.start(handler, "tcp://127.0.0.1:0", drain_timeout=3.0)
    load = KeepAliveLoad(engine.addrs[0], clients=3)
    load.start()
    wait_until(lambda: load.count(b"drain") > 30, what="load")
    engine.stop(timeout=TIMEOUT)
    assert engine.wait(TIMEOUT)
    load.stop.set()
    load.join(TIMEOUT)
    cut = [f for f in load.failures if "outstanding" in f or "inside" in f]
    assert cut == []  # connection refused after the stop is expected; a cut request is not


def test_a_connection_is_served_through_the_drain_until_its_handler_closes_it() -> None:
    # With drain_timeout the loops serve on after on_shutdown, until each handler closes its connections: A and B,
    # idle when the stop began, both get their late request answered (a goodbye) and B is still served after A's
    # close. (Without it, the loop closes every connection as soon as the stop reaches it.)
    shutting = threading.Event()

    class Drain(netloop.EventHandler):
        def on_shutdown(self, engine: netloop.Engine) -> None:
            shutting.set()

        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            data = conn.next()
            if shutting.is_set():
                conn.write(b"bye:" + data)
                return netloop.Action.CLOSE  # the handler ends it at a message boundary
            conn.write(data)
            return None

    engine = netloop.start(Drain(), "tcp://127.0.0.1:0", drain_timeout=TIMEOUT)
    stopper = threading.Thread(target=engine.stop, kwargs={"timeout": TIMEOUT})
    try:
        with connect(engine.addrs[0]) as a, connect(engine.addrs[0]) as b:
            for sock in (a, b):
                sock.sendall(b"hi")
                assert recv_exact(sock, 2) == b"hi"
            stopper.start()
            assert shutting.wait(TIMEOUT)
            a.sendall(b"late")
            assert recv_until_closed(a) == b"bye:late"
            a.close()  # our FIN ends the server's lingering close
            wait_until(lambda: engine.count_connections() == 1, what="A's close, B still open")
            b.sendall(b"later")
            assert recv_until_closed(b) == b"bye:later"
        stopper.join(TIMEOUT)
        assert engine.wait(TIMEOUT)  # the last connection closed: the drain ends before its deadline
    finally:
        engine.stop(timeout=TIMEOUT)


def test_an_idle_client_whose_connection_the_handler_closed_holds_the_drain_no_longer() -> None:
    # The handler closes its idle connection when the stop begins (an HTTP server's idle keep-alive); the client
    # keeps its end open, as a browser does. Its connection took our FIN and went quiet: the stop ends then, not
    # when drain_timeout (TIMEOUT here) passes.
    class CloseIdle(netloop.EventHandler):
        def __init__(self) -> None:
            self.conns: list[netloop.Conn] = []

        def on_open(self, conn: netloop.Conn) -> None:
            self.conns.append(conn)

        def on_traffic(self, conn: netloop.Conn) -> None:
            conn.write(conn.next())

        def on_shutdown(self, engine: netloop.Engine) -> None:
            for conn in self.conns:
                conn.close()

    engine = netloop.start(CloseIdle(), "tcp://127.0.0.1:0", drain_timeout=TIMEOUT)
    try:
        with connect(engine.addrs[0]) as sock:
            sock.sendall(b"hi")
            assert recv_exact(sock, 2) == b"hi"
            began = time.monotonic()
            engine.stop(timeout=TIMEOUT)
            took = time.monotonic() - began
            assert engine.stopped
            assert took < TIMEOUT / 4, took
            assert recv_until_closed(sock) == b""  # our FIN came
    finally:
        engine.stop(timeout=TIMEOUT)


def _load_app(version: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(APP.format(version=version), namespace)
    return namespace["App"]()


def test_a_foreign_reuse_port_listener_is_refused() -> None:
    foreign = socket.socket()
    foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    foreign.bind(("127.0.0.1", 0))
    foreign.listen()
    port = foreign.getsockname()[1]
    try:
        for options in ({"reuse_port": True, "num_event_loop": 2}, {"workers": 2}):
            with pytest.raises(OSError, match=f"127.0.0.1:{port}: Address already in use .*SO_REUSEPORT"):
                netloop.start(Echo(), f"tcp://127.0.0.1:{port}", **options)
    finally:
        foreign.close()
    with serving(Echo(), f"tcp://127.0.0.1:{port}", reuse_port=True, num_event_loop=2) as engine:
        sock = connect(engine.addrs[0])  # the port is free again: served
        sock.sendall(b"ok")
        assert recv_exact(sock, 2) == b"ok"
        sock.close()


def test_a_frozen_worker_is_replaced_in_reuse_port_mode() -> None:
    # The kernel balances here, so a frozen worker's listener keeps its share until the worker is killed at
    # heartbeat_timeout; then its replacement binds a listener of its own and every client is answered.
    with serving(Echo(), "tcp://127.0.0.1:0", workers=2, heartbeat_timeout=1.5) as engine:
        url = engine.addrs[0]
        frozen = engine.stats()["workers"][1]["pid"]
        os.kill(frozen, signal.SIGSTOP)
        try:
            wait_until(lambda: engine.stats()["workers"][1]["pid"] not in (0, frozen), what="a replacement")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGKILL)
        wait_until(lambda: engine.stats()["workers"][1]["responsive"] == 1, what="the replacement's heartbeat")
        for i in range(20):
            with connect(url, timeout=2.0) as sock:
                sock.sendall(b"%d" % i)
                assert recv_exact(sock, len(b"%d" % i)) == b"%d" % i


def test_sighup_to_a_single_process_engine_is_logged_and_ignored() -> None:
    script = textwrap.dedent(
        """
        import logging
        import netloop

        class Echo(netloop.EventHandler):
            def on_boot(self, engine):
                print(engine.addrs[0], flush=True)

            def on_traffic(self, conn):
                conn.write(conn.next())

        logging.basicConfig(level=logging.INFO)
        netloop.run(Echo(), "tcp://127.0.0.1:0")
        """
    )
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = LineLog(server)
    log.start()
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        server.send_signal(signal.SIGHUP)
        wait_until(lambda: any("SIGHUP ignored" in line for _, line in log.lines), what="the warning")
        with connect(url) as sock:  # still serving
            sock.sendall(b"alive")
            assert recv_exact(sock, 5) == b"alive"
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
