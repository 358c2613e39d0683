"""The acceptor: a refusal past max_connections is an orderly close, and a stop serves what its backlog holds."""

from __future__ import annotations

import socket
import threading

from loopback import TIMEOUT, connect, serving, wait_until

import netloop


class Stalling(netloop.EventHandler):
    """Echoes; a connection that sends b"stall" holds its loop until ``release`` is set (so accepts queue up)."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.release = threading.Event()

    def on_traffic(self, conn: netloop.Conn) -> None:
        data = conn.next()
        if data == b"stall":
            self.stalled.set()
            self.release.wait(TIMEOUT)
        conn.write(data)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server's FIN; ``ConnectionResetError`` if it resets instead."""
    sock.settimeout(TIMEOUT)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_clients_over_max_connections_see_an_orderly_close() -> None:
    handler = Stalling()
    with serving(handler, "tcp://127.0.0.1:0", max_connections=1) as engine:
        url = engine.addrs[0]
        holder = connect(url)
        try:
            holder.sendall(b"stall")
            assert handler.stalled.wait(TIMEOUT)
            # Every refused client has sent its request before the loop gets to accept it: unread bytes at the
            # close are what made it a reset.
            refused = [connect(url) for _ in range(50)]
            for sock in refused:
                sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            handler.release.set()
            outcomes = []
            for sock in refused:
                try:
                    outcomes.append(read_all(sock))
                except ConnectionResetError as exc:
                    outcomes.append(repr(exc).encode())
                finally:
                    sock.close()
            assert outcomes == [b""] * 50
            wait_until(lambda: engine.stats()["refused_max_connections"] == 50, what="the refusals counted")
        finally:
            holder.close()


def test_a_stop_serves_the_connections_waiting_in_the_backlog() -> None:
    handler = Stalling()
    engine = netloop.start(handler, "tcp://127.0.0.1:0")
    try:
        url = engine.addrs[0]
        with connect(url) as holder:
            holder.sendall(b"stall")
            assert handler.stalled.wait(TIMEOUT)
            queued = [connect(url) for _ in range(20)]  # handshaken by the kernel, not accepted yet
            for i, sock in enumerate(queued):
                sock.sendall(b"%d" % i)
            stopper = threading.Thread(target=engine.stop, kwargs={"timeout": TIMEOUT})
            stopper.start()
            handler.release.set()
            answers = []
            for sock in queued:
                try:
                    answers.append(read_all(sock))
                except ConnectionResetError as exc:
                    answers.append(repr(exc).encode())
                finally:
                    sock.close()
            assert answers == [b"%d" % i for i in range(20)]
            holder.close()  # our FIN ends the server's lingering close of it: the stop is done
            stopper.join(TIMEOUT)
    finally:
        engine.stop(timeout=TIMEOUT)
    assert engine.wait(TIMEOUT)
