"""The PROXY protocol on connections: the header is read before the handler (or TLS) ever sees the connection.

A stream connection from a network in ``proxy_protocol_from`` must begin with a header (the spec forbids guessing);
the reader takes exactly the header's bytes off the socket and nothing after it, so what follows (a TLS
ClientHello, the first request) is read by the connection as usual. It peeks at what has arrived and consumes the
bytes that can only be header; it never waits on bytes it cannot consume, so a level-triggered poller does not
spin. A malformed, oversized or slow header (``proxy_header_timeout``) closes the connection with the reason
logged at debug level and counted (``proxy_header_failures``); the handler never hears of it. A connection from
anywhere else is refused the same way: it is not allowed to speak for another address.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import TYPE_CHECKING, Any

from netloop._conn import BY_ERROR, BY_PEER, BY_TIMEOUT
from netloop._lifecycle import CLOSE_NOW, HEADER_TIMEOUT, OPENED, PEER_FIN, PROXY_HEADER, START_TLS, next_state
from netloop._poller import IN
from netloop._proxy_parse import (
    DEFAULT_MAX_SIZE,
    V1_MAX_LENGTH,
    HeaderComplete,
    Mode,
    ProxyInfo,
    ProxyProtocolError,
    parse_header,
)

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop, Timer

_PEEK = max(DEFAULT_MAX_SIZE, V1_MAX_LENGTH)


class ProxyHeaderReader:
    """Reads one connection's PROXY header on ``loop``, then hands the socket on with the header's facts."""

    def __init__(
        self, loop: EventLoop, sock: socket.SocketType, remote: Any, tls: ssl.SSLContext | None, mode: Mode
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.remote = remote
        self.tls = tls
        self.mode: Mode = mode
        self.head = b""
        self.timer: Timer | None = None
        self.state = PROXY_HEADER  # a connection's first state (netloop._lifecycle), where the header is read
        self.closed_early = False  # the peer closed inside the header

    def start(self, timeout: float) -> None:
        loop = self.loop
        loop.pending[self.fd] = self
        loop.attach(self.fd, self._on_readable, IN)
        self.timer = loop.call_later(timeout, self._expired, timeout)

    def _on_readable(self, ev: int) -> None:
        try:
            self._read()
        except ProxyProtocolError as exc:
            self.fail(exc, BY_ERROR, PEER_FIN if self.closed_early else CLOSE_NOW)
        except OSError as exc:
            self.fail(exc, BY_ERROR)

    def _read(self) -> None:
        try:
            peeked = self.sock.recv(_PEEK - len(self.head), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        if not peeked:
            self.closed_early = True
            raise ProxyProtocolError(f"the peer closed after {len(self.head)} bytes, before a complete PROXY header")
        result = parse_header(self.head + peeked, self.mode)
        if isinstance(result, HeaderComplete):
            self._take(result.consumed - len(self.head))
            self.done(result.info)
            return
        # Everything that has arrived belongs to the header (a v1 line has no CRLF yet; a v2 header is longer):
        # take it off the socket, so the poller reports only new bytes.
        self._take(len(peeked))
        self.head += peeked

    def _take(self, n: int) -> None:
        while n:
            got = self.sock.recv(n)  # bytes already there (peeked): this does not block
            if not got:
                self.closed_early = True
                raise ProxyProtocolError("the peer closed inside the PROXY header")
            n -= len(got)

    def _closed_after_header(self) -> bool:
        """Whether the peer has closed (or reset) with nothing sent after the header."""
        try:
            return not self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False  # still open, nothing more yet: TLS takes it from here
        except OSError:
            return True

    def _expired(self, timeout: float) -> None:
        self.timer = None
        self.fail(TimeoutError(errno.ETIMEDOUT, f"no complete PROXY header in {timeout}s"), BY_TIMEOUT, HEADER_TIMEOUT)

    def _forget(self) -> None:
        loop = self.loop
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        loop.pending.pop(self.fd, None)
        loop.detach(self.fd)

    def fail(self, exc: BaseException, cause: int, event: str = CLOSE_NOW) -> None:
        """Close the connection before the handler knew of it: logged at debug, counted."""
        loop = self.loop
        self.state = next_state(self.state, event)
        self._forget()
        loop.proxy_failures += 1
        loop.log.debug("netloop: PROXY header from %r refused: %s", self.remote, exc)
        loop.drop_unopened(self.sock, cause)

    def done(self, info: ProxyInfo) -> None:
        """The header is complete: serve the connection as if accepted from the client the header names.

        On a TLS listener, a peer that closed right after its header, before a ClientHello, is a health check
        (HAProxy's ``check-send-proxy``): closed as the peer's close, not counted as a failed TLS handshake.
        """
        self._forget()
        if self.tls is not None and self._closed_after_header():
            self.loop.log.debug("netloop: %r closed after its PROXY header, before TLS began", self.remote)
            self.state = next_state(self.state, PEER_FIN)
            self.loop.drop_unopened(self.sock, BY_PEER)
            return
        remote = self.remote
        if info.source is not None:
            remote = info.source  # LOCAL and UNKNOWN headers keep the real peer (the spec's rule)
        self.state = next_state(self.state, OPENED if self.tls is None else START_TLS)
        self.loop.open_accepted(self.sock, remote, self.tls, info)
