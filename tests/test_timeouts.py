"""idle_timeout, read_timeout and the per-connection deadlines: who is closed, with which error, and who is not."""

from __future__ import annotations

import queue
import socket
import threading
import time

import pytest
from loopback import connect, recv_exact, recv_until_closed, serving, wait_until

import netloop
from netloop import Action

TIMEOUT = 10.0


class Lines(netloop.EventHandler):
    """Answers each complete line; a partial line stays unconsumed. Reports every close."""

    def __init__(self) -> None:
        self.closed: queue.Queue[BaseException | None] = queue.Queue()

    def on_traffic(self, conn: netloop.Conn) -> Action | None:
        data = conn.peek()
        end = data.rfind(b"\n") + 1
        if end:
            conn.discard(end)
            conn.write(data[:end].upper())
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> Action | None:
        self.closed.put(err)
        return None


def closes_with(handler: Lines, kind: str) -> None:
    err = handler.closed.get(timeout=TIMEOUT)
    assert isinstance(err, netloop.ConnTimeoutError) and isinstance(err, TimeoutError), err
    assert err.kind == kind, err


def test_idle_timeout_closes_a_silent_connection_and_spares_a_busy_one() -> None:
    handler = Lines()
    with serving(handler, "tcp://127.0.0.1:0", idle_timeout=0.6) as engine:
        silent = connect(engine.addrs[0])
        busy = connect(engine.addrs[0])
        pace = threading.Event()
        for _ in range(8):  # 0.8 s of traffic, a line every 0.1 s: never idle for 0.6 s, even on a slow machine
            busy.sendall(b"ping\n")
            assert recv_exact(busy, 5) == b"PING\n"
            pace.wait(0.1)
        assert recv_until_closed(silent) == b""  # FIN after the idle timeout
        silent.close()
        closes_with(handler, "idle_timeout")
        busy.sendall(b"still\n")
        assert recv_exact(busy, 6) == b"STILL\n"
        busy.close()


@pytest.mark.slow
def test_read_timeout_evicts_slowloris_while_a_normal_client_is_served() -> None:
    handler = Lines()
    count = 1000
    with serving(handler, "tcp://127.0.0.1:0", read_timeout=0.5) as engine:
        lingering = []
        for _ in range(count):
            sock = connect(engine.addrs[0])
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x")  # a partial request, never finished
            lingering.append(sock)
        normal = connect(engine.addrs[0])
        normal.sendall(b"hello\n")
        assert recv_exact(normal, 6) == b"HELLO\n"
        for _ in range(count):
            closes_with(handler, "read_timeout")
        normal.sendall(b"again\n")  # served throughout, and not evicted: it left nothing unconsumed
        assert recv_exact(normal, 6) == b"AGAIN\n"
        wait_until(lambda: engine.count_connections() == 1, what="every slowloris connection to go")
        for sock in lingering:
            sock.close()
        normal.close()


def test_read_timeout_spares_an_idle_connection_with_nothing_unconsumed() -> None:
    handler = Lines()
    with (
        serving(handler, "tcp://127.0.0.1:0", read_timeout=0.2) as engine,
        connect(engine.addrs[0]) as done,
        connect(engine.addrs[0]) as partial,
    ):
        done.sendall(b"complete\n")
        assert recv_exact(done, 9) == b"COMPLETE\n"
        partial.sendall(b"incompl")
        closes_with(handler, "read_timeout")  # only the one with a partial message
        done.sendall(b"more\n")
        assert recv_exact(done, 5) == b"MORE\n"


@pytest.mark.parametrize("kind", ["deadline", "read_deadline"])
def test_deadlines_close_with_their_kind(kind: str) -> None:
    class Deadline(Lines):
        def on_open(self, conn: netloop.Conn) -> Action | None:
            getattr(conn, f"set_{kind}")(0.2)
            return None

    handler = Deadline()
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        assert recv_until_closed(sock) == b""
        sock.close()
        closes_with(handler, kind)


def test_a_cleared_deadline_does_not_fire() -> None:
    class Cleared(Lines):
        def on_open(self, conn: netloop.Conn) -> Action | None:
            conn.set_deadline(0.2)
            conn.set_read_deadline(0.2)
            conn.set_deadline(None)
            conn.set_read_deadline(None)
            conn.set_write_deadline(0.1)  # nothing buffered when it passes: no close
            return None

    handler = Cleared()
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        assert handler.closed.empty()
        with pytest.raises(queue.Empty):
            handler.closed.get(timeout=0.5)
        sock.sendall(b"alive\n")
        assert recv_exact(sock, 6) == b"ALIVE\n"


