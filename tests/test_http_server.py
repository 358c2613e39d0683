"""The HTTP example server on netloop, against real clients: http.client, curl, raw sockets and wrk."""

from __future__ import annotations

import gc
import http.client
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

import pytest
from loopback import TIMEOUT, connect, recv_exact, recv_until_closed, serving, split, wait_until

import netloop
from examples import http_server

ROOT = Path(__file__).resolve().parent.parent
GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
EPOCH_DATE = "Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.fixture
def handler() -> http_server.HttpHandler:
    return http_server.HttpHandler()


@pytest.fixture
def server(handler: http_server.HttpHandler) -> Iterator[netloop.Engine]:
    """The server on an ephemeral loopback port."""
    with serving(handler, "tcp://127.0.0.1:0", ticker=True) as engine:
        yield engine


@pytest.fixture
def url(server: netloop.Engine) -> str:
    _, (host, port) = split(server.addrs[0])
    return f"http://{host}:{port}"


def host_port(engine: netloop.Engine) -> tuple[str, int]:
    _, (host, port) = split(engine.addrs[0])
    return host, port


def read_response(stream: BinaryIO, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response from ``stream``: status, header fields (lower-cased names) and body."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := stream.readline()) != b"\r\n":
        assert line, "connection closed inside a response head"
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.lower()] = value.strip()
    length = 0 if head_request else int(headers["content-length"])
    return int(status_line.split()[1]), headers, stream.read(length)


def test_http_client_keeps_one_connection_for_several_requests(server: netloop.Engine) -> None:
    client = http.client.HTTPConnection(*host_port(server), timeout=TIMEOUT)
    try:
        socks = []
        for path in ("/", "/plaintext", "/a/b?c=d", "/"):
            client.request("GET", path)
            response = client.getresponse()
            assert response.status == 200
            assert response.read() == b"Hello, World!"
            assert response.getheader("Content-Type") == "text/plain"
            assert response.getheader("Server") == "netloop"
            assert response.getheader("Content-Length") == "13"
            assert not response.will_close
            socks.append(client.sock)
        assert client.sock is not None and all(sock is client.sock for sock in socks)
        assert server.count_connections() == 1
    finally:
        client.close()


def test_http_client_post_with_a_body(server: netloop.Engine) -> None:
    client = http.client.HTTPConnection(*host_port(server), timeout=TIMEOUT)
    try:
        client.request("POST", "/submit", body=b"x" * 50_000, headers={"Content-Type": "application/octet-stream"})
        response = client.getresponse()
        assert (response.status, response.read()) == (200, b"Hello, World!")
        client.request("GET", "/after")  # the body was consumed exactly: the next request parses
        response = client.getresponse()
        assert (response.status, response.read()) == (200, b"Hello, World!")
    finally:
        client.close()


