"""TLS (``tls=``): real clients against netloop's TLS servers, and netloop's TLS client, on loopback.

Certificates are made for this module by ``tls_certs`` (none is checked in). ``openssl s_client``, curl, wrk,
redis-cli and redis-benchmark run as subprocesses against the examples started with ``--tls-cert/--tls-key``;
Python's ``ssl`` module (sockets, and ``MemoryBIO`` where a test decides what goes on the wire) and
``netloop.Client`` run in-process.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import dataclasses
import fcntl
import logging
import os
import queue
import random
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import TIMEOUT, Recorder, connect, connect_when_listening, recv_exact, serving, split, wait_until
from tls_certs import Authority, Issued

import netloop
from examples import certs
from examples.echo import Echo

ROOT = Path(__file__).resolve().parent.parent
SIZES = [1, 1024, 64 * 1024, 1 << 20, 4 << 20]
CHUNK = 64 * 1024  # a Python client sends this much, then reads it back: neither side's buffers fill up
LOAD = ["-c", "8", "-n", "2000", "-t", "ping,set,get", "-q"]  # redis-benchmark's


# -- certificates and contexts -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pki:
    """The module's certificates: one CA and what it issued, and a rogue CA nobody trusts."""

    ca: Authority
    server: Issued  # localhost, 127.0.0.1, ::1
    renewed: Issued  # the same names, a new key and serial: what a reload swaps in
    other: Issued  # other.test, served by SNI
    client: Issued
    expired_client: Issued
    rogue: Authority
    rogue_client: Issued

    def server_context(self, issued: Issued | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert = issued or self.server
        ctx.load_cert_chain(cert.cert, cert.key)
        return ctx

    def mtls_context(self) -> ssl.SSLContext:
        """A server context that requires a client certificate issued by the CA."""
        ctx = self.server_context()
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(self.ca.cert)
        return ctx

    def client_context(self, cert: Issued | None = None, ca: Authority | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str((ca or self.ca).cert))
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # what Python 3.13 sets by default
        if cert is not None:
            ctx.load_cert_chain(cert.cert, cert.key)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return issue_pki(tmp_path_factory)


def issue_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, the certificates it issued, and a rogue CA (each test module that serves TLS makes its own)."""
    ca = Authority(tmp_path_factory.mktemp("pki"))
    rogue = Authority(tmp_path_factory.mktemp("rogue"), "rogue CA")
    hosts = ["localhost", "127.0.0.1", "::1"]
    return Pki(
        ca=ca,
        server=ca.issue("localhost", hosts),
        renewed=ca.issue("localhost-renewed", hosts),
        other=ca.issue("other.test", ["other.test"]),
        client=ca.issue("client", client=True),
        expired_client=ca.issue("expired-client", client=True, expired=True),
        rogue=rogue,
        rogue_client=rogue.issue("rogue-client", client=True),
    )


@pytest.fixture
def netloop_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The "netloop" logger captured at DEBUG, where dropped handshakes are reported."""
    caplog.set_level(logging.DEBUG, logger="netloop")
    return caplog


# -- handlers ------------------------------------------------------------------------------------------------


class TlsEcho(Recorder):
    """An echo handler that records its events, and what each connection negotiated (``conn.tls`` at on_open)."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: queue.Queue[Any] = queue.Queue()

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        self.infos.put(conn.tls)
        return super().on_open(conn)

    def opens(self) -> int:
        return self.names().count("open")


class Gatherer(netloop.EventHandler):
    """Keeps each connection's inbound bytes in ``conn.context``; reports opens and closes."""

    def __init__(self, greeting: Callable[[netloop.Conn], None] | None = None) -> None:
        self.greeting = greeting
        self.opened: queue.Queue[netloop.Conn] = queue.Queue()
        self.closed: queue.Queue[tuple[netloop.Conn, BaseException | None]] = queue.Queue()
        self.received = threading.Condition()

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.context = bytearray()
        if self.greeting is not None:
            self.greeting(conn)
        self.opened.put(conn)
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.next()
        with self.received:
            conn.context += data
            self.received.notify_all()
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        self.closed.put((conn, err))
        return None

    def wait_for(self, conn: netloop.Conn, size: int) -> bytes:
        with self.received:
            assert self.received.wait_for(lambda: len(conn.context) >= size, TIMEOUT), len(conn.context)
            return bytes(conn.context)


@contextlib.contextmanager
def client_of(handler: netloop.EventHandler, **options: Any) -> Iterator[netloop.Client]:
    client = netloop.Client(handler, **options)
    client.start()
    try:
        yield client
    finally:
        client.stop(TIMEOUT)


# -- Python clients --------------------------------------------------------------------------------------------


def tls_connect(url: str, ctx: ssl.SSLContext, hostname: str | None = "localhost", **kw: Any) -> ssl.SSLSocket:
    """A Python TLS client connected to ``url`` (handshake done)."""
    return ctx.wrap_socket(connect(url), server_hostname=hostname, **kw)


def echo_tls(sock: ssl.SSLSocket, payload: bytes) -> bytes:
    """Send ``payload`` in ``CHUNK``s, reading each one back before the next (one thread per TLS socket)."""
    back = bytearray()
    for start in range(0, len(payload), CHUNK):
        part = payload[start : start + CHUNK]
        sock.sendall(part)
        back += recv_exact(sock, len(part))
    return bytes(back)


def served(url: str, ctx: ssl.SSLContext, message: bytes = b"still served") -> None:
    """A new, well-behaved TLS client gets its echo."""
    with tls_connect(url, ctx) as sock:
        assert echo_tls(sock, message) == message


class BioClient:
    """A TLS client over a raw socket through ``ssl.MemoryBIO``: the test decides how its bytes go on the wire."""

    def __init__(self, sock: socket.socket | None, ctx: ssl.SSLContext, hostname: str | None = "localhost") -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname)

    def client_hello(self) -> bytes:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.do_handshake()
        return self.outgoing.read()

    def handshake(self, send: Callable[[bytes], Any] | None = None) -> None:
        send = send or self._sock().sendall
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            send(self.outgoing.read())
            self._fill()
        if self.outgoing.pending:
            send(self.outgoing.read())  # TLS 1.3: the client's Finished

    def records(self, *plaintexts: bytes) -> bytes:
        """The wire bytes of each plaintext encrypted as a record (or more, past 16 KiB) of its own."""
        for plaintext in plaintexts:
            self.obj.write(plaintext)
        return self.outgoing.read()

    def read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.obj.read(n - len(buf))
            except ssl.SSLWantReadError:
                self._fill()
                continue
            if not chunk:
                raise ConnectionError(f"close_notify after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def read_to_close_notify(self) -> bytes:
        """Everything until the peer's close_notify; a TCP EOF without it raises ``ssl.SSLEOFError``."""
        buf = bytearray()
        while True:
            try:
                chunk = self.obj.read(1 << 16)
            except ssl.SSLWantReadError:
                self._fill()
                continue
            except ssl.SSLZeroReturnError:
                return bytes(buf)  # close_notify, after we sent ours
            if not chunk:
                return bytes(buf)
            buf += chunk

    def _fill(self) -> None:
        data = self._sock().recv(1 << 16)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def _sock(self) -> socket.socket:
        assert self.sock is not None
        return self.sock


def read_until_dropped(sock: socket.socket) -> bytes:
    """What a raw client reads until the server closes (a reset counts as closed)."""
    buf = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 16):
            buf += chunk
    return bytes(buf)


