"""Faults against real servers on loopback: resets, half-closes, lingering closes, signals under load, a killed
worker, a model-checked connection, and the protocol fuzzer of bench/fuzz.py at CI size.

After every fault the same server must still serve a well-behaved client. Tests of the on_eof, shutdown_write,
lingering-close and graceful-stop guarantees are written against the API as documented (the README's "Conn" and
"Engine" sections and their additions), whether or not the core has them yet.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import TIMEOUT, connect, echo_through, recv_exact, recv_until_closed, serving, wait_until

import netloop
from bench.fuzz import fuzz
from bench.http_proto import HttpSession
from bench.servers.netloop_http import HttpHandler
from examples.echo import Echo

ROOT = Path(__file__).resolve().parent.parent
QUICK = 5.0  # for what should happen at once: only a failing test waits this long
GET = b"GET / HTTP/1.1\r\nHost: faults\r\n\r\n"
RESETS = (ConnectionResetError, BrokenPipeError)


# -- watching a server --------------------------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """The warnings and errors a server logged (pass ``.logger`` as its ``logger`` option)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []
        self.logger = logging.getLogger(f"netloop.faults.{name}")
        self.logger.addHandler(self)
        self.logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {record.exc_info[1]!r}"
        self.records.append(text)


@pytest.fixture
def errors(request: pytest.FixtureRequest) -> Iterator[ErrorLog]:
    log = ErrorLog(request.node.name)
    yield log
    log.logger.removeHandler(log)


