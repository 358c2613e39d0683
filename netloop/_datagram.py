"""UDP: a server socket on a loop, and the per-datagram ``Conn`` that ``on_traffic`` sees."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from netloop._conn import Buffer, Callback, Conn
from netloop._errors import ConnClosedError
from netloop._lifecycle import CLOSE_NOW, CLOSED, DATAGRAM_TRANSITIONS, next_state
from netloop._networks import allowed
from netloop._poller import EDGE, IN
from netloop._proxy_parse import ProxyInfo, ProxyProtocolError, parse_v2_datagram

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop

# Datagrams read per readiness event before other descriptors get their turn.
DATAGRAMS_PER_ROUND = 32


class DatagramConn(Conn):
    """The sender of one UDP datagram: ``on_traffic`` reads the datagram, ``write`` replies to the sender.

    The datagram is readable during that ``on_traffic`` call only; its unread rest is dropped afterwards.
    ``async_write`` from another thread sends a datagram to the same sender later. ``pause_reading`` holds the
    whole server socket (datagrams wait in the kernel) until ``resume_reading``.

    Its own small model: open, or closed. The socket is the engine's, shared by every sender, and nothing called
    here closes it. ``close()`` (or ``Action.CLOSE``) only marks this sender's Conn closed: later writes to it raise
    ``ConnClosedError``; no ``on_close`` fires (a UDP server has no ``on_open`` either). The stream-only calls
    (``shutdown_write``, ``set_deadline``/``set_read_deadline``/``set_write_deadline``, the TCP socket options
    ``set_no_delay``, ``set_keep_alive``, ``set_linger``) raise ``TypeError``; ``start_message``/``end_message`` do
    nothing, a datagram being a whole message.
    """

    __slots__ = ("_endpoint",)

    def __init__(self, endpoint: DatagramEndpoint, remote: Any, data: bytes, proxy: ProxyInfo | None = None) -> None:
        super().__init__(endpoint.loop, endpoint.sock, remote)
        self._endpoint = endpoint
        self._data = data
        self._proxy = proxy

    @property
    def remote_addr(self) -> Any:
        """The sender's address; behind a proxy's PROXY v2 header, the client's (replies still go to the proxy)."""
        proxy = self._proxy
        if proxy is not None and proxy.source is not None:
            return proxy.source
        return self._remote

    def _keep_rest(self) -> None:
        # A datagram's unread rest is dropped: the next on_traffic is the next datagram.
        self._data = b""
        self._pos = 0

    def _close_request(self, err: BaseException | None) -> None:
        self._close(err)

    def _close(self, err: BaseException | None) -> None:
        # The one way a datagram's Conn closes: marked closed, the shared socket untouched.
        if self._state != CLOSED:
            self._state = next_state(self._state, CLOSE_NOW, DATAGRAM_TRANSITIONS)

    def _refused(self) -> None:
        if self._state == CLOSED:
            raise ConnClosedError(f"write on closed datagram connection {self!r}")

    def shutdown_write(self) -> None:
        """Stream connections only: a UDP sender's Conn shares the server's socket (``TypeError``)."""
        raise _stream_only("shutdown_write")

    def _set_deadline(self, kind: str, seconds: float | None) -> None:
        raise _stream_only(f"set_{kind}")

    def set_no_delay(self, on: bool) -> None:
        raise _stream_only("set_no_delay")

    def set_keep_alive(
        self, on: bool, idle: float | None = None, interval: float | None = None, count: int | None = None
    ) -> None:
        raise _stream_only("set_keep_alive")

    def set_linger(self, seconds: int | None) -> None:
        raise _stream_only("set_linger")

    def start_message(self) -> None:
        """A datagram is a whole message: nothing to time."""

    def end_message(self) -> None:
        """A datagram is a whole message: nothing to time."""

    def pause_reading(self) -> None:
        """*loop* Stop reading the server socket this datagram came from, until ``resume_reading``."""
        self._endpoint.pause()

    def resume_reading(self) -> None:
        self._endpoint.resume()

    def write(self, data: Buffer) -> int:
        """*loop* Send ``data`` as one datagram to the sender; a datagram the kernel refuses is dropped (0)."""
        self._refused()
        if self._endpoint.pre_write:
            self._handler.on_pre_write(self, data)
        try:
            return self._sock.sendto(data, self._remote)
        except (BlockingIOError, InterruptedError):
            return 0

    def writev(self, chunks: Sequence[Buffer]) -> int:
        return self.write(b"".join(chunks))

    def send_to(self, data: Buffer, addr: Any) -> int:
        """*loop* Send ``data`` as one datagram to ``addr``."""
        self._refused()
        if self._endpoint.pre_write:
            self._handler.on_pre_write(self, data)
        try:
            return self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return 0

    def flush(self) -> None:
        pass

    def _write_task(self, chunks: tuple[bytes, ...], callback: Callback | None) -> None:
        err: BaseException | None = None
        data = b"".join(chunks)
        try:
            self._refused()
            if self._endpoint.pre_write:
                self._handler.on_pre_write(self, data)
            self._sock.sendto(data, self._remote)
        except OSError as exc:  # ConnClosedError is one
            err = exc
        if callback is not None:
            self._loop.run_callback(callback, self, err)

    def _wake_task(self, callback: Callback | None) -> None:
        # The datagram is gone once its on_traffic returned; there is nothing to show again.
        if callback is not None:
            self._loop.run_callback(callback, self, None)

    def _close_task(self, callback: Callback | None) -> None:
        self._close(None)
        if callback is not None:
            self._loop.run_callback(callback, self, None)


