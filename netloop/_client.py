"""Client connections (``netloop.Client``) and outbound connections attached to a server's loop."""

from __future__ import annotations

import socket

from netloop._conn import Conn
from netloop._eventloop import EventLoop


def dial_on_loop(loop: EventLoop, addr: str, timeout: float | None) -> Conn:
    raise NotImplementedError("client connections are not available yet")


def enroll_on_loop(loop: EventLoop, sock: socket.socket) -> Conn:
    raise NotImplementedError("client connections are not available yet")