class Watched:
    """Mixin for a handler under test: every close's error, in order; events for traffic and queued output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closes: queue.Queue[BaseException | None] = queue.Queue()
        self.traffic = threading.Event()
        self.backlogged = threading.Event()

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        action = super().on_traffic(conn)  # type: ignore[misc]
        self.traffic.set()
        if not conn.closed and conn.outbound_buffered():
            self.backlogged.set()
        return action  # type: ignore[no-any-return]

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        self.closes.put(err)
        return super().on_close(conn, err)  # type: ignore[misc,no-any-return]

    def next_close(self, timeout: float = QUICK) -> BaseException | None:
        try:
            return self.closes.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"on_close did not fire within {timeout} s") from None


class WatchedEcho(Watched, Echo):
    pass


class WatchedHttp(Watched, HttpHandler):
    pass


class LineServer(netloop.EventHandler):
    """A line protocol of these tests' own: ``PING`` gets ``+PONG``; any other line gets an error, and the
    connection closes after it (a protocol that answers bad input and hangs up)."""

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        while True:
            eol = conn.peek().find(b"\r\n")
            if eol < 0:
                return None
            line = conn.next(eol + 2)[:-2]
            if line != b"PING":
                conn.write(LINE_ERROR)
                return netloop.Action.CLOSE
            conn.write(b"+PONG\r\n")


LINE_ERROR = b"-ERR unknown command\r\n"


class WatchedLines(Watched, LineServer):
    pass


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a reset (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def http_served(addr: str) -> None:
    """A well-behaved HTTP client gets its answer."""
    with connect(addr) as sock:
        sock.sendall(GET)
        reply = b""
        while not reply.endswith(b"Hello, World!"):
            chunk = sock.recv(4096)
            assert chunk, f"closed after {reply!r}"
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")


def echo_served(addr: str) -> None:
    with connect(addr) as sock:
        payload = os.urandom(100_000)
        assert echo_through(sock, payload) == payload


def push_until(sock: socket.socket, event: threading.Event, limit: int = 64 * 2**20) -> int:
    """Send (non-blocking, never reading) until ``event`` is set; returns the bytes sent."""
    sock.setblocking(False)
    chunk = b"x" * 65536
    sent = 0
    deadline = time.monotonic() + QUICK
    while not event.is_set():
        assert sent < limit and time.monotonic() < deadline, "the server never had output queued"
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            event.wait(0.01)
    return sent


# -- resets -------------------------------------------------------------------------------------------------------


def test_reset_while_the_server_writes_a_large_reply(errors: ErrorLog) -> None:
    handler = WatchedEcho()
    with serving(handler, "tcp://127.0.0.1:0", logger=errors.logger) as engine:
        addr = engine.addrs[0]
        sock = connect(addr)
        push_until(sock, handler.backlogged)  # the echo of it waits in the server: a large reply being written
        reset(sock)
        assert isinstance(handler.next_close(), OSError)
        echo_served(addr)
        assert handler.next_close() is None
        wait_until(lambda: engine.count_connections() == 0, QUICK, "the connections to go")
    assert errors.records == []


LOOPS = {
    "epoll": {"poller": "epoll"},
    "epoll-edge": {"poller": "epoll", "edge_triggered": True},
    "poll": {"poller": "poll"},
}


@pytest.mark.parametrize("loop", LOOPS)
def test_reset_while_the_server_holds_a_partial_request(loop: str, errors: ErrorLog) -> None:
    handler = WatchedHttp()
    with serving(handler, "tcp://127.0.0.1:0", logger=errors.logger, **LOOPS[loop]) as engine:
        addr = engine.addrs[0]
        sock = connect(addr)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: faults\r\nContent-Length: 1000\r\n\r\n" + b"b" * 300)
        assert handler.traffic.wait(QUICK)
        reset(sock)
        assert isinstance(handler.next_close(), OSError)
        http_served(addr)
    assert errors.records == []


class HoldsRequests(Watched, Echo):
    """Echoes, except that input starting with ``hold`` stays unconsumed and reading stops (a request parked
    until something else happens)."""

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        if conn.peek().startswith(b"hold"):
            conn.pause_reading()
            self.traffic.set()
            return None
        return super().on_traffic(conn)


@pytest.mark.parametrize("loop", LOOPS)
def test_reset_while_reading_is_paused_closes_the_connection(loop: str, errors: ErrorLog) -> None:
    # A paused connection has no read interest, but the poller still reports the reset (ERR|HUP): it must close
    # the connection, not spin on the event.
    handler = HoldsRequests()
    with serving(handler, "tcp://127.0.0.1:0", logger=errors.logger, **LOOPS[loop]) as engine:
        addr = engine.addrs[0]
        sock = connect(addr)
        sock.sendall(b"hold this")
        assert handler.traffic.wait(QUICK)
        reset(sock)
        assert isinstance(handler.next_close(), OSError)
        echo_served(addr)
    assert errors.records == []


# -- a peer that stops halfway --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["shut-wr", "close"])
def test_peer_ending_halfway_through_a_request_is_closed_cleanly(how: str, errors: ErrorLog) -> None:
    handler = WatchedHttp()
    with serving(handler, "tcp://127.0.0.1:0", logger=errors.logger) as engine:
        addr = engine.addrs[0]
        with connect(addr) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: faults\r\nContent-Length: 100\r\n\r\n" + b"b" * 50)
            assert handler.traffic.wait(QUICK)
            if how == "shut-wr":
                sock.shutdown(socket.SHUT_WR)
                assert recv_until_closed(sock) == b""  # no answer to half a request, and a FIN, not a reset
            else:
                sock.close()
        assert handler.next_close() is None
        http_served(addr)
    assert errors.records == []


def test_echo_of_everything_sent_before_shut_wr_arrives(errors: ErrorLog) -> None:
    # The default on_eof closes after flushing: 4 MiB sent then SHUT_WR all come back (more than the 1 MiB
    # write_buffer_cap, so the server pauses reading on the way), then a FIN.
    handler = WatchedEcho()
    payload = os.urandom(4 * 2**20)
    with serving(handler, "tcp://127.0.0.1:0", logger=errors.logger) as engine:
        addr = engine.addrs[0]
        with connect(addr) as sock:

            def send() -> None:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            received = recv_until_closed(sock)
            sender.join(TIMEOUT)
        assert len(received) == len(payload)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert handler.next_close() is None
        echo_served(addr)
    assert errors.records == []


class LateReply(Watched, netloop.EventHandler):
    """Hashes the whole request; once the peer has half-closed, answers a moment later with the digest and closes."""

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.context = hashlib.sha256()
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.context.update(conn.next())
        self.traffic.set()
        return None

    def on_eof(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.event_loop.call_later(0.05, self._answer, conn)
        return None  # keep the connection open for writing

    def _answer(self, conn: netloop.Conn) -> None:
        conn.write(conn.context.hexdigest().encode())
        conn.close()


def test_on_eof_keeps_the_connection_open_for_a_late_reply(errors: ErrorLog) -> None:
    handler = LateReply()
    request = os.urandom(2**20)
    with serving(handler, "tcp://127.0.0.1:0", logger=errors.logger) as engine:
        with connect(engine.addrs[0]) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            reply = recv_until_closed(sock)
        assert reply == hashlib.sha256(request).hexdigest().encode(), "on_eof saw every byte, then the reply went out"
        assert handler.next_close() is None
    assert errors.records == []


class HalfCloser(Watched, netloop.EventHandler):
    """Answers the first read with ``bye`` and shuts down writing; every later read goes to ``after``."""

    def __init__(self) -> None:
        super().__init__()
        self.after: queue.Queue[bytes] = queue.Queue()
        self.write_refused = threading.Event()

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.next()
        if conn.context is None:
            conn.context = "shut"
            conn.write(b"bye\n")
            conn.shutdown_write()
            try:
                conn.write(b"too late")
            except netloop.ConnClosedError:
                self.write_refused.set()
        else:
            self.after.put(data)
        return None


def test_shutdown_write_sends_a_fin_and_reading_goes_on(errors: ErrorLog) -> None:
    handler = HalfCloser()
    with serving(handler, "tcp://127.0.0.1:0", logger=errors.logger) as engine:
        with connect(engine.addrs[0]) as sock:
            sock.sendall(b"hello\n")
            assert recv_until_closed(sock) == b"bye\n"
            assert errors.records == []
            assert handler.write_refused.wait(TIMEOUT), "a write after shutdown_write raises ConnClosedError"
            sock.sendall(b"still listening?\n")
            got = b""
            while got != b"still listening?\n":
                got += handler.after.get(timeout=QUICK)
        assert handler.next_close() is None  # our close is its EOF; the default on_eof closes
    assert errors.records == []


# -- lingering close ------------------------------------------------------------------------------------------


def error_then_junk(protocol: str) -> tuple[Watched, bytes, bytes]:
    """(handler, a malformed request, the exact reply), for a server that answers it and closes."""
    if protocol == "http":
        request = b"NOT HTTP AT ALL\r\n\r\n"
        return WatchedHttp("python"), request, HttpSession("python").receive(request)[0]
    return WatchedLines(), b"NOT A COMMAND\r\n", LINE_ERROR


@pytest.mark.parametrize("protocol", ["http", "lines"])
def test_error_reply_is_not_destroyed_by_unread_input(protocol: str, errors: ErrorLog) -> None:
    # The server answers the malformed request and closes while 4 MiB more are on their way: a lingering close
    # reads and discards them, so the client reads the whole answer and a FIN, and no reset.
    handler, request, answer = error_then_junk(protocol)
    date = re.compile(rb"Date: [^\r]*\r\n")
    with serving(handler, "tcp://127.0.0.1:0", ticker=True, logger=errors.logger) as engine:
        addr = engine.addrs[0]
        with connect(addr) as sock:
            send_errors: list[BaseException] = []

            def send() -> None:
                try:
                    sock.sendall(request + b"j" * 4 * 2**20)
                    sock.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    send_errors.append(exc)

            sender = threading.Thread(target=send)
            sender.start()
            try:
                reply = recv_until_closed(sock)
            finally:
                sender.join(TIMEOUT)
        assert send_errors == [], "the server reset the connection under the client's send"
        assert date.sub(b"", reply) == date.sub(b"", answer)
        assert handler.next_close() is None
        (http_served if protocol == "http" else lines_served)(addr)
    assert errors.records == []


def lines_served(addr: str) -> None:
    with connect(addr) as sock:
        sock.sendall(b"PING\r\n")
        assert recv_exact(sock, 7) == b"+PONG\r\n"


# -- graceful stop under load ------------------------------------------------------------------------------------


def take_responses(buf: bytes) -> tuple[list[int], bytes]:
    """The statuses of the complete HTTP responses at the start of ``buf``, and the rest."""
    statuses = []
    while (end := buf.find(b"\r\n\r\n")) >= 0:
        head = buf[:end]
        match = re.search(rb"\r\nContent-Length: (\d+)", head)
        assert match, head
        size = end + 4 + int(match.group(1))
        if len(buf) < size:
            break
        statuses.append(int(head.split(b" ", 2)[1]))
        buf = buf[size:]
    return statuses, buf


class Pipeliner(threading.Thread):
    """A client sending batches of pipelined GETs, each sent whole, then read in full before the next, until the
    server closes its connection (or MAX_BATCHES, or QUICK seconds after ``stopped`` is set)."""

    BATCH = 16
    MAX_BATCHES = 20_000

    def __init__(self, addr: str, stop: Stop) -> None:
        super().__init__(daemon=True)
        self.sock = connect(addr)
        self.stop = stop
        self.batches: list[tuple[float, int]] = []  # (when sendall returned, responses read)
        self.statuses: Counter[int] = Counter()
        self.end = ""  # "eof", or the error that ended the connection
        self.partial = b""  # an unfinished response at the end

    def run(self) -> None:
        with self.sock as sock:
            buf = b""
            for _ in range(self.MAX_BATCHES):
                try:
                    sock.sendall(GET * self.BATCH)
                except OSError as exc:
                    self.end = type(exc).__name__
                    return
                sent_at, answered = time.monotonic(), 0
                while answered < self.BATCH:
                    try:
                        chunk = sock.recv(65536)
                    except OSError as exc:
                        self.end = type(exc).__name__
                    else:
                        if not chunk:
                            self.end = "eof"
                    if self.end:
                        self.batches.append((sent_at, answered))
                        self.partial = buf
                        return
                    statuses, buf = take_responses(buf + chunk)
                    self.statuses.update(statuses)
                    answered += len(statuses)
                self.batches.append((sent_at, answered))
                if time.monotonic() > self.stop.at + QUICK:
                    self.end = "still served after the stop"
                    return
            self.end = "ran out of batches"


class Stop:
    """When the server was told to stop (monotonic seconds; infinity until then)."""

    at = float("inf")


def stop_under_load(addr: str, stop: Callable[[], None], clients: int = 16) -> None:
    """Pipelining clients keep ``addr`` busy; ``stop()`` stops the server. Every batch sent before the stop is
    answered in full; every connection then ends with a FIN (never a reset) after whole responses only."""
    when = Stop()
    pipeliners = [Pipeliner(addr, when) for _ in range(clients)]
    for p in pipeliners:
        p.start()
    wait_until(lambda: all(len(p.batches) >= 10 for p in pipeliners), what="the load to build")
    when.at = time.monotonic()
    stop()
    for p in pipeliners:
        p.join(TIMEOUT)
    assert not any(p.is_alive() for p in pipeliners), "a client still runs"
    ends = Counter(p.end for p in pipeliners)
    assert ends == {"eof": clients}, f"connections ended: {dict(ends)} (resets count as ConnectionResetError)"
    assert [p.partial for p in pipeliners if p.partial] == [], "a response was cut off"
    statuses: Counter[int] = sum((p.statuses for p in pipeliners), Counter())
    assert set(statuses) == {200}, statuses
    unanswered = [
        (i, n, answered)
        for i, p in enumerate(pipeliners)
        for n, (sent_at, answered) in enumerate(p.batches)
        if sent_at < when.at and answered < Pipeliner.BATCH
    ]
    assert unanswered == [], f"(client, batch, responses) of batches sent before the stop: {unanswered[:5]}"


@pytest.mark.slow
def test_engine_stop_under_pipelined_load_answers_what_was_sent(errors: ErrorLog) -> None:
    handler = WatchedHttp()
    engine = netloop.start(handler, "tcp://127.0.0.1:0", ticker=True, logger=errors.logger)
    try:
        stop_under_load(engine.addrs[0], lambda: engine.stop(timeout=TIMEOUT))
        assert engine.stopped
    finally:
        engine.stop(timeout=TIMEOUT)
    assert errors.records == []


@pytest.mark.slow
def test_sigterm_under_pipelined_load_answers_what_was_sent(tmp_path: Path) -> None:
    log_path = tmp_path / "http.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.http_server", "--port", "0"], cwd=ROOT, stdout=log, stderr=log
        )
    try:
        wait_until(lambda: b"listening on" in log_path.read_bytes() or proc.poll() is not None, what="the server")
        match = re.search(rb"listening on (tcp://\S+)", log_path.read_bytes())
        assert match, log_path.read_text()
        addr = match.group(1).decode()
        http_served(addr)
        stop_under_load(addr, lambda: proc.send_signal(signal.SIGTERM))
        assert proc.wait(TIMEOUT) == 0, log_path.read_text()
        with pytest.raises(ConnectionRefusedError):
            connect(addr, timeout=QUICK).close()
    finally:
        proc.kill()
        proc.wait()
    log_text = log_path.read_text()
    assert "Traceback" not in log_text and "ERROR" not in log_text, log_text


# -- a worker killed under load ------------------------------------------------------------------------------------


def read_line(fd: int, timeout: float = TIMEOUT) -> str:
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert readable, f"no line from the server process (so far {line!r})"
        byte = os.read(fd, 1)
        assert byte, f"the server process closed its output (so far {line!r})"
        line += byte
    return line.decode()


def wait_exit(pid: int) -> None:
    """Block until process ``pid`` (not our child) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], TIMEOUT)[0], f"process {pid} did not exit"
    finally:
        os.close(fd)