def _stream_only(name: str) -> TypeError:
    return TypeError(
        f"{name} is for stream connections: a UDP server's Conn shares the engine's socket with every sender"
    )


class DatagramEndpoint:
    """A bound UDP socket served by one loop: one ``on_traffic`` per datagram."""

    def __init__(self, loop: EventLoop, sock: socket.socket, text: str) -> None:
        self.loop = loop
        self.sock = sock
        self.text = text
        self.pre_write = loop.options.pre_write
        self._edge = loop.options.edge_triggered
        self._recvfrom = sock.recvfrom
        self._proxied = loop.proxy_mode is not None
        self._watched = False
        self._paused = False
        self._closed = False

    def start(self) -> None:
        if not self._closed and not self._paused and not self._watched:
            self._watched = True
            self.loop.attach(self.sock.fileno(), self._on_io, IN | (EDGE if self._edge else 0))

    def pause(self) -> None:
        self._paused = True
        if self._watched:
            self._watched = False
            self.loop.detach(self.sock.fileno())

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self.start()
            if self._edge and self._watched:
                self.loop.call_soon(self._on_io, IN)  # datagrams that came meanwhile raised no new edge

    def _on_io(self, ev: int) -> None:
        loop = self.loop
        size = loop.read_size
        recvfrom = self._recvfrom
        proxied = self._proxied
        for _ in range(DATAGRAMS_PER_ROUND):
            if not self._watched:
                return  # paused by a handler
            try:
                data, remote = recvfrom(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # e.g. ECONNREFUSED reported for an earlier send: the socket itself is fine.
                loop.log.debug("netloop: UDP receive error on %s: %s", self.text, exc)
                continue
            if proxied:
                try:
                    data, proxy = self._strip_header(data, remote)
                except ProxyProtocolError:
                    continue
                DatagramConn(self, remote, data, proxy)._deliver()
            else:
                DatagramConn(self, remote, data)._deliver()
        if self._edge:
            # More may be queued and no new edge will come for it.
            loop.call_soon(self._on_io, IN)

    def _strip_header(self, data: bytes, remote: Any) -> tuple[bytes, ProxyInfo | None]:
        """PROXY v2 over UDP: each datagram from an allowed proxy begins with a header (v1 has no UDP form)."""
        loop = self.loop
        if not allowed(remote, loop.proxy_networks):
            loop.proxy_failures += 1
            loop.log.debug("netloop: UDP datagram from %r dropped: not in proxy_protocol_from", remote)
            raise ProxyProtocolError("not allowed")
        try:
            info, offset = parse_v2_datagram(data)
        except ProxyProtocolError as exc:
            loop.proxy_failures += 1
            loop.log.debug("netloop: UDP datagram from %r dropped: %s", remote, exc)
            raise
        return data[offset:], info

    def close(self) -> None:
        self._closed = True
        self.pause()
        self.sock.close()