def test_write_deadline_closes_a_connection_whose_output_does_not_drain() -> None:
    class Flood(Lines):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            conn.next()
            conn.write(b"w" * (8 << 20))
            conn.set_write_deadline(0.3)
            return None

    handler = Flood()
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"go")  # and never read
        closes_with(handler, "write_deadline")


def test_timeout_options_are_checked() -> None:
    for bad in (0, -1.0, "1"):
        with pytest.raises((ValueError, TypeError)):
            netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", idle_timeout=bad)


class Pusher(netloop.EventHandler):
    """Writes a line every 0.1 s on its own, from a timer: a connection that only receives is not idle."""

    def on_open(self, conn: netloop.Conn) -> Action | None:
        conn.event_loop.call_later(0.1, self.push, conn, 10)
        return None

    def push(self, conn: netloop.Conn, left: int) -> None:
        if conn.closed:
            return
        conn.write(b"tick\n")
        if left > 1:
            conn.event_loop.call_later(0.1, self.push, conn, left - 1)


def test_writes_alone_keep_a_connection_from_the_idle_timeout() -> None:
    with serving(Pusher(), "tcp://127.0.0.1:0", idle_timeout=0.35) as engine, connect(engine.addrs[0]) as sock:
        # 1 s of ticks written straight to the socket, nothing read: every tick arrives, none cut by the timeout.
        assert recv_exact(sock, 50) == b"tick\n" * 10
        assert recv_until_closed(sock) == b""  # then silence both ways: the idle timeout closes it


class Parser(netloop.EventHandler):
    """Consumes every byte into its own state, as the HTTP and RESP parsers do: nothing is ever left unconsumed.

    Each line is one message: ``start_message`` on every chunk (a call while one is in progress must not move the
    deadline), ``end_message`` and an answer once its newline came.
    """

    def __init__(self) -> None:
        self.closed: queue.Queue[BaseException | None] = queue.Queue()

    def on_open(self, conn: netloop.Conn) -> Action | None:
        conn.context = b""
        return None

    def on_traffic(self, conn: netloop.Conn) -> Action | None:
        conn.context += conn.next()
        while b"\n" in conn.context:
            line, _, conn.context = conn.context.partition(b"\n")
            conn.end_message()
            conn.write(line.upper() + b"\n")
        if conn.context:
            conn.start_message()
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> Action | None:
        self.closed.put(err)
        return None


def test_start_message_evicts_a_trickle_that_never_completes_a_message() -> None:
    handler = Parser()
    with serving(handler, "tcp://127.0.0.1:0", read_timeout=0.3) as engine, connect(engine.addrs[0]) as sock:
        pace = threading.Event()
        started = time.monotonic()
        sock.sendall(b"GET")
        # A byte every 20 ms: every byte is consumed, so only the message's deadline can end it.
        while handler.closed.empty() and time.monotonic() - started < TIMEOUT:
            try:
                sock.sendall(b"x")
            except OSError:
                break
            pace.wait(0.02)
        err = handler.closed.get(timeout=TIMEOUT)
        assert isinstance(err, netloop.ConnTimeoutError) and err.kind == "read_timeout", err
        assert time.monotonic() - started < 0.3 + 2.0  # from the message's start, not moved by the trickle


def test_messages_that_each_complete_in_time_are_never_evicted() -> None:
    handler = Parser()
    with serving(handler, "tcp://127.0.0.1:0", read_timeout=0.2) as engine, connect(engine.addrs[0]) as sock:
        pace = threading.Event()
        for i in range(4):  # 0.4 s in all, twice the timeout: each message takes 0.05 s, then an idle gap
            sock.sendall(b"pi")
            pace.wait(0.05)
            sock.sendall(b"ng%d\n" % i)
            assert recv_exact(sock, 6) == b"PING%d\n" % i
            pace.wait(0.05)
        pace.wait(0.25)  # idle between messages, past the timeout: no message is in progress
        sock.sendall(b"last\n")
        assert recv_exact(sock, 5) == b"LAST\n"
        assert handler.closed.empty()


def test_start_message_without_read_timeout_does_nothing() -> None:
    handler = Parser()
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"part")
        with pytest.raises(queue.Empty):
            handler.closed.get(timeout=0.3)
        sock.sendall(b"ial\n")
        assert recv_exact(sock, 8) == b"PARTIAL\n"