def refused_with(sock: ssl.SSLSocket) -> BaseException | bytes:
    """After a handshake the server will reject (TLS 1.3 checks a client certificate after the client finished):
    what a write and a read get, an exception or the empty bytes of a close."""
    try:
        sock.sendall(b"let me in")
        return sock.recv(100)
    except (ssl.SSLError, ConnectionError) as exc:
        return exc


def failures(engine: netloop.Engine) -> int:
    return engine.stats()["tls_handshake_failures"]


NEEDS_PROC_NET_TCP = pytest.mark.skipif(
    not os.path.exists("/proc/net/tcp"), reason="watches the server's receive queue in Linux's /proc/net/tcp"
)


def unread_by(server: tuple[str, int], client: tuple[str, int]) -> int | None:
    """Bytes the kernel holds unread for ``server``'s end of its IPv4 loopback TCP connection from ``client``
    (None when that socket is gone), from ``/proc/net/tcp``."""

    def hex_addr(addr: tuple[str, int]) -> str:
        return f"{int.from_bytes(socket.inet_aton(addr[0]), sys.byteorder):08X}:{addr[1]:04X}"

    local, remote = hex_addr(server), hex_addr(client)
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return int(fields[4].split(":")[1], 16)
    return None


def unsent(sock: socket.socket) -> int:
    """Bytes in ``sock``'s send queue not yet acknowledged by the peer (Linux's SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]


def trickle(sock: socket.socket, data: bytes, server: tuple[str, int]) -> None:
    """Send ``data`` one byte per TCP segment (the socket has TCP_NODELAY).

    For the first 8 bytes (a record header and the start of its body), the last 4, and every 64th, the server
    has read the byte before the next is sent, so it sees the header split in five and the body arriving in
    pieces; waiting on every byte would make the test take seconds.
    """
    me = sock.getsockname()

    def all_read() -> bool:
        left = unread_by(server, me)
        assert left is not None, "the server closed the connection"
        return left == 0

    for i in range(len(data)):
        sock.sendall(data[i : i + 1])
        if i < 8 or i >= len(data) - 4 or i % 64 == 0:
            wait_until(all_read, what=f"the server to read byte {i}")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


# -- real clients: openssl s_client ------------------------------------------------------------------------------


@contextlib.contextmanager
def s_client(url: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    _, (host, port) = split(url)
    command = [tool("openssl"), "s_client", "-connect", f"{host}:{port}", "-brief", *args]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def say(proc: subprocess.Popen[bytes], line: bytes) -> bytes:
    """Type ``line`` into s_client and return the line that comes back."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line)
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    assert ready, "s_client printed nothing"
    return proc.stdout.readline()


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_openssl_s_client_echo_and_negotiated_protocol(pki: Pki, version: str) -> None:
    ctx = pki.server_context()
    ctx.set_alpn_protocols(["echo/1", "http/1.1"])
    handler = TlsEcho()
    flag = "-tls1_2" if version == "TLSv1.2" else "-tls1_3"
    with serving(handler, "tcp://127.0.0.1:0", tls=ctx) as engine:
        ca = str(pki.ca.cert)
        with s_client(engine.addrs[0], flag, "-CAfile", ca, "-servername", "localhost", "-alpn", "echo/1") as proc:
            assert say(proc, b"hello over TLS\n") == b"hello over TLS\n"
            assert proc.stdin is not None
            proc.stdin.close()  # s_client ends the session and exits
            assert proc.wait(TIMEOUT) == 0
            assert proc.stderr is not None
            report = proc.stderr.read().decode()
        assert f"Protocol version: {version}" in report, report
        assert "Verification: OK" in report, report
        info = handler.infos.get(timeout=TIMEOUT)
        assert (info.version, info.alpn_protocol, info.server_name) == (version, "echo/1", "localhost")
        assert info.cipher and info.peer_cert is None
        assert handler.closed.acquire(timeout=TIMEOUT)
        assert handler.errors == [None]


# -- real clients: the examples with --tls-cert/--tls-key --------------------------------------------------------


