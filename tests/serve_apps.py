"""Handlers for the command-line runner's tests (``python -m netloop.serve serve_apps:...``)."""

from __future__ import annotations

import netloop


class Echo(netloop.EventHandler):
    """Echoes; says who it thinks the peer is when asked with ``who``."""

    def on_traffic(self, conn: netloop.Conn) -> None:
        data = conn.next()
        if data == b"who":
            conn.write(repr(conn.remote_addr).encode())
            return
        conn.write(data)


def make_echo() -> Echo:
    return Echo()


NOT_A_HANDLER = 42