def ask(sock: socket.socket) -> int:
    """Send a ping on ``sock``; the pid of the worker that answered."""
    sock.sendall(b"ping\n")
    reply = b""
    while not reply.endswith(b"ping\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {reply!r}")
        reply += chunk
    return int(reply.split()[1])


class Pinger(threading.Thread):
    """Pings over one connection after another until told to stop; records answers and broken connections."""

    def __init__(self, addr: str, done: threading.Event) -> None:
        super().__init__(daemon=True)
        self.addr = addr
        self.done = done
        self.answers: list[int] = []  # the pid of each answer
        self.broken: list[tuple[int | None, str, float]] = []  # (pid serving the connection, error, opened at)

    def run(self) -> None:
        deadline = time.monotonic() + 4 * TIMEOUT
        while not self.done.is_set() and time.monotonic() < deadline and len(self.broken) < 20:
            pid, opened_at = None, time.monotonic()
            try:
                with connect(self.addr) as sock:
                    while not self.done.is_set():
                        pid = ask(sock)
                        self.answers.append(pid)
            except OSError as exc:
                self.broken.append((pid, repr(exc), opened_at))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reuse-port", "parent"])
def test_sigkill_of_a_worker_under_load(mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fault_workers.py"), mode], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    out = proc.stdout.fileno()
    done = threading.Event()
    pingers: list[Pinger] = []
    try:
        pids: dict[int, int] = {}
        while len(pids) < 2:
            _, worker_id, pid, addr = read_line(out).split()
            pids[int(worker_id)] = int(pid)
        pingers = [Pinger(addr, done) for _ in range(8)]
        for p in pingers:
            p.start()
        wait_until(lambda: all(len(p.answers) >= 5 for p in pingers), what="every client to be served")
        victim, survivor = pids[0], pids[1]
        os.kill(victim, signal.SIGKILL)
        wait_exit(victim)
        _, worker_id, pid, _ = read_line(out).split()  # the parent replaces worker 0
        replacement, booted_at = int(pid), time.monotonic()
        assert worker_id == "0" and replacement != victim
        for _ in range(20):  # new connections are served, by the survivor or the replacement
            with connect(addr) as sock:
                assert ask(sock) in (survivor, replacement)
        counts = [len(p.answers) for p in pingers]
        wait_until(
            lambda: all(len(p.answers) >= n + 5 for p, n in zip(pingers, counts, strict=True)),
            what="every client to be served again",
        )
        done.set()
        for p in pingers:
            p.join(TIMEOUT)
        # Connections served by the killed worker break with it, and so may those opened while it was dying (a
        # SYN queued on its closing listener, a descriptor handed to it); none served by the survivor, and none
        # opened once the replacement is up.
        broken = [b for p in pingers for b in p.broken]
        assert [b for b in broken if b[0] == survivor or (b[0] is None and b[2] > booted_at)] == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


# -- the protocol fuzzer at CI size ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_fuzzing_the_example_servers_finds_no_failure(tmp_path: Path) -> None:
    reports = fuzz(["http-python", "http-httptools", "codec"], cases=320, seed=20240601, batch=40, log_dir=tmp_path)
    for report in reports:
        assert report.skipped is None or report.target == "http-httptools", report.summary()
        assert report.failures == 0, "\n".join([report.summary(), *report.examples, *report.loop_errors])