@pytest.fixture(scope="module")
def example_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The pair ``python -m examples.certs`` writes: a self-signed cert for localhost, 127.0.0.1, ::1."""
    tool("openssl")
    return certs.write_self_signed(tmp_path_factory.mktemp("example-cert"))


@contextlib.contextmanager
def example(module: str, *args: str) -> Iterator[int]:
    """``python -m module *args`` with its output read until it names the address it listens on; yields its port.

    The process is stopped by SIGTERM when the block ends, and must exit with status 0.
    """
    command = [sys.executable, "-m", module, *args]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read_output() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        line = ""
        while "listening on" not in line:
            line = lines.get(timeout=TIMEOUT)
        found = re.search(r"tcp://127\.0\.0\.1:(\d+)", line)
        assert found, line
        yield int(found.group(1))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        reader.join(TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(scope="module")
def https_port(example_cert: tuple[Path, Path]) -> Iterator[int]:
    cert, key = example_cert
    with example("examples.http_server", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)) as port:
        yield port


@pytest.fixture(scope="module")
def resp_tls_port(example_cert: tuple[Path, Path]) -> Iterator[int]:
    cert, key = example_cert
    with example("resp_server", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)) as port:
        yield port


def test_curl_https_against_the_http_example(https_port: int, example_cert: tuple[Path, Path]) -> None:
    curl = tool("curl")
    url = f"https://localhost:{https_port}"
    out = "|%{num_connects}|%{ssl_verify_result}|%{http_version}\n"
    done = subprocess.run(
        [curl, "--silent", "--show-error", "--cacert", str(example_cert[0]), "--write-out", out, url + "/", url + "/x"],
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    # Verified (0), HTTP/1.1, and the second request reused the first one's TLS connection.
    assert done.stdout == b"Hello, World!|1|0|1.1\nHello, World!|0|0|1.1\n", done
    plain = subprocess.run(
        [curl, "--silent", f"http://127.0.0.1:{https_port}/"], capture_output=True, timeout=TIMEOUT, check=False
    )
    assert plain.returncode != 0 and not plain.stdout  # plaintext HTTP gets no answer from a TLS port


@pytest.mark.slow
def test_wrk_https_against_the_http_example(https_port: int) -> None:
    wrk = tool("wrk")
    done = subprocess.run(
        [wrk, "-t1", "-c8", "-d1s", f"https://127.0.0.1:{https_port}/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    found = re.search(r"(\d+) requests in", done.stdout)
    assert found and int(found.group(1)) > 0, done.stdout
    assert "Socket errors" not in done.stdout and "Non-2xx" not in done.stdout, done.stdout


def test_redis_cli_tls_against_the_resp_example(resp_tls_port: int, example_cert: tuple[Path, Path]) -> None:
    cli = tool("redis-cli")
    if "--tls" not in subprocess.run([cli, "--help"], capture_output=True, text=True, check=False).stdout:
        pytest.skip("this redis-cli was built without TLS")
    base = [cli, "-h", "127.0.0.1", "-p", str(resp_tls_port), "--tls", "--cacert", str(example_cert[0])]

    def run(*args: str) -> str:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=TIMEOUT, check=True)
        return done.stdout.strip()

    assert run("PING") == "PONG"
    assert run("SET", "greeting", "hello over tls") == "OK"
    assert run("GET", "greeting") == "hello over tls"
    assert run("--sni", "localhost", "INCRBY", "n", "5") == "5"


@pytest.mark.slow
def test_redis_benchmark_tls_against_the_resp_example(resp_tls_port: int, example_cert: tuple[Path, Path]) -> None:
    bench = tool("redis-benchmark")
    if "--tls" not in subprocess.run([bench, "--help"], capture_output=True, text=True, check=False).stdout:
        pytest.skip("this redis-benchmark was built without TLS")
    done = subprocess.run(
        [bench, "-h", "127.0.0.1", "-p", str(resp_tls_port), "--tls", "--cacert", str(example_cert[0]), *LOAD],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rates = dict(re.findall(r"^\s*([A-Z_]+): ([\d.]+) requests per second", done.stdout.replace("\r", "\n"), re.M))
    assert set(rates) == {"PING_INLINE", "PING_MBULK", "SET", "GET"}, done.stdout + done.stderr
    assert all(float(rate) > 0 for rate in rates.values())


def test_echo_example_with_tls_over_tcp_and_unix(example_cert: tuple[Path, Path], tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free a moment ago; the example binds it with SO_REUSEADDR
    path = tmp_path / "echo.sock"
    cert, key = map(str, example_cert)
    command = [sys.executable, "-m", "examples.echo", "--port", str(port), "--unix", str(path), "--loops", "2"]
    proc = subprocess.Popen([*command, "--tls-cert", cert, "--tls-key", key], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        ctx = ssl.create_default_context(cafile=cert)
        connect_when_listening(f"unix://{path}").close()  # the TCP listener is up before the Unix one
        payload = os.urandom(300_000)
        for url in (f"tcp://127.0.0.1:{port}", f"unix://{path}"):
            with tls_connect(url, ctx) as sock:
                assert echo_tls(sock, payload) == payload
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
    finally:
        proc.kill()
        proc.wait()


def test_proxy_example_terminates_tls(example_cert: tuple[Path, Path]) -> None:
    cert, key = map(str, example_cert)
    with serving(Echo(), "tcp://127.0.0.1:0") as upstream:
        args = ["--listen", "tcp://127.0.0.1:0", "--upstream", upstream.addrs[0], "--tls-cert", cert, "--tls-key", key]
        with example("examples.proxy", *args) as port:
            ctx = ssl.create_default_context(cafile=cert)
            payload = os.urandom(1 << 20)
            with tls_connect(f"tcp://127.0.0.1:{port}", ctx) as sock:
                assert echo_tls(sock, payload) == payload


def test_certs_command_writes_a_pair_strict_clients_accept(tmp_path: Path) -> None:
    tool("openssl")
    done = subprocess.run(
        [sys.executable, "-m", "examples.certs", "--out", str(tmp_path / "c")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    cert, key = tmp_path / "c" / "cert.pem", tmp_path / "c" / "key.pem"
    assert done.stdout == f"certificate: {cert}\nprivate key: {key}\n"
    assert key.stat().st_mode & 0o777 == 0o600
    ctx = certs.tls_context(argparse.Namespace(tls_cert=str(cert), tls_key=str(key)))
    assert ctx is not None
    client = ssl.create_default_context(cafile=str(cert))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    with serving(Echo(), "tcp://127.0.0.1:0", "tcp://[::1]:0", tls=ctx) as engine:
        for url in engine.addrs:
            for name in ("localhost", split(url)[1][0]):
                with tls_connect(url, client, hostname=name) as sock:
                    assert echo_tls(sock, b"trusted") == b"trusted"


def test_tls_flags_go_together() -> None:
    assert certs.tls_context(argparse.Namespace(tls_cert=None, tls_key=None)) is None
    with pytest.raises(SystemExit, match="go together"):
        certs.tls_context(argparse.Namespace(tls_cert="cert.pem", tls_key=None))


# -- byte-exact streams: Python's ssl and netloop's own client ------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_python_ssl_client_echo_is_byte_exact(pki: Pki, size: int) -> None:
    payload = os.urandom(size)
    handler = TlsEcho()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        with tls_connect(engine.addrs[0], pki.client_context()) as sock:
            assert echo_tls(sock, payload) == payload
            assert sock.version() == "TLSv1.3"
        info = handler.infos.get(timeout=TIMEOUT)
        assert info.version == "TLSv1.3" and info.server_name == "localhost"


@pytest.mark.parametrize("size", SIZES)
def test_netloop_client_echo_is_byte_exact(pki: Pki, size: int) -> None:
    payload = os.urandom(size)
    gatherer = Gatherer()
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine, client_of(gatherer) as client:
        conn = client.dial(engine.addrs[0], timeout=TIMEOUT, tls=pki.client_context(), server_hostname="localhost")
        assert conn.tls is not None and conn.tls.version == "TLSv1.3"
        assert conn.tls.server_name == "localhost" and conn.tls.peer_cert is not None
        conn.async_write(payload)
        assert gatherer.wait_for(conn, size) == payload


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"edge_triggered": True}, id="edge"),
        pytest.param({"poller": "poll"}, id="poll"),
        pytest.param({"read_buffer_cap": 1024}, id="small-reads"),
        pytest.param({"write_buffer_cap": 4096}, id="small-write-cap"),
    ],
)
def test_echo_under_loop_options(pki: Pki, options: dict[str, Any]) -> None:
    payload = os.urandom(1 << 20)
    gatherer = Gatherer()
    server = pki.server_context()
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=server, **options) as engine:
        with tls_connect(engine.addrs[0], pki.client_context()) as sock:
            assert echo_tls(sock, payload) == payload
        with client_of(gatherer, **options) as client:
            conn = client.dial(engine.addrs[0], tls=pki.client_context())
            conn.async_write(payload)
            assert gatherer.wait_for(conn, len(payload)) == payload


def test_pre_write_fires_for_tls_connections(pki: Pki) -> None:
    """``on_pre_write`` (pre_write=True) sees every buffer a TLS connection writes, as on plaintext."""

    class Watched(TlsEcho):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[bytes] = []

        def on_pre_write(self, conn: netloop.Conn, data: Any) -> None:
            with self.lock:
                self.seen.append(bytes(data))

    handler = Watched()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context(), pre_write=True) as engine:
        served(engine.addrs[0], pki.client_context(), b"watch this")
    assert handler.seen == [b"watch this"]


# -- listeners: mixed plaintext and TLS, TCP and Unix, several loops, workers -----------------------------------


def test_plaintext_and_tls_listeners_on_one_engine(pki: Pki, tmp_path: Path) -> None:
    unix = f"unix://{tmp_path / 'tls.sock'}"
    ctx = pki.server_context()
    tls = {"tcp://127.0.0.2:0": ctx, unix: ctx, "tcp://127.0.0.1:0": None}
    handler = TlsEcho()
    with serving(handler, "tcp://127.0.0.1:0", "tcp://127.0.0.2:0", unix, tls=tls) as engine:
        plain, secure, secure_unix = engine.addrs
        with connect(plain) as sock:
            sock.sendall(b"in the clear")
            assert recv_exact(sock, 12) == b"in the clear"
        assert handler.infos.get(timeout=TIMEOUT) is None
        for url in (secure, secure_unix):
            with tls_connect(url, pki.client_context()) as sock:
                assert echo_tls(sock, b"secret") == b"secret"
            assert handler.infos.get(timeout=TIMEOUT).version == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            tls_connect(plain, pki.client_context())  # the plaintext echo hands the ClientHello back


def test_tls_over_a_unix_socket_with_netloop_client(pki: Pki, tmp_path: Path) -> None:
    url = f"unix://{tmp_path / 'tls.sock'}"
    gatherer = Gatherer()
    with serving(TlsEcho(), url, tls=pki.server_context()), client_of(gatherer) as client:
        conn = client.dial(url, tls=pki.client_context(), server_hostname="localhost")
        assert conn.tls is not None and conn.tls.server_name == "localhost"
        conn.async_write(b"over unix")
        assert gatherer.wait_for(conn, 9) == b"over unix"
        # A Unix address has no host to check the certificate against: name one, or the ssl module refuses.
        with pytest.raises(ValueError, match="server_hostname"):
            client.dial(url, tls=pki.client_context())
        assert gatherer.opened.qsize() == 1
        assert client.count_connections() == 1


def ask(sock: ssl.SSLSocket, message: bytes) -> bytes:
    """Send ``message`` and read the reply, which ends with it."""
    sock.sendall(message)
    reply = b""
    while not reply.endswith(message):
        chunk = sock.recv(100)
        assert chunk, f"closed after {reply!r}"
        reply += chunk
    return reply


class WhoAnswers(netloop.EventHandler):
    """Answers each message with ``b"<worker id> <loop index> <message>"``."""

    worker_id = -1

    def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
        if engine.worker_id is not None:
            self.worker_id = engine.worker_id
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        assert conn.tls is not None
        conn.write(b"%d %d " % (self.worker_id, conn.event_loop.index) + conn.next())
        return None


@pytest.mark.parametrize(
    ("options", "spread"),
    [
        pytest.param({"num_event_loop": 2}, 1, id="two-loops"),
        pytest.param({"num_event_loop": 2, "reuse_port": True}, 1, id="reuse-port"),
        pytest.param({"workers": 2, "worker_balancing": netloop.WorkerBalancing.REUSE_PORT}, 0, id="workers-reuse"),
        pytest.param({"workers": 2, "worker_balancing": netloop.WorkerBalancing.PARENT}, 0, id="workers-parent"),
    ],
)
def test_tls_served_by_several_loops_and_workers(pki: Pki, options: dict[str, Any], spread: int) -> None:
    """Every loop (``spread`` 1) or worker (``spread`` 0) serves TLS; connections are held open meanwhile."""
    ctx = pki.client_context()
    with serving(WhoAnswers(), "tcp://127.0.0.1:0", tls=pki.server_context(), **options) as engine:
        held: list[ssl.SSLSocket] = []
        seen: set[bytes] = set()
        try:
            for _ in range(64):
                sock = tls_connect(engine.addrs[0], ctx)
                held.append(sock)
                seen.add(ask(sock, b"who?").split()[spread])
                if len(seen) == 2 and len(held) >= 4:
                    break
            assert seen == {b"0", b"1"}
            assert engine.count_connections() == len(held)
            for sock in held:
                ask(sock, b"still there")
        finally:
            for sock in held:
                sock.close()


# -- the details: records split and bunched, close_notify, timeouts, SNI, reload, mTLS, renegotiation ----------


@NEEDS_PROC_NET_TCP
def test_records_split_into_one_byte_segments_are_reassembled(pki: Pki) -> None:
    handler = TlsEcho()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        _, server = split(engine.addrs[0])
        with connect(engine.addrs[0]) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = BioClient(sock, pki.client_context())
            client.handshake(lambda data: trickle(sock, data, server))  # ClientHello, then Finished
            trickle(sock, client.records(b"one byte at a time"), server)
            assert client.read_exact(18) == b"one byte at a time"
        assert handler.opens() == 1


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="level"),
        pytest.param({"read_buffer_cap": 1024}, id="reads-smaller-than-records"),
        pytest.param({"read_buffer_cap": 1024, "edge_triggered": True}, id="edge"),
    ],
)
def test_a_burst_of_records_is_read_in_full(pki: Pki, options: dict[str, Any]) -> None:
    """Many records in one TCP write: the server reads every one, including what OpenSSL holds decrypted."""
    rng = random.Random(7)
    parts = [rng.randbytes(rng.choice([1, 5, 100, 3000, 16384])) for _ in range(200)]
    assert sum(map(len, parts)) < 1 << 20  # under write_buffer_cap: the server echoes it all before we read
    server = pki.server_context()
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=server, **options) as engine, connect(engine.addrs[0]) as sock:
        client = BioClient(sock, pki.client_context())
        client.handshake()
        sock.sendall(client.records(*parts))
        expected = b"".join(parts)
        assert client.read_exact(len(expected)) == expected


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="level"),
        pytest.param({"read_buffer_cap": 1024}, id="reads-smaller-than-records"),
        pytest.param({"read_buffer_cap": 1024, "edge_triggered": True}, id="edge"),
    ],
)
def test_a_burst_of_records_reaches_the_netloop_client(pki: Pki, options: dict[str, Any]) -> None:
    """A server writes many small records at once; netloop's client reads them all, none left in OpenSSL."""
    rng = random.Random(8)
    parts = [rng.randbytes(rng.choice([1, 7, 900, 16384])) for _ in range(300)]

    def burst(conn: netloop.Conn) -> None:
        for part in parts:
            conn.write(part)

    gatherer = Gatherer()
    server = pki.server_context()
    with serving(Gatherer(burst), "tcp://127.0.0.1:0", tls=server) as engine, client_of(gatherer, **options) as client:
        conn = client.dial(engine.addrs[0], tls=pki.client_context(), server_hostname="localhost")
        expected = b"".join(parts)
        assert gatherer.wait_for(conn, len(expected)) == expected


