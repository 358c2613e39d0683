"""A connection's buffer limits at their boundaries: ``write_buffer_cap`` (pause and ``on_drain``),
``write_buffer_limit`` (close), and their inbound counterparts ``inbound_cap`` and ``inbound_limit``."""

from __future__ import annotations

import queue
import socket
from typing import Any

import pytest
from loopback import connect, recv_exact, serving

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
