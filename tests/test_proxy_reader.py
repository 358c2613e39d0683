"""The PROXY header on connections: what happens between the header and the handler (or TLS)."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

from loopback import TIMEOUT, connect, recv_exact, serving, wait_until
from tls_certs import Authority

import netloop
from netloop.proxy_protocol import encode_v1

HEADER = encode_v1(("203.0.113.7", 51000), ("198.51.100.1", 443))


class Stalling(netloop.EventHandler):
    """Echoes; b"stall" holds the loop until ``release`` is set, so that what clients send meanwhile piles up."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.release = threading.Event()

    def on_traffic(self, conn: netloop.Conn) -> None:
        data = conn.next()
        if data == b"stall":
            self.stalled.set()
            self.release.wait(TIMEOUT)
        conn.write(data)


def test_a_health_check_closing_after_its_header_is_no_tls_handshake_failure(tmp_path: Path) -> None:
    # HAProxy's check-send-proxy on a TLS port: the PROXY header, then a close, no ClientHello.
    issued = Authority(tmp_path).issue("localhost", ["localhost", "127.0.0.1"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(issued.cert, issued.key)
    handler = Stalling()
    addrs = ("tcp://127.0.0.1:0", "tcp://127.0.0.2:0")
    with (
        serving(handler, *addrs, tls={addrs[1]: ctx}, proxy_protocol="v1") as engine,
        connect(engine.addrs[0]) as holder,
    ):
        holder.sendall(HEADER + b"stall")
        assert handler.stalled.wait(TIMEOUT)
        for _ in range(3):
            with connect(engine.addrs[1]) as check:
                check.sendall(HEADER)
        handler.release.set()
        assert recv_exact(holder, 5) == b"stall"
        wait_until(lambda: engine.stats()["closed_peer"] == 3, what="the checks' closes")
        stats = engine.stats()
        assert (stats["tls_handshake_failures"], stats["proxy_header_failures"], stats["connections"]) == (0, 0, 1)