def test_http10_client_without_keep_alive_is_closed(server: netloop.Engine) -> None:
    with connect(server.addrs[0]) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close\r\n" in data
    assert data.endswith(b"\r\n\r\nHello, World!")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_gets_hello_world_and_reuses_the_connection(url: str) -> None:
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--include", "--write-out", "|%{num_connects}\n", url + "/", url + "/x"],
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    response = r"HTTP/1\.1 200 OK\r\n(?:[^\r\n]+\r\n)+\r\nHello, World!"
    # num_connects: the first transfer connected, the second reused that connection
    match = re.fullmatch(f"({response})\\|1\n({response})\\|0\n", done.stdout.decode())
    assert match is not None, done.stdout
    assert "\r\nContent-Type: text/plain\r\n" in match[1] and "\r\nServer: netloop\r\n" in match[2]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_post_with_expect_100_continue(url: str, tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(b"b" * 100_000)
    done = subprocess.run(
        ["curl", "-sS", "-i", "-H", "Expect: 100-continue", "--data-binary", f"@{body}", url + "/upload"],
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    out = done.stdout.decode()
    assert out.startswith("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert out.endswith("\r\n\r\nHello, World!")


def test_sixteen_pipelined_requests_in_one_write_get_sixteen_responses_in_order(server: netloop.Engine) -> None:
    requests = [b"GET /%d HTTP/1.1\r\nHost: test\r\n\r\n" % i for i in range(16)]
    requests[7] = b"HEAD /7 HTTP/1.1\r\nHost: test\r\n\r\n"  # marks a position: no body in its response
    requests[15] = b"GET /15 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    with connect(server.addrs[0]) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"".join(requests))
        for i in range(16):
            status, headers, body = read_response(stream, head_request=i == 7)
            assert status == 200
            assert body == (b"" if i == 7 else b"Hello, World!")
            assert headers["content-length"] == "13"
            assert ("connection" in headers) == (i == 15)
        assert stream.read() == b"", "the server did not close after Connection: close"


def test_request_split_across_writes(server: netloop.Engine) -> None:
    request = b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\n\r\nhello world" + GET
    with connect(server.addrs[0]) as sock, sock.makefile("rb") as stream:
        for i in range(0, len(request), 5):
            sock.sendall(request[i : i + 5])
        assert read_response(stream)[::2] == (200, b"Hello, World!")
        assert read_response(stream)[::2] == (200, b"Hello, World!")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"BROKEN\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: oops\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 2000000\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"x" * 10_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-Endless: " + b"x" * 10_000, 431),  # a header section that never ends
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        (b"GET / HTTP/1.1\nHost: bare-lf\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: line\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    ],
)
def test_errors_are_answered_then_the_server_closes(server: netloop.Engine, request_bytes: bytes, status: int) -> None:
    with connect(server.addrs[0]) as sock:
        sock.sendall(GET + request_bytes)
        data = recv_until_closed(sock)
    first, _, error = data.partition(b"Hello, World!")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert error.startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nConnection: close\r\n" in error


def test_a_head_of_exactly_max_head_bytes_is_answered_and_one_more_byte_is_a_431(server: netloop.Engine) -> None:
    def request(size: int) -> bytes:
        start, end = b"GET / HTTP/1.1\r\nX-Pad: ", b"\r\n\r\n"
        return start + b"p" * (size - len(start) - len(end)) + end

    with connect(server.addrs[0]) as sock, sock.makefile("rb") as stream:
        sock.sendall(request(http_server.MAX_HEAD))
        assert read_response(stream)[::2] == (200, b"Hello, World!")
        sock.sendall(request(http_server.MAX_HEAD + 1))
        assert read_response(stream)[0] == 431
        assert stream.read() == b""


def test_date_follows_the_handlers_refresh(server: netloop.Engine, handler: http_server.HttpHandler) -> None:
    client = http.client.HTTPConnection(*host_port(server), timeout=TIMEOUT)
    try:
        client.request("GET", "/")
        response = client.getresponse()
        response.read()
        served = parsedate_to_datetime(response.getheader("Date", ""))
        assert abs(served.timestamp() - time.time()) < 5

        def dated_epoch() -> bool:
            handler.refresh(0)  # a tick may re-date it before the request; then try again
            client.request("GET", "/")
            response = client.getresponse()
            response.read()
            return response.getheader("Date") == EPOCH_DATE

        wait_until(dated_epoch, what="a response dated by the refreshed Date")
    finally:
        client.close()


def test_ticks_refresh_the_date() -> None:
    handler = http_server.HttpHandler(date_refresh=0.01)
    handler.refresh(0)
    with serving(handler, "tcp://127.0.0.1:0", ticker=True) as engine:
        client = http.client.HTTPConnection(*host_port(engine), timeout=TIMEOUT)

        def dated_now() -> bool:
            client.request("GET", "/")
            response = client.getresponse()
            response.read()
            return response.getheader("Date") != EPOCH_DATE

        try:
            wait_until(dated_now, what="on_tick to refresh the Date header")
        finally:
            client.close()
    assert handler.date != EPOCH_DATE.encode()


def test_start_serves_in_the_background_with_the_ticker() -> None:
    engine = http_server.start(port=0)
    try:
        with connect(engine.addrs[0]) as sock, sock.makefile("rb") as stream:
            sock.sendall(GET)
            assert read_response(stream)[::2] == (200, b"Hello, World!")
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_reports_requests_and_no_errors(url: str) -> None:
    done = subprocess.run(
        ["wrk", "-t1", "-c8", "-d1s", url + "/plaintext"], capture_output=True, timeout=30, check=True
    )
    report = done.stdout.decode()
    match = re.search(r"^\s*(\d+) requests in", report, re.M)
    assert match is not None, report
    assert int(match[1]) > 100, report
    assert "Socket errors" not in report, report
    assert "Non-2xx or 3xx responses" not in report, report


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler installed (from /proc; True where it cannot tell)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    caught = re.search(r"^SigCgt:\s*([0-9a-fA-F]+)$", status, re.M)
    return caught is None or bool(int(caught[1], 16) >> (signal.SIGTERM - 1) & 1)


def test_the_command_line_serves_until_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.http_server", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stderr = process.stderr
    assert stderr is not None
    try:
        ready = threading.Event()
        log: list[bytes] = []

        def watch() -> None:
            for line in stderr:
                log.append(line)
                if b"listening on" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        assert ready.wait(TIMEOUT), b"".join(log)
        with connect(f"tcp://127.0.0.1:{port}") as sock, sock.makefile("rb") as stream:
            sock.sendall(GET)
            assert read_response(stream)[::2] == (200, b"Hello, World!")
        # netloop.run installs its SIGTERM handler only after on_boot has run: wait for it
        wait_until(lambda: catches_sigterm(process.pid), what="the server to handle SIGTERM")
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_client_that_pipelines_without_reading_is_held_at_the_high_water_mark() -> None:
    """Requests wait (unread) while the answers pass write_buffer_cap, and are answered once the client reads."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    count = 3000
    with (
        serving(http_server.HttpHandler(), "tcp://127.0.0.1:0", write_buffer_cap=64 * 1024) as engine,
        connect(engine.addrs[0]) as sock,
    ):
        sender = threading.Thread(target=sock.sendall, args=(request * count,))
        sender.start()
        first = recv_exact(sock, 64)
        assert first.startswith(b"HTTP/1.1 200")
        got = len(first)
        while got < count * 100:  # read on: every request is answered in the end
            chunk = sock.recv(1 << 16)
            assert chunk
            got += len(chunk)
        sender.join(10)


def test_draining_answers_the_next_request_with_connection_close() -> None:
    handler = http_server.HttpHandler()
    engine = netloop.start(handler, "tcp://127.0.0.1:0", drain_timeout=5.0)
    sock = connect(engine.addrs[0])
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while not first.endswith(b"Hello, World!"):
        first += sock.recv(4096)
    assert b"Connection:" not in first  # HTTP/1.1 keeps the connection by default
    stopping = threading.Thread(target=engine.stop, kwargs={"timeout": TIMEOUT})
    stopping.start()
    wait_until(lambda: handler.draining, what="on_shutdown")
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # sent during the drain: answered, then the end
    last = recv_until_closed(sock)
    sock.close()
    assert b"Connection: close" in last and last.endswith(b"Hello, World!")
    stopping.join(TIMEOUT)
    assert engine.wait(TIMEOUT)
    assert engine.stats()["closed_shutdown"] == 1


def test_short_connections_leave_no_session_behind_without_the_collector(server: netloop.Engine) -> None:
    """Each closed connection's session is freed at once (by reference counting), not by a later gc pass."""

    def sessions() -> int:
        return sum(1 for obj in gc.get_objects() if type(obj) is http_server.Session)

    gc.disable()  # only reference counting may free them
    try:
        baseline = sessions()
        for _ in range(200):
            with connect(server.addrs[0]) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                assert recv_until_closed(sock).endswith(b"Hello, World!")
        wait_until(lambda: server.count_connections() == 0, what="the server to close every connection")
        assert sessions() <= baseline
    finally:
        gc.enable()


def test_requests_that_stall_or_trickle_are_closed_at_read_timeout_while_others_are_served() -> None:
    """read_timeout runs from a request's first byte: a head that stops, a head or a body that trickles in a byte
    every 0.2 s, are all closed within read_timeout (plus a margin); a keep-alive client is served meanwhile, and
    again after idling past read_timeout between two requests."""
    read_timeout, margin = 0.5, 0.5
    stop = threading.Event()  # paces the tricklers; set at the end so none outlives the test
    closed_after: queue.Queue[float] = queue.Queue()

    def trickle(sock: socket.socket, first: bytes, rest: bytes, began: float) -> None:
        try:
            sock.sendall(first)
            for byte in rest:
                if stop.wait(0.2):
                    return
                sock.sendall(bytes([byte]))
        except OSError:
            pass  # closed by the server: the reader below times it

    def watch(sock: socket.socket, began: float) -> None:
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
        closed_after.put(time.monotonic() - began)

    with serving(http_server.HttpHandler(), "tcp://127.0.0.1:0", read_timeout=read_timeout) as engine:
        socks = [connect(engine.addrs[0]) for _ in range(20 + 5 + 2)]
        threads = []
        began = time.monotonic()
        for i, sock in enumerate(socks):
            if i < 20:  # a head that stops
                sock.sendall(b"GET / HTTP/1.1\r\nHost: stall\r\n")
                jobs = [threading.Thread(target=watch, args=(sock, began))]
            elif i < 25:  # a head that trickles
                head = b"GET / HTTP/1.1\r\nX-Slow: " + b"s" * 100
                jobs = [threading.Thread(target=trickle, args=(sock, head[:1], head[1:], began))]
                jobs.append(threading.Thread(target=watch, args=(sock, began)))
            else:  # a complete head, then a body that trickles
                head = b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n"
                jobs = [threading.Thread(target=trickle, args=(sock, head, b"b" * 100, began))]
                jobs.append(threading.Thread(target=watch, args=(sock, began)))
            for job in jobs:
                job.start()
            threads += jobs
        try:
            with connect(engine.addrs[0]) as idle, idle.makefile("rb") as stream:  # served meanwhile
                idle.sendall(GET)
                assert read_response(stream)[::2] == (200, b"Hello, World!")
                answered = time.monotonic()
                times = [closed_after.get(timeout=TIMEOUT) for _ in socks]
                threading.Event().wait(answered + read_timeout + 0.1 - time.monotonic())  # the idle span measured
                idle.sendall(GET)  # idle between requests past read_timeout: no request was in progress
                assert read_response(stream)[::2] == (200, b"Hello, World!")
        finally:
            stop.set()
            for thread in threads:
                thread.join(TIMEOUT)
            for sock in socks:
                sock.close()
    assert max(times) < read_timeout + margin, sorted(times)
