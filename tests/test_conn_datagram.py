"""A UDP server's ``Conn``: the sender of one datagram on the engine's shared socket. Nothing a handler calls on
it closes that socket; stream-only calls say so."""

from __future__ import annotations

import queue
import socket

import pytest
from loopback import datagram_socket, serving

import netloop
from netloop import Action

TIMEOUT = 10.0

# The call each test datagram asks for, and what the handler then answers: the name of what it raised, or "done".
CALLS = {
    b"shutdown_write": ("shutdown_write", (), b"TypeError"),
    b"set_deadline": ("set_deadline", (0,), b"TypeError"),  # due at the loop's next turn, before the next datagram
    b"set_read_deadline": ("set_read_deadline", (0,), b"TypeError"),
    b"set_write_deadline": ("set_write_deadline", (0,), b"TypeError"),
    b"set_no_delay": ("set_no_delay", (True,), b"TypeError"),
    b"set_linger": ("set_linger", (0,), b"TypeError"),
    b"close": ("close", (), b"done"),
    b"start_message": ("start_message", (), b"done"),  # a datagram is a whole message
}


class Calls(netloop.EventHandler):
    """Answers ``ping`` with ``pong``; any other datagram names a call to make on its Conn (see ``CALLS``)."""

    def __init__(self) -> None:
        self.after_close: queue.Queue[bytes] = queue.Queue()

    def on_traffic(self, conn: netloop.Conn) -> Action | None:
        data = conn.next()
        if data == b"ping":
            conn.write(b"pong")
            return None
        if data == b"close-action":
            conn.write(b"done")
            return Action.CLOSE
        name, args, _ = CALLS[data]
        try:
            getattr(conn, name)(*args)
        except Exception as exc:
            conn.write(type(exc).__name__.encode())
            return None
        conn.write(b"done")
        if name == "close":
            conn.close(self.closed)
        return None

    def closed(self, conn: netloop.Conn, err: BaseException | None) -> None:
        try:
            conn.write(b"late")
        except netloop.ConnClosedError:
            self.after_close.put(b"ConnClosedError")
        else:
            self.after_close.put(b"written")


def ask(sock: socket.socket, addr: object, data: bytes) -> bytes:
    sock.sendto(data, addr)
    return sock.recvfrom(64)[0]


@pytest.mark.parametrize("request_", [*CALLS, b"close-action"])
def test_nothing_called_on_a_datagram_conn_closes_the_shared_socket(request_: bytes) -> None:
    handler = Calls()
    with serving(handler, "udp://127.0.0.1:0") as engine:
        first, addr = datagram_socket(engine.addrs[0])
        second, _ = datagram_socket(engine.addrs[0])
        with first, second:
            answer = ask(first, addr, request_)
            # Every other sender is still answered, and so is this one.
            assert ask(second, addr, b"ping") == b"pong"
            assert ask(first, addr, b"ping") == b"pong"
            assert answer == (CALLS[request_][2] if request_ in CALLS else b"done")
        if request_ == b"close":
            # close() marks that sender's Conn closed: a later write to it is refused.
            assert handler.after_close.get(timeout=TIMEOUT) == b"ConnClosedError"