def test_close_sends_close_notify_then_fin(pki: Pki) -> None:
    class SayBye(TlsEcho):
        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            conn.next()
            conn.write(b"bye")
            return netloop.Action.CLOSE

    handler = SayBye()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        # suppress_ragged_eofs=False: a TCP EOF without close_notify would raise SSLEOFError, not read as b"".
        with tls_connect(engine.addrs[0], pki.client_context(), suppress_ragged_eofs=False) as sock:
            sock.sendall(b"hello")
            assert recv_exact(sock, 3) == b"bye"
            assert sock.recv(100) == b""  # the server's close_notify
            raw = sock.unwrap()  # ours in return: the TLS session ended cleanly both ways
            assert raw.recv(100) == b""  # then the server's FIN
            raw.close()
        assert handler.closed.acquire(timeout=TIMEOUT)
        assert handler.errors == [None]


def test_a_big_reply_then_close_arrives_whole_before_close_notify(pki: Pki) -> None:
    """4 MiB written in on_open, then Action.CLOSE: all of it is flushed (OpenSSL's retried writes
    included) before close_notify, while the client reads 4 KiB at a time."""
    payload = os.urandom(4 << 20)

    class Dump(TlsEcho):
        def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
            super().on_open(conn)
            conn.write(payload)
            return netloop.Action.CLOSE

    handler = Dump()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        with tls_connect(engine.addrs[0], pki.client_context(), suppress_ragged_eofs=False) as sock:
            got = bytearray()
            while chunk := sock.recv(4096):  # b"" only for the close_notify
                got += chunk
            assert bytes(got) == payload
            sock.unwrap().close()
        assert handler.closed.acquire(timeout=TIMEOUT)
        assert handler.errors == [None]


