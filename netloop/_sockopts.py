"""Socket options: the one place a connection's socket is configured, from the engine's options or by
the handler (``Conn.set_no_delay`` and the rest)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from netloop._options import Options

if TYPE_CHECKING:
    from netloop._conn import Conn


def buffer_sizes(sock: socket.SocketType, options: Options) -> None:
    """``socket_recv_buffer`` and ``socket_send_buffer`` on ``sock``: a listener, a connection or a datagram socket.

    The one place ``SO_RCVBUF`` and ``SO_SNDBUF`` are set from the options (``Conn.set_read_buffer`` and
    ``set_write_buffer`` are the handler's own).
    """
    if options.socket_recv_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.socket_recv_buffer)
    if options.socket_send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.socket_send_buffer)


def socket_configurator(options: Options) -> Callable[[socket.SocketType], None]:
    """Apply the per-connection socket options, decided once for the loop (TCP's only to TCP streams)."""
    nodelay = options.tcp_nodelay
    keepalive = options.tcp_keepalive
    rcvbuf = options.socket_recv_buffer
    sndbuf = options.socket_send_buffer

    def configure(sock: socket.SocketType) -> None:
        if sock.family != socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
            if nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if keepalive is not None:
                keep_alive(sock, True, keepalive, keepalive, 3)
        buffer_sizes(sock, options)

    if not nodelay and keepalive is None and rcvbuf is None and sndbuf is None:
        return lambda sock: None
    return configure


def keep_alive(
    sock: socket.SocketType, on: bool, idle: float | None, interval: float | None, count: int | None
) -> None:
    """SO_KEEPALIVE on ``sock``, with the idle time, probe interval (seconds) and probe count where the OS has them."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(on))
    if not on:
        return
    idle_opt = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    for opt, value in (
        (idle_opt, idle),
        (getattr(socket, "TCP_KEEPINTVL", None), interval),
        (getattr(socket, "TCP_KEEPCNT", None), count),
    ):
        if opt is not None and value is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, max(1, int(value)))


# ``Conn``'s socket options (attached to the class in netloop/_conn.py).


def set_no_delay(self: Conn, on: bool) -> None:
    """TCP_NODELAY: send small writes at once (on) or let Nagle coalesce them (off)."""
    self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(on))


def set_keep_alive(
    self: Conn, on: bool, idle: float | None = None, interval: float | None = None, count: int | None = None
) -> None:
    """SO_KEEPALIVE, with the idle time, probe interval (seconds) and probe count where the OS has them."""
    keep_alive(self._sock, on, idle, interval, count)


def set_read_buffer(self: Conn, n: int) -> None:
    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, n)


def set_write_buffer(self: Conn, n: int) -> None:
    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, n)


def set_linger(self: Conn, seconds: int | None) -> None:
    """SO_LINGER: None or a negative value turns it off; 0 makes close send a reset."""
    on = seconds is not None and seconds >= 0
    value = struct.pack("ii", int(on), int(seconds) if on and seconds is not None else 0)
    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, value)
