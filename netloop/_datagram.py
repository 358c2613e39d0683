"""UDP: a server socket on a loop, and the per-datagram ``Conn`` that ``on_traffic`` sees."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from netloop._conn import NO_INBOUND, NO_OUTBOUND, Buffer, Callback, Conn
from netloop._handler import Action
from netloop._poller import EDGE, IN

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop

# Datagrams read per readiness event before other descriptors get their turn.
DATAGRAMS_PER_ROUND = 32


class DatagramConn(Conn):
    """The sender of one UDP datagram: ``on_traffic`` reads the datagram, ``write`` replies to the sender.

    The datagram is readable during that ``on_traffic`` call only; its unread rest is dropped afterwards.
    ``async_write`` from another thread sends a datagram to the same sender later.
    """

    __slots__ = ()

    def __init__(self, loop: EventLoop, sock: socket.socket, remote: Any, data: bytes) -> None:
        self.context = None
        self._loop = loop
        self._handler = loop.handler
        self._sock = sock
        self._fd = sock.fileno()
        self._data = data
        self._pos = 0
        self._inbound = NO_INBOUND  # a datagram's bytes are the received bytes object only
        self._outbound = NO_OUTBOUND
        self._closed = False
        self._closing = False
        self._paused = False
        self._err = None
        self._remote = remote
        self._local = None
        self._close_callbacks = None

    def write(self, data: Buffer) -> int:
        """*loop* Send ``data`` as one datagram to the sender; a datagram the kernel refuses is dropped (0)."""
        try:
            return self._sock.sendto(data, self._remote)
        except (BlockingIOError, InterruptedError):
            return 0

    def writev(self, chunks: Sequence[Buffer]) -> int:
        return self.write(b"".join(chunks))

    def send_to(self, data: Buffer, addr: Any) -> int:
        """*loop* Send ``data`` as one datagram to ``addr``."""
        try:
            return self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return 0

    def flush(self) -> None:
        pass

    def _write_task(self, chunks: tuple[bytes, ...], callback: Callback | None) -> None:
        err: BaseException | None = None
        try:
            self._sock.sendto(b"".join(chunks), self._remote)
        except OSError as exc:
            err = exc
        if callback is not None:
            self._loop.run_callback(callback, self, err)

    def _wake_task(self, callback: Callback | None) -> None:
        # The datagram is gone once its on_traffic returned; there is nothing to show again.
        if callback is not None:
            self._loop.run_callback(callback, self, None)

    def _close_task(self, callback: Callback | None) -> None:
        # A datagram's sender has nothing to close: the server socket stays open.
        if callback is not None:
            self._loop.run_callback(callback, self, None)


class DatagramEndpoint:
    """A bound UDP socket served by one loop: one ``on_traffic`` per datagram."""

    def __init__(self, loop: EventLoop, sock: socket.socket, text: str) -> None:
        self.loop = loop
        self.sock = sock
        self.text = text
        self._edge = loop.options.edge_triggered
        self._recvfrom = sock.recvfrom

    def start(self) -> None:
        self.loop.attach(self.sock.fileno(), self._on_io, IN | (EDGE if self._edge else 0))

    def _on_io(self, ev: int) -> None:
        loop = self.loop
        size = loop.read_size
        handler = loop.handler
        sock = self.sock
        recvfrom = self._recvfrom
        for _ in range(DATAGRAMS_PER_ROUND):
            try:
                data, remote = recvfrom(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # e.g. ECONNREFUSED reported for an earlier send: the socket itself is fine.
                loop.log.debug("netloop: UDP receive error on %s: %s", self.text, exc)
                continue
            conn = DatagramConn(loop, sock, remote, data)
            try:
                action = handler.on_traffic(conn)
            except Exception:
                loop.log.exception("netloop: on_traffic raised for a datagram from %r", remote)
                action = None
            conn._data = b""
            conn._pos = 0
            if action == Action.SHUTDOWN:
                loop.engine_stop()
        if self._edge:
            # More may be queued and no new edge will come for it.
            loop.call_soon(self._on_io, IN)

    def close(self) -> None:
        self.loop.detach(self.sock.fileno())
        self.sock.close()