def test_graceful_stop_sends_close_notify(pki: Pki) -> None:
    handler = TlsEcho()
    engine = netloop.start(handler, "tcp://127.0.0.1:0", tls=pki.server_context())
    try:
        sock = tls_connect(engine.addrs[0], pki.client_context(), suppress_ragged_eofs=False)
        with sock:
            assert echo_tls(sock, b"before the stop") == b"before the stop"
            stopper = threading.Thread(target=engine.stop, args=(TIMEOUT,))
            stopper.start()
            assert sock.recv(100) == b""  # close_notify, not a ragged EOF
            sock.unwrap().close()
            stopper.join(TIMEOUT)
    finally:
        engine.stop(TIMEOUT)
    assert engine.wait(TIMEOUT)
    assert handler.errors == [None]


def test_netloop_client_close_sends_close_notify(pki: Pki) -> None:
    """A Python TLS server sees the client's close_notify before its FIN when the client closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: queue.Queue[Any] = queue.Queue()

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(TIMEOUT)
            with pki.server_context().wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as sock:
                data = sock.recv(100)
                seen.put(data)
                seen.put(sock.recv(100))  # b"" only for a close_notify
        except Exception as exc:
            seen.put(exc)

    server = threading.Thread(target=serve)
    server.start()
    gatherer = Gatherer()
    try:
        with client_of(gatherer) as client:
            port = listener.getsockname()[1]
            conn = client.dial(f"tcp://127.0.0.1:{port}", tls=pki.client_context(), server_hostname="localhost")
            conn.async_write(b"then goodbye")
            assert seen.get(timeout=TIMEOUT) == b"then goodbye"
            conn.close()
            assert seen.get(timeout=TIMEOUT) == b""
            closed, err = gatherer.closed.get(timeout=TIMEOUT)
            assert closed is conn and err is None
    finally:
        server.join(TIMEOUT)
        listener.close()


@NEEDS_PROC_NET_TCP
@pytest.mark.parametrize("pipelined", [False, True], ids=["one-request", "pipelined"])
def test_close_with_unread_input_is_a_lingering_close(pki: Pki, pipelined: bool) -> None:
    """Action.CLOSE while the client still sends: the reply and close_notify arrive, then the server goes on
    reading (and discarding) until the client's EOF, as on plaintext, instead of closing with unread input and
    answering the client's later bytes with a reset. ``pipelined``: the client's next record is already in the
    socket when the server decides to close.
    """

    class OneShot(TlsEcho):
        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            conn.next()
            conn.write(b"final answer")
            return netloop.Action.CLOSE

    handler = OneShot()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        _, server = split(engine.addrs[0])
        with connect(engine.addrs[0]) as sock:
            client = BioClient(sock, pki.client_context())
            client.handshake()
            sock.sendall(client.records(b"q1", b"q2 pipelined") if pipelined else client.records(b"q1"))
            assert client.read_to_close_notify() == b"final answer"
            try:
                for _ in range(20):  # keeps sending after the server decided to close: bytes it discards
                    sock.sendall(client.records(b"more requests"))
                me = sock.getsockname()
                # All of them: none left in the client's send queue (each acknowledged) and none unread by the server.
                wait_until(
                    lambda: unsent(sock) == 0 and unread_by(server, me) in (0, None), what="the server to read them"
                )
                assert unread_by(server, me) == 0, "the server's socket is gone"
                # on_close came with our close_notify and FIN; the core lingers on until the client's EOF.
                assert handler.closed.acquire(timeout=0)
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(100) == b""  # the server's FIN
            except (BrokenPipeError, ConnectionResetError) as exc:
                pytest.fail(f"the server reset the connection instead of lingering: {exc!r}")
        wait_until(lambda: engine.count_connections() == 0, what="the lingering connection to close")
        assert handler.errors == [None]


def test_shutdown_write_keeps_reading_what_the_peer_sends(pki: Pki) -> None:
    """Half-close under TLS: ``shutdown_write()`` sends close_notify and FIN; the peer's records, even those
    already in the socket at that moment, still reach ``on_traffic``, then its close_notify fires ``on_eof``."""

    class HalfClose(TlsEcho):
        def __init__(self) -> None:
            super().__init__()
            self.got = bytearray()
            self.eof = threading.Event()

        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            first = not self.got
            self.got += conn.next()
            if first:
                conn.write(b"reply")
                conn.shutdown_write()
            return None

        def on_eof(self, conn: netloop.Conn) -> netloop.Action | None:
            self.eof.set()
            return netloop.Action.CLOSE

    handler = HalfClose()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        with connect(engine.addrs[0]) as sock:
            client = BioClient(sock, pki.client_context())
            client.handshake()
            sock.sendall(client.records(b"one.", b"two.", b"three."))
            assert client.read_to_close_notify() == b"reply"
            # The server's FIN comes once its shutdown call has returned: OpenSSL's shutdown reads after sending
            # close_notify, and a record that reached it there would be lost with an error (docs/tls.md).
            assert sock.recv(1) == b""
            wire = client.records(b"four.")  # TLS 1.3: our side may go on sending after the server's close_notify
            client.obj.unwrap()
            wire += client.outgoing.read()  # then our close_notify
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # what got through is checked below
                sock.sendall(wire)
                sock.shutdown(socket.SHUT_WR)
            assert handler.eof.wait(TIMEOUT)
            assert bytes(handler.got) == b"one.two.three.four."
        assert handler.closed.acquire(timeout=TIMEOUT)
        assert handler.errors == [None]


@pytest.mark.parametrize("clean", [True, False], ids=["close-notify", "ragged-eof"])
def test_the_peers_end_fires_on_eof(pki: Pki, clean: bool) -> None:
    """The peer's close_notify, and a FIN without one, both reach the handler as ``on_eof`` after its bytes, and
    both are answered with our close_notify (a bare FIN once drew a ``decode_error`` alert from OpenSSL)."""

    class Ends(TlsEcho):
        def __init__(self) -> None:
            super().__init__()
            self.got = bytearray()
            self.eof = threading.Event()

        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            self.got += conn.next()
            return None

        def on_eof(self, conn: netloop.Conn) -> netloop.Action | None:
            self.eof.set()
            return netloop.Action.CLOSE

    handler = Ends()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        with connect(engine.addrs[0]) as sock:
            client = BioClient(sock, pki.client_context())
            client.handshake()
            wire = client.records(b"last words")
            if clean:
                with contextlib.suppress(ssl.SSLWantReadError):
                    client.obj.unwrap()
                wire += client.outgoing.read()
            sock.sendall(wire)
            sock.shutdown(socket.SHUT_WR)
            assert handler.eof.wait(TIMEOUT)
            assert bytes(handler.got) == b"last words"
            assert client.read_to_close_notify() == b""  # the server's close_notify in return, not an alert
            assert sock.recv(1) == b""  # then its FIN
        assert handler.closed.acquire(timeout=TIMEOUT)
        assert handler.errors == [None]


def test_handshake_timeout_drops_a_silent_client(pki: Pki, netloop_log: pytest.LogCaptureFixture) -> None:
    handler = TlsEcho()
    ctx = pki.server_context()
    with serving(handler, "tcp://127.0.0.1:0", tls=ctx, tls_handshake_timeout=0.3) as engine:
        with connect(engine.addrs[0]) as silent:
            started = time.monotonic()
            assert read_until_dropped(silent) == b""
            waited = time.monotonic() - started
        assert 0.2 < waited < 3, waited
        wait_until(lambda: failures(engine) == 1, what="the failure to be counted")
        served(engine.addrs[0], pki.client_context())
        assert handler.opens() == 1  # only the well-behaved client
        assert engine.count_connections() == 0 or handler.closed.acquire(timeout=TIMEOUT)
    assert "TLS handshake did not complete in 0.3s" in netloop_log.text


def test_a_stop_does_not_wait_for_handshakes_in_progress(pki: Pki) -> None:
    handler = TlsEcho()
    engine = netloop.start(handler, "tcp://127.0.0.1:0", tls=pki.server_context(), tls_handshake_timeout=30)
    try:
        with connect(engine.addrs[0]) as silent, connect(engine.addrs[0]) as half:
            half.sendall(BioClient(None, pki.client_context()).client_hello()[:50])
            wait_until(lambda: engine.count_connections() == 2, what="both to be taken")
            started = time.monotonic()
            engine.stop(TIMEOUT)
            assert time.monotonic() - started < 3
            assert read_until_dropped(silent) == b"" and read_until_dropped(half) == b""
    finally:
        engine.stop(TIMEOUT)
    assert engine.wait(TIMEOUT)
    assert handler.names() == ["boot", "shutdown"]  # neither reached the handler


def test_sni_callback_can_refuse_an_unknown_name(pki: Pki, netloop_log: pytest.LogCaptureFixture) -> None:
    def only_localhost(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> int | None:
        return None if name == "localhost" else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    ctx = pki.server_context()
    ctx.sni_callback = only_localhost
    handler = TlsEcho()
    with serving(handler, "tcp://127.0.0.1:0", tls=ctx) as engine:
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            tls_connect(engine.addrs[0], pki.client_context(), "other.test")
        wait_until(lambda: failures(engine) == 1, what="the failure to be counted")
        served(engine.addrs[0], pki.client_context())
        assert handler.opens() == 1
    assert "TLS handshake with" in netloop_log.text


def test_sni_callback_reads_the_context_it_serves_with(pki: Pki) -> None:
    seen: list[ssl.SSLContext] = []

    def note(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        seen.append(sock.context)

    ctx = pki.server_context()
    ctx.sni_callback = note
    handler = TlsEcho()
    with serving(handler, "tcp://127.0.0.1:0", tls=ctx) as engine:
        served(engine.addrs[0], pki.client_context())
    assert seen == [ctx]


def test_sni_callback_switches_to_a_second_context(pki: Pki) -> None:
    other = pki.server_context(pki.other)
    names: list[str | None] = []

    def pick(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(name)
        if name == "other.test":
            sock.context = other

    ctx = pki.server_context()
    ctx.sni_callback = pick  # set before the context is handed to netloop, which wraps it
    no_check = pki.client_context()
    no_check.check_hostname = False
    handler = TlsEcho()
    gatherer = Gatherer()
    with serving(handler, "tcp://127.0.0.1:0", tls=ctx) as engine, client_of(gatherer) as client:
        url = engine.addrs[0]
        for hostname, common_name in (("other.test", "other.test"), ("localhost", "localhost"), (None, "localhost")):
            with tls_connect(url, no_check if hostname is None else pki.client_context(), hostname) as sock:
                subject = dict(item[0] for item in sock.getpeercert()["subject"])
                assert subject["commonName"] == common_name
                assert echo_tls(sock, b"sni") == b"sni"
            assert handler.infos.get(timeout=TIMEOUT).server_name == hostname
        conn = client.dial(url, tls=pki.client_context(), server_hostname="other.test")
        assert conn.tls is not None and conn.tls.server_name == "other.test"
        assert dict(item[0] for item in conn.tls.peer_cert["subject"])["commonName"] == "other.test"
        assert handler.infos.get(timeout=TIMEOUT).server_name == "other.test"
    assert names == ["other.test", "localhost", None, "other.test"]


def test_a_reloaded_certificate_serves_new_connections(pki: Pki) -> None:
    ctx = pki.server_context()
    client = pki.client_context()
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=ctx) as engine:
        before = tls_connect(engine.addrs[0], client)
        with before:
            assert int(before.getpeercert()["serialNumber"], 16) == pki.server.serial
            ctx.load_cert_chain(pki.renewed.cert, pki.renewed.key)  # no restart
            with tls_connect(engine.addrs[0], client) as after:
                assert int(after.getpeercert()["serialNumber"], 16) == pki.renewed.serial
                assert echo_tls(after, b"new cert") == b"new cert"
            assert echo_tls(before, b"old connection lives on") == b"old connection lives on"


def test_mutual_tls_accepts_a_client_certificate_the_ca_issued(pki: Pki) -> None:
    handler = TlsEcho()
    gatherer = Gatherer()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.mtls_context()) as engine, client_of(gatherer) as client:
        with tls_connect(engine.addrs[0], pki.client_context(pki.client)) as sock:
            assert echo_tls(sock, b"it is me") == b"it is me"
        info = handler.infos.get(timeout=TIMEOUT)
        assert info.peer_cert is not None
        assert dict(item[0] for item in info.peer_cert["subject"])["commonName"] == "client"
        conn = client.dial(engine.addrs[0], tls=pki.client_context(pki.client), server_hostname="localhost")
        conn.async_write(b"netloop too")
        assert gatherer.wait_for(conn, 11) == b"netloop too"
        assert int(handler.infos.get(timeout=TIMEOUT).peer_cert["serialNumber"], 16) == pki.client.serial


@pytest.mark.parametrize(
    ("offered", "reason"),
    [
        pytest.param(None, "peer did not return a certificate", id="no-certificate"),
        pytest.param("rogue_client", "certificate verify failed", id="unknown-ca"),
        pytest.param("expired_client", "certificate has expired", id="expired"),
    ],
)
def test_mutual_tls_drops_a_client_without_a_valid_certificate(
    pki: Pki, offered: str | None, reason: str, netloop_log: pytest.LogCaptureFixture
) -> None:
    handler = TlsEcho()
    cert = None if offered is None else getattr(pki, offered)
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.mtls_context()) as engine:
        good = tls_connect(engine.addrs[0], pki.client_context(pki.client))
        with good:
            assert echo_tls(good, b"first") == b"first"
            try:
                bad = tls_connect(engine.addrs[0], pki.client_context(cert))
            except (ssl.SSLError, ConnectionError):
                pass  # the alert may already cut the handshake short
            else:
                with bad:
                    outcome = refused_with(bad)
                    assert outcome == b"" or isinstance(outcome, (ssl.SSLError, ConnectionError)), outcome
            wait_until(lambda: failures(engine) == 1, what="the failure to be counted")
            assert echo_tls(good, b"served meanwhile") == b"served meanwhile"
        served(engine.addrs[0], pki.client_context(pki.client))
        assert handler.opens() == 2  # the good ones only
    assert "TLS handshake with" in netloop_log.text and reason in netloop_log.text, netloop_log.text


def test_renegotiation_is_refused(pki: Pki) -> None:
    ctx = pki.server_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 has no renegotiation at all
    handler = TlsEcho()
    with serving(handler, "tcp://127.0.0.1:0", tls=ctx) as engine:
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
        with s_client(engine.addrs[0], "-tls1_2", "-CAfile", str(pki.ca.cert), "-servername", "localhost") as proc:
            assert say(proc, b"before\n") == b"before\n"
            assert proc.stdin is not None and proc.stderr is not None
            proc.stdin.write(b"R\n")  # s_client's command: renegotiate
            proc.stdin.flush()
            assert proc.wait(TIMEOUT) != 0
            report = proc.stderr.read().decode()
        assert "RENEGOTIATING" in report and "no renegotiation" in report, report
        assert handler.closed.acquire(timeout=TIMEOUT)
        assert isinstance(handler.errors[0], ssl.SSLError)  # the client's fatal alert ended it
        assert handler.infos.get(timeout=TIMEOUT).version == "TLSv1.2"


# -- bad input on a TLS port ------------------------------------------------------------------------------------


def _hello(pki: Pki) -> bytes:
    return BioClient(None, pki.client_context()).client_hello()


BAD_INPUT: list[Any] = [
    pytest.param(lambda pki: b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", False, "http request", id="http-request"),
    pytest.param(lambda pki: b"*1\r\n$4\r\nPING\r\n", False, "wrong version number", id="resp-ping"),
    pytest.param(lambda pki: random.Random(5).randbytes(600), False, "[SSL: ", id="random-bytes"),
    pytest.param(lambda pki: _hello(pki)[:100], True, "EOF", id="truncated-hello-then-close"),
    pytest.param(lambda pki: _hello(pki)[:100], False, "did not complete in 0.5s", id="stall-mid-handshake"),
]


@pytest.mark.parametrize(("make", "then_close", "reason"), BAD_INPUT)
def test_bad_input_is_dropped_while_good_clients_are_served(
    pki: Pki,
    make: Callable[[Pki], bytes],
    then_close: bool,
    reason: str,
    netloop_log: pytest.LogCaptureFixture,
) -> None:
    handler = TlsEcho()
    client = pki.client_context()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context(), tls_handshake_timeout=0.5) as engine:
        url = engine.addrs[0]
        with tls_connect(url, client) as good, connect(url) as bad:
            assert echo_tls(good, b"before") == b"before"
            bad.sendall(make(pki))
            if then_close:
                bad.shutdown(socket.SHUT_WR)
            read_until_dropped(bad)  # the server closes it (an alert may come first)
            wait_until(lambda: failures(engine) == 1, what="the failure to be counted")
            assert engine.count_connections() == 1  # the good one; nothing of the bad one is left
            assert echo_tls(good, b"meanwhile") == b"meanwhile"
            served(url, client)
        assert handler.opens() == 2  # never the bad one
        assert failures(engine) == 1
    log = netloop_log.text
    assert "TLS handshake with" in log and reason in log, log


# PROXY headers a load balancer's health check sends before it closes (HAProxy's ``check-send-proxy``): v1, and v2's
# LOCAL command (no addresses), which HAProxy uses for its own checks.
V1_CHECK = b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 443\r\n"
V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + b"\x20\x00\x00\x00"


@pytest.mark.parametrize(
    ("header", "mode"),
    [(b"", "off"), (V1_CHECK, "v1"), (V2_LOCAL, "v2")],
    ids=["bare", "proxy-v1", "proxy-v2-local"],
)
def test_a_health_check_closing_before_its_client_hello_is_closed_by_the_peer(
    pki: Pki, header: bytes, mode: str, netloop_log: pytest.LogCaptureFixture
) -> None:
    """A connection that ends before sending a byte of its ClientHello (a TCP health check: connect, maybe a PROXY
    header, close) is no failed handshake: counted as closed by the peer, never seen by the handler."""
    handler = TlsEcho()
    checks = 3
    options: dict[str, Any] = {"proxy_protocol": mode} if mode != "off" else {}
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context(), **options) as engine:
        url = engine.addrs[0]
        for _ in range(checks):
            with connect(url) as check:
                check.sendall(header)
            wait_until(lambda: engine.count_connections() == 0, what="the check's connection to go")
        wait_until(lambda: engine.stats()["closed_peer"] == checks, what="the checks to be counted")
        stats = engine.stats()
        assert stats["tls_handshake_failures"] == 0 and stats["proxy_header_failures"] == 0, stats
        assert stats["closed_error"] == 0, stats
        with connect(url) as raw:
            raw.sendall(header or (V1_CHECK if mode == "v1" else b""))  # a client behind the balancer
            with pki.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
                assert echo_tls(sock, b"served") == b"served"
        assert handler.opens() == 1  # only the TLS client
    assert "TLS handshake with" not in netloop_log.text


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_health_checks_on_a_tls_port_are_no_handshake_failures(pki: Pki, tmp_path: Path, send: str) -> None:
    """HAProxy's own health checks (``check check-send-proxy``: connect, PROXY header, close) against a TLS
    listener with ``proxy_protocol``: each counted as closed by the peer, none as a failed handshake."""
    haproxy = tool("haproxy")
    mode = "v2" if send.endswith("v2") else "v1"
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context(), proxy_protocol=mode) as engine:
        _, (_, port) = split(engine.addrs[0])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            front = probe.getsockname()[1]
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n"
            f"listen front\n    bind 127.0.0.1:{front}\n"
            f"    server tls 127.0.0.1:{port} {send} check check-send-proxy inter 20 fall 1000 rise 1\n"
        )
        process = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL)
        try:
            wait_until(lambda: engine.stats()["closed_peer"] >= 5, what="five health checks")
        finally:
            process.terminate()
            process.wait(timeout=TIMEOUT)
        stats = engine.stats()
        assert stats["tls_handshake_failures"] == 0 and stats["proxy_header_failures"] == 0, stats
        assert stats["closed_error"] == 0, stats


def test_a_reset_before_the_client_hello_is_closed_by_the_peer(pki: Pki) -> None:
    handler = TlsEcho()
    with serving(handler, "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        with connect(engine.addrs[0]) as check:
            check.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        wait_until(lambda: engine.stats()["closed_peer"] == 1, what="the reset to be counted")
        assert failures(engine) == 0
        served(engine.addrs[0], pki.client_context())


def test_a_truncated_client_hello_is_still_a_handshake_failure(pki: Pki) -> None:
    """One byte of a ClientHello then a FIN: a failed handshake, as before (only a check that sent none is not)."""
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        with connect(engine.addrs[0]) as bad:
            bad.sendall(_hello(pki)[:1])
            bad.shutdown(socket.SHUT_WR)
            read_until_dropped(bad)
        wait_until(lambda: failures(engine) == 1, what="the failure to be counted")
        assert engine.stats()["closed_peer"] == 0


# -- what a TLS write takes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [3, 100_000], ids=["small", "past-one-write"])
def test_a_wide_memoryview_is_written_whole(pki: Pki, size: int) -> None:
    """``write(memoryview(array("I", ...)))`` sends every byte: lengths count bytes, not items (4 bytes each)."""
    items = array.array("I", range(size))
    expected = items.tobytes()
    returned: queue.Queue[int] = queue.Queue()

    class Send(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            conn.next()
            returned.put(conn.write(memoryview(items)))
            return netloop.Action.CLOSE

    with serving(Send(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine:
        with tls_connect(engine.addrs[0], pki.client_context(), suppress_ragged_eofs=False) as sock:
            sock.sendall(b"go")
            got = bytearray()
            while chunk := sock.recv(1 << 16):  # b"" only for the close_notify
                got += chunk
        assert returned.get(timeout=TIMEOUT) == len(expected)
    assert len(got) == len(expected) and bytes(got) == expected


# -- netloop's client --------------------------------------------------------------------------------------------


def test_dial_with_a_wrong_ca_raises_and_leaves_nothing(pki: Pki) -> None:
    gatherer = Gatherer()
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine, client_of(gatherer) as client:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            client.dial(engine.addrs[0], timeout=TIMEOUT, tls=pki.client_context(ca=pki.rogue))
        assert client.count_connections() == 0
        assert sum(loop.load() for loop in client.loops) == 0  # type: ignore[attr-defined]
        assert gatherer.opened.empty() and gatherer.closed.empty()
        conn = client.dial(engine.addrs[0], timeout=TIMEOUT, tls=pki.client_context())  # host 127.0.0.1: in the SAN
        assert conn.tls is not None


def test_dial_with_a_mismatched_hostname_raises(pki: Pki) -> None:
    gatherer = Gatherer()
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine, client_of(gatherer) as client:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            client.dial(engine.addrs[0], tls=pki.client_context(), server_hostname="other.test")
        assert client.count_connections() == 0
        assert gatherer.opened.empty() and gatherer.closed.empty()


def test_dial_raises_timeout_when_the_server_never_answers_the_handshake() -> None:
    gatherer = Gatherer()
    with socket.create_server(("127.0.0.1", 0)) as mute, client_of(gatherer, tls_handshake_timeout=0.3) as client:
        port = mute.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"did not complete in 0\.3s"):
            client.dial(f"tcp://127.0.0.1:{port}", tls=ssl.create_default_context(), server_hostname="localhost")
        assert 0.2 < time.monotonic() - started < 3
        assert client.count_connections() == 0
        assert gatherer.opened.empty() and gatherer.closed.empty()


class Dialer(netloop.EventHandler):
    """On each accepted connection, registers a TLS connection to ``target`` from the loop and reports its events."""

    def __init__(self, target: str, ctx: ssl.SSLContext, hostname: str | None = "localhost") -> None:
        self.target = target
        self.ctx = ctx
        self.hostname = hostname
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        if conn.context == "upstream":
            self.events.put(("open", conn.tls))
            conn.write(b"through TLS")
            return None
        try:
            upstream = conn.event_loop.dial(self.target, tls=self.ctx, server_hostname=self.hostname)
        except ValueError as exc:
            self.events.put(("refused", exc))
            return None
        upstream.context = "upstream"
        self.events.put(("registered", upstream.tls))
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.next()
        if conn.context == "upstream":
            self.events.put(("traffic", data))
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        if conn.context == "upstream":
            self.events.put(("close", err))
        return None


def test_register_from_a_handler_opens_with_tls(pki: Pki) -> None:
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as backend:
        dialer = Dialer(backend.addrs[0], pki.client_context())
        with serving(dialer, "tcp://127.0.0.1:0") as front, connect(front.addrs[0]):
            assert dialer.events.get(timeout=TIMEOUT) == ("registered", None)  # returned before the handshake
            name, info = dialer.events.get(timeout=TIMEOUT)
            assert name == "open" and info.version == "TLSv1.3" and info.server_name == "localhost"
            assert dialer.events.get(timeout=TIMEOUT) == ("traffic", b"through TLS")


@pytest.mark.parametrize(
    ("ca", "hostname", "error"),
    [
        pytest.param("rogue", "localhost", "certificate verify failed", id="wrong-ca"),
        pytest.param("ca", "other.test", "Hostname mismatch", id="hostname-mismatch"),
        pytest.param("ca", "localhost", "Connection refused", id="refused"),
    ],
)
def test_register_from_a_handler_reports_a_failed_handshake_in_on_close(
    pki: Pki, ca: str, hostname: str, error: str
) -> None:
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as backend:
        target = backend.addrs[0]
        if error == "Connection refused":
            with socket.socket() as unused:
                unused.bind(("127.0.0.1", 0))  # bound, never listening: connecting to it is refused
                target = f"tcp://127.0.0.1:{unused.getsockname()[1]}"
        dialer = Dialer(target, pki.client_context(ca=getattr(pki, ca)), hostname)
        with serving(dialer, "tcp://127.0.0.1:0") as front, connect(front.addrs[0]):
            assert dialer.events.get(timeout=TIMEOUT) == ("registered", None)
            name, err = dialer.events.get(timeout=TIMEOUT)
            expected = ConnectionRefusedError if error == "Connection refused" else ssl.SSLCertVerificationError
            assert name == "close" and isinstance(err, expected), (name, err)
            assert error in str(err)
            assert dialer.events.empty()  # no on_open, no traffic
            wait_until(lambda: front.count_connections() == 1, what="the failed upstream to be gone")


def test_register_from_another_thread_returns_after_the_handshake(pki: Pki) -> None:
    gatherer = Gatherer()
    with (
        serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as backend,
        serving(gatherer, "tcp://127.0.0.1:0") as front,
    ):
        conn = front.loops[0].dial(backend.addrs[0], tls=pki.client_context(), server_hostname="localhost")
        assert conn.tls is not None and conn.tls.version == "TLSv1.3"  # on_open has run
        assert gatherer.opened.get(timeout=TIMEOUT) is conn
        conn.async_write(b"from a thread")
        assert gatherer.wait_for(conn, 13) == b"from a thread"
        with pytest.raises(ssl.SSLCertVerificationError):
            front.loops[0].dial(backend.addrs[0], tls=pki.client_context(ca=pki.rogue))


def test_register_with_tls_from_the_loop_takes_a_numeric_host(pki: Pki) -> None:
    dialer = Dialer("tcp://localhost:9", pki.client_context())
    with serving(dialer, "tcp://127.0.0.1:0") as front, connect(front.addrs[0]):
        name, exc = dialer.events.get(timeout=TIMEOUT)
        assert name == "refused" and "numeric host" in str(exc)


# -- options ---------------------------------------------------------------------------------------------------


def test_tls_options_are_checked(pki: Pki) -> None:
    with pytest.raises(ValueError, match="tls_handshake_timeout"):
        netloop.start(Echo(), "tcp://127.0.0.1:0", tls=pki.server_context(), tls_handshake_timeout=0)
    with pytest.raises(TypeError, match="tls"):
        netloop.start(Echo(), "tcp://127.0.0.1:0", tls="cert.pem")
    with pytest.raises(TypeError, match="tls"):
        netloop.start(Echo(), "tcp://127.0.0.1:0", tls={"tcp://127.0.0.1:0": "cert.pem"})
    with pytest.raises(ValueError, match="REUSE_PORT"):
        options = {"workers": 2, "worker_balancing": netloop.WorkerBalancing.PARENT}
        netloop.start(Echo(), "tcp://127.0.0.1:0", tls={"tcp://127.0.0.1:0": pki.server_context()}, **options)


def test_contexts_refuse_renegotiation_and_plaintext_conns_have_no_tls(pki: Pki) -> None:
    ctx = pki.server_context()
    assert not ctx.options & ssl.OP_NO_RENEGOTIATION
    handler = TlsEcho()
    with serving(handler, "tcp://127.0.0.1:0", "tcp://127.0.0.2:0", tls={"tcp://127.0.0.2:0": ctx}) as engine:
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
        with connect(engine.addrs[0]) as sock:
            sock.sendall(b"plain")
            assert recv_exact(sock, 5) == b"plain"
        assert handler.infos.get(timeout=TIMEOUT) is None
    client = pki.client_context()
    gatherer = Gatherer()
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine, client_of(gatherer) as nl:
        nl.dial(engine.addrs[0], tls=client)
    assert client.options & ssl.OP_NO_RENEGOTIATION
