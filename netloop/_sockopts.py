"""Socket options: the one place a connection's socket is configured from the engine's options."""

from __future__ import annotations

import socket
from collections.abc import Callable

from netloop._conn import set_keep_alive
from netloop._options import Options


def socket_configurator(options: Options) -> Callable[[socket.SocketType], None]:
    """Apply the per-connection socket options, decided once for the loop."""
    nodelay = options.tcp_nodelay
    keepalive = options.tcp_keepalive
    rcvbuf = options.socket_recv_buffer
    sndbuf = options.socket_send_buffer

    def configure(sock: socket.SocketType) -> None:
        if sock.family != socket.AF_UNIX:
            if nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if keepalive is not None:
                set_keep_alive(sock, True, keepalive, keepalive, 3)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)

    if not nodelay and keepalive is None and rcvbuf is None and sndbuf is None:
        return lambda sock: None
    return configure
