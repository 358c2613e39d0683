"""A connection's buffer limits at their boundaries: ``write_buffer_cap`` (pause and ``on_drain``),
``write_buffer_limit`` (close), and their inbound counterparts ``inbound_cap`` and ``inbound_limit``."""

from __future__ import annotations

import queue
import random
import socket
import threading
from typing import Any

import pytest
from loopback import connect, echo_through, recv_exact, serving, wait_until

import netloop
from netloop import Action

TIMEOUT = 10.0
CAP = 64 * 1024


class Filler(netloop.EventHandler):
    """On ``go``, fills its outbound buffer to exactly ``target`` bytes (the kernel's share first), as a handler
    that writes until ``outbound_buffered() >= write_buffer_cap`` and then waits for ``on_drain`` does.

    On ``?`` afterwards it answers whether ``on_drain`` came (``D``) or not (``N``).
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.sent: queue.Queue[tuple[int, int]] = queue.Queue()  # bytes written, bytes then buffered
        self.closed: queue.Queue[BaseException | None] = queue.Queue()
        self.drained = False

    def on_traffic(self, conn: netloop.Conn) -> Action | None:
        data = conn.next()
        if data == b"go":
            total = 0
            while not conn.outbound_buffered():  # until the kernel refuses a byte
                total += conn.write(b"k" * 4096)
            total += conn.write(b"b" * (self.target - conn.outbound_buffered()))
            self.sent.put((total, conn.outbound_buffered()))
        elif data == b"?":
            conn.write(b"D" if self.drained else b"N")
        return None

    def on_drain(self, conn: netloop.Conn) -> Action | None:
        self.drained = True
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> Action | None:
        self.closed.put(err)
        return None


def slow_reader(url: str) -> socket.socket:
    return connect(url)


@pytest.mark.parametrize(("offset", "drained"), [(-1, False), (0, True), (1, True)])
def test_on_drain_comes_to_a_handler_that_stops_at_the_cap(offset: int, drained: bool) -> None:
    # The contract: outbound at or above write_buffer_cap pauses reading and brings on_drain once below half.
    handler = Filler(CAP + offset)
    options: dict[str, Any] = {"write_buffer_cap": CAP}
    with serving(handler, "tcp://127.0.0.1:0", **options) as engine, slow_reader(engine.addrs[0]) as sock:
        sock.sendall(b"go")
        total, buffered = handler.sent.get(timeout=TIMEOUT)
        assert buffered == CAP + offset
        assert len(recv_exact(sock, total)) == total
        sock.sendall(b"?")  # read after the flush that drained it: on_drain, if due, has run
        assert recv_exact(sock, 1) == (b"D" if drained else b"N")


@pytest.mark.parametrize(("offset", "closes"), [(-1, False), (0, False), (1, True)])
def test_write_buffer_limit_closes_only_past_the_limit(offset: int, closes: bool) -> None:
    limit = 2 * CAP
    handler = Filler(limit + offset)
    options: dict[str, Any] = {"write_buffer_cap": CAP, "write_buffer_limit": limit}
    with serving(handler, "tcp://127.0.0.1:0", **options) as engine, slow_reader(engine.addrs[0]) as sock:
        sock.sendall(b"go")
        total, buffered = handler.sent.get(timeout=TIMEOUT)
        if closes:
            assert isinstance(handler.closed.get(timeout=TIMEOUT), netloop.OutboundLimitError)
            return
        assert buffered == limit + offset
        assert len(recv_exact(sock, total)) == total
        sock.sendall(b"?")
        assert recv_exact(sock, 1) == b"D"
        assert handler.closed.empty()


# -- inbound: inbound_cap pauses reading, inbound_limit closes ---------------------------------------------------


class Hoarder(netloop.EventHandler):
    """Consumes nothing until told to (``consume``), then takes everything; records the most it ever held."""

    def __init__(self) -> None:
        self.conns: queue.Queue[netloop.Conn] = queue.Queue()
        self.closed: queue.Queue[BaseException | None] = queue.Queue()
        self.consume = False
        self.most = 0
        self.received = bytearray()
        self.done = threading.Event()
        self.expected = -1

    def on_open(self, conn: netloop.Conn) -> Action | None:
        self.conns.put(conn)
        return None

    def on_traffic(self, conn: netloop.Conn) -> Action | None:
        self.most = max(self.most, conn.inbound_buffered())
        if self.consume:
            self.take(conn)
        return None

    def take(self, conn: netloop.Conn) -> None:
        self.received += conn.next()
        if len(self.received) == self.expected:
            self.done.set()

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> Action | None:
        self.closed.put(err)
        return None


def send_in_background(sock: socket.socket, payload: bytes) -> threading.Thread:
    def send() -> None:
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the server closed it (the test looks at why)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def test_inbound_limit_closes_a_connection_whose_handler_consumes_nothing() -> None:
    limit = 1 << 20
    handler = Hoarder()
    with serving(handler, "tcp://127.0.0.1:0", inbound_limit=limit) as engine, connect(engine.addrs[0]) as sock:
        sender = send_in_background(sock, b"x" * (8 * limit))
        err = handler.closed.get(timeout=TIMEOUT)
        assert isinstance(err, netloop.InboundLimitError) and isinstance(err, netloop.NetloopError), err
        assert handler.most <= limit
        assert engine.stats()["closed_limit"] == 1
        sender.join(TIMEOUT)
        with connect(engine.addrs[0]) as other:  # the loop serves on
            handler.consume = True
            other.sendall(b"ok")
            wait_until(lambda: handler.received == b"ok", what="the next connection to be served")


@pytest.mark.parametrize("how", ["wake", "submit"])
def test_inbound_cap_pauses_a_hoarder_and_resumes_once_it_consumes(how: str) -> None:
    cap = 256 * 1024
    handler = Hoarder()
    payload = random.randbytes(8 << 20)
    handler.expected = len(payload)
    options: dict[str, Any] = {"inbound_cap": cap, "read_buffer_cap": 64 * 1024}
    with serving(handler, "tcp://127.0.0.1:0", **options) as engine, connect(engine.addrs[0]) as sock:
        conn = handler.conns.get(timeout=TIMEOUT)
        sender = send_in_background(sock, payload)
        wait_until(
            lambda: engine.stats()["inbound_pauses"] == 1 and handler.most >= cap, what="reading to pause at the cap"
        )
        assert cap <= handler.most <= cap + 64 * 1024  # at most one read past the cap
        handler.consume = True
        if how == "wake":
            conn.wake()  # on_traffic again: it consumes, reading resumes
        else:
            conn.event_loop.submit(handler.take, conn)  # consumed outside on_traffic: reading resumes all the same
        assert handler.done.wait(TIMEOUT), f"{len(handler.received)} of {len(payload)} bytes arrived"
        assert handler.received == payload
        assert handler.closed.empty()
        sender.join(TIMEOUT)


class Sipper(netloop.EventHandler):
    """Echoes at most ``sip`` bytes per ``on_traffic`` and asks (``wake``) to be called again for the rest: a
    handler that consumes more slowly than the peer sends."""

    def __init__(self, sip: int) -> None:
        self.sip = sip
        self.most = 0
        self.waking = False  # one wake at a time, as a handler that paces itself would

    def on_traffic(self, conn: netloop.Conn) -> Action | None:
        self.most = max(self.most, conn.inbound_buffered())
        conn.write(conn.next(min(self.sip, conn.inbound_buffered())))
        if not self.waking:
            self.woken(conn, None)
        return None

    def woken(self, conn: netloop.Conn, err: BaseException | None) -> None:
        self.waking = err is None and not conn.closed and conn.inbound_buffered() > 0
        if self.waking:
            conn.wake(self.woken)


@pytest.mark.parametrize("edge", [False, True])
def test_a_slow_consumer_under_inbound_cap_receives_every_byte(edge: bool) -> None:
    cap = 64 * 1024
    handler = Sipper(4 * 1024)  # a quarter of a read: it falls behind, and the cap holds reading
    payload = random.randbytes(2 << 20)
    options: dict[str, Any] = {"inbound_cap": cap, "read_buffer_cap": 16 * 1024, "edge_triggered": edge}
    with serving(handler, "tcp://127.0.0.1:0", **options) as engine, connect(engine.addrs[0]) as sock:
        assert echo_through(sock, payload) == payload
        assert handler.most <= cap + 16 * 1024
        assert engine.stats()["inbound_pauses"] >= 1


def test_inbound_options_are_checked() -> None:
    with pytest.raises(ValueError, match="inbound_limit"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", inbound_cap=1 << 20, inbound_limit=1 << 10)
    with pytest.raises(ValueError, match="inbound_cap"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", inbound_cap=-1)


@pytest.mark.parametrize(("size", "pauses"), [(CAP - 1, 0), (CAP, 1)])
def test_inbound_cap_pauses_at_the_cap_not_below(size: int, pauses: int) -> None:
    handler = Hoarder()
    with serving(handler, "tcp://127.0.0.1:0", inbound_cap=CAP) as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"x" * size)
        wait_until(lambda: engine.stats()["bytes_in"] == size, what="the bytes to be read")
        wait_until(lambda: handler.most == size, what="the handler to be shown them")
        assert engine.stats()["inbound_pauses"] == pauses


@pytest.mark.parametrize(("size", "closes"), [(CAP, False), (CAP + 1, True)])
def test_inbound_limit_closes_past_the_limit_not_at_it(size: int, closes: bool) -> None:
    handler = Hoarder()
    with serving(handler, "tcp://127.0.0.1:0", inbound_limit=CAP) as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"x" * (size - 1))
        wait_until(lambda: handler.most == size - 1, what="the handler to be shown the bytes")
        sock.sendall(b"x")  # the last byte comes on its own read, into the kept bytes
        if closes:
            assert isinstance(handler.closed.get(timeout=TIMEOUT), netloop.InboundLimitError)
            assert handler.most == size - 1  # the byte past the limit never reached the handler
        else:
            wait_until(lambda: handler.most == size, what="the handler to hold exactly the limit")
            assert handler.closed.empty()
