"""TLS connections: OpenSSL reads and writes the socket itself, so the bytes are copied once each way.

A ``TlsConn`` wraps the accepted (or dialled) socket with the user's ``ssl.SSLContext`` and drives the handshake on
the loop, without the handler: ``on_open`` fires once it completes, and a handshake that fails or takes longer than
``tls_handshake_timeout`` closes the socket with a debug log line and a count, never an event. Afterwards the read
and write paths are the plaintext ones with the ``ssl`` module's C read and write in place of ``recv`` and ``send``:
no ``MemoryBIO`` pair, no extra copy. With the compiled core OpenSSL reads ahead (``netloop._tls_records``: one
``recv`` per read, not a record's header and body apiece); records it already holds are read on without waiting for
the socket, closing sends ``close_notify`` before our FIN, and renegotiation is refused.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from netloop import _tls_records
from netloop._buffer.ring import RingBuffer
from netloop._conn import (
    BY_PEER,
    BY_SHUTDOWN,
    NO_INBOUND,
    READ_HELD,
    READS_PER_ROUND,
    Buffer,
    Conn,
    cause_of,
)
from netloop._errors import EngineStoppedError
from netloop._lifecycle import (
    CLOSE_NOW,
    CLOSED,
    DELIVER,
    FIN_SENT,
    HANDSHAKE_TIMEOUT,
    HANDSHAKING,
    NO_READ,
    OPENED,
    READS,
    SHUTTING,
    next_state,
)
from netloop._poller import IN, OUT

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop
    from netloop._proxy_parse import ProxyInfo

# The most buffered plaintext one flush hands OpenSSL: records are 16 KiB, and a bounded write keeps a retry cheap.
WRITE_SIZE = 256 * 1024
_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
_ENDED = (ssl.SSLZeroReturnError, ssl.SSLEOFError)


@dataclasses.dataclass(frozen=True)
class TlsInfo:
    """What a TLS connection negotiated (``conn.tls``)."""

    version: str | None  # e.g. "TLSv1.3"
    cipher: str | None  # e.g. "TLS_AES_256_GCM_SHA384"
    alpn_protocol: str | None  # what ALPN chose, if the context offered protocols
    server_name: str | None  # the SNI name the client asked for (server side) or that we sent (client side)
    peer_cert: dict[str, Any] | None  # the peer's certificate as ``getpeercert()`` gives it, when one was asked for


def prepare_context(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Refuse renegotiation on ``ctx`` (TLS 1.2; TLS 1.3 has none), take a peer's FIN without close_notify as its
    end, and note the SNI name each client asks for.

    OpenSSL 3 answers a FIN without close_notify with a ``decode_error`` alert unless told to take it as the end
    (``OP_IGNORE_UNEXPECTED_EOF``); taken so, the connection ends as after a close_notify, and ours is sent in return.
    The name is only visible to the context's ``sni_callback``: a callback the user set is wrapped, and still
    decides (it may switch ``ssl_socket.context``). Set a new ``sni_callback`` before handing the context over.
    """
    for option in (getattr(ssl, "OP_NO_RENEGOTIATION", 0), getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)):
        if option and not ctx.options & option:
            ctx.options |= option
    user = ctx.sni_callback
    if ctx.protocol != ssl.PROTOCOL_TLS_CLIENT and not getattr(user, "_netloop_records_sni", False):

        def record_sni(sock: Any, name: str | None, context: ssl.SSLContext) -> int | None:
            sock._netloop_sni = name
            return user(sock, name, context) if user is not None else None  # type: ignore[arg-type]

        record_sni._netloop_records_sni = True  # type: ignore[attr-defined]
        ctx.sni_callback = record_sni
    return ctx


class TlsConn(Conn):
    """A connection whose bytes go through TLS; handlers see plaintext and the same ``Conn`` API."""

    __slots__ = ("_ctx", "_info", "_owner", "_pending", "_ready", "_retry", "_server_name", "_server_side", "_ssl")
    _initial = HANDSHAKING

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.SocketType,
        remote: Any,
        ctx: ssl.SSLContext,
        server_side: bool,
        server_name: str | None,
    ) -> None:
        super().__init__(loop, sock, remote)
        self._ctx = ctx
        self._server_side = server_side
        self._server_name = server_name
        self._ssl: Any = None  # the ssl module's C object, once the socket is wrapped
        # Whether OpenSSL holds input a read would find without the socket (``_tls_records``), once wrapped.
        self._pending: Callable[[Any], bool] = _nothing_pending
        self._owner: Any = None  # what the context's sni_callback is handed as the socket
        self._info: TlsInfo | None = None
        # Length of a write OpenSSL asked to be retried: the retry must hand it the same bytes.
        self._retry = 0
        # Set when a blocking dial waits for the handshake's outcome.
        self._ready: threading.Event | None = None
        self._send = _not_yet  # writes before the handshake completes are buffered

    @property
    def tls(self) -> TlsInfo | None:
        """The negotiated facts (None until the handshake completed)."""
        return None if self._info is _NOT_OPENED else self._info

    # -- the handshake: before the handler knows of the connection -----------------------------------------

    def _start(self, connecting: bool, timeout: float) -> None:
        """Watch the socket and start the handshake (or, ``connecting``, wait for the connect to complete first)."""
        loop = self._loop
        self._mask = OUT if connecting else IN
        loop.attach(self._fd, self._on_handshake_io, self._mask)
        self._timer = loop.call_later(timeout, self._handshake_expired, timeout)
        if not connecting:
            self._shake()

    def _on_handshake_io(self, ev: int) -> None:
        if self._ssl is None and not self._server_side:
            code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._drop(OSError(code, f"connect to {self._remote!r}: {os.strerror(code)}"))
                return
        self._shake()

    def _shake(self) -> None:
        if self._ssl is None:
            if self._server_side and not self._client_spoke():
                return
            try:
                if self._server_side and _WRAP_BARE:
                    self._wrap_bare()
                else:
                    self._wrap()
            except (OSError, ValueError) as exc:
                self._drop(exc)
                return
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._want(IN)
            return
        except ssl.SSLWantWriteError:
            self._want(OUT)
            return
        except (OSError, ValueError) as exc:
            self._drop(exc)
            return
        self._handshaken()

    def _wrap(self) -> None:
        """Wrap the socket as an ``ssl.SSLSocket`` (a client: its hostname checks and encoding are the module's)."""
        wrapped = self._ctx.wrap_socket(
            self._sock,  # type: ignore[arg-type]  # the C-level socket type is all wrapping needs
            server_side=self._server_side,
            do_handshake_on_connect=False,
            server_hostname=None if self._server_side else self._server_name,
        )
        self._sock = self._owner = wrapped
        self._ssl = wrapped._sslobj  # type: ignore[attr-defined]
        self._pending = _tls_records.read_ahead(self._ssl, wrapped)

    def _wrap_bare(self) -> None:
        """Give the socket to OpenSSL without the ``ssl.SSLSocket`` around it (a server).

        ``SSLContext.wrap_socket`` builds a second Python socket on the descriptor, which costs five system calls
        (``getsockopt``, ``getsockname``, ``getpeername`` and two ``ioctl``) and its Python per handshake; the
        loop reads and writes through the C object alone anyway.
        """
        sock = self._sock
        if type(sock) is not socket.socket:
            # OpenSSL's object keeps a weak reference to the socket, which a bare ``_socket.socket`` cannot give:
            # the descriptor moves to a ``socket.socket``, non-blocking by its type (no system call).
            kind = sock.type | getattr(socket, "SOCK_NONBLOCK", 0)
            sock = self._sock = socket.socket(sock.family, kind, sock.proto, sock.detach())
            if not hasattr(socket, "SOCK_NONBLOCK"):
                sock.settimeout(0.0)  # (BSD, macOS: no such flag, one ioctl)
        owner = _SniOwner()
        self._ssl = owner._sslobj = self._ctx._wrap_socket(  # type: ignore[attr-defined]
            sock, True, None, owner=owner
        )
        self._owner = owner
        self._pending = _tls_records.read_ahead(self._ssl, sock)

    def _client_spoke(self) -> bool:
        """Whether the first byte of the ClientHello is here (peeked at; the socket is wrapped only then).

        A connection that ends before it (a load balancer's TCP health check: connect, maybe a PROXY header, close)
        is dropped as closed by the peer, not counted as a failed handshake.
        """
        try:
            first = self._sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False  # nothing yet: IN is what we wait for
        except OSError as exc:
            self._drop(exc, BY_PEER)
            return False
        if not first:
            self._drop(ConnectionAbortedError(errno.ECONNABORTED, "closed before its ClientHello"), BY_PEER)
            return False
        return True

    def _want(self, mask: int) -> None:
        if mask != self._mask:
            self._mask = mask
            self._loop.poller.modify(self._fd, mask)

    def _handshake_expired(self, timeout: float) -> None:
        self._timer = None
        if self._info is None and self._state != CLOSED and next_state(self._state, HANDSHAKE_TIMEOUT) == CLOSED:
            self._drop(TimeoutError(errno.ETIMEDOUT, f"TLS handshake did not complete in {timeout}s"))

    def _drop(self, exc: BaseException, cause: int | None = None) -> None:
        """The handshake failed: logged at debug level and counted; a server's handler never hears of it.

        A connection that ``register`` handed out already gets ``on_close`` with the error; a blocking dial
        raises it instead (``_ready``), leaving nothing behind. With a ``cause`` (``CAUSES``) the handshake did not
        fail but never began (the client left before its ClientHello, the engine stopped): counted as that only.
        """
        loop = self._loop
        exc.__traceback__ = None  # kept in _err, its frames would hold this connection: a cycle
        if cause is None:
            loop.tls_failures += 1
            loop.log.debug("netloop: TLS handshake with %r failed: %s", self._remote, exc)
            cause = cause_of(exc)
        if self._server_side or self._ready is not None:
            loop.closed_by[cause] += 1  # (a registered client's goes through _close)
        if not self._server_side and self._ready is None:
            self._info = _NOT_OPENED  # so that _close takes the ordinary way
            self._err = exc
            Conn._close(self, exc)
            return
        self._to(CLOSE_NOW)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop.conns.pop(self._fd, None)
        loop.detach(self._fd)
        loop.released += 1
        if loop.sourced:
            loop.forget_source(self._fd)
        try:
            self._sock.close()
        except OSError:
            pass
        self._err = exc
        _let_go(loop)
        loop.conn_dropped()
        if self._ready is not None:
            self._ready.set()

    def _handshaken(self) -> None:
        self._to(OPENED)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        obj = self._ssl
        cipher = obj.cipher()
        server_side = obj.server_side
        self._info = TlsInfo(
            version=obj.version(),
            cipher=cipher[0] if cipher else None,
            alpn_protocol=obj.selected_alpn_protocol(),
            server_name=obj.server_hostname if not server_side else self._server_name or _sni(self._owner),
            peer_cert=obj.getpeercert() or None,
        )
        self._recv = obj.read
        self._send = obj.write
        self._more = functools.partial(self._pending, obj)  # the loops' inlined read path reads on while it holds
        loop = self._loop
        loop.set_handler(self._fd, self._on_io)
        self._update_interest()
        loop.open_conn(self)
        if self._ready is not None:
            self._ready.set()
        if self._outbound._size and self._state != CLOSED:
            self._flush(False)  # what was written before the handshake completed
        if self._state != CLOSED and self._pending(obj):
            self._read_on()  # the handshake's last read may have brought application data along

    # -- reading --------------------------------------------------------------------------------------------

    def _read_on(self, ev: int = IN) -> None:
        """Read and show records until the socket and OpenSSL are dry, a pause, or a round's reads.

        Also the descriptor's handler after the handshake (``_on_io``): a readable event reads here at once, one
        Python call fewer per record; anything else (writable, an error, a hang-up) takes ``Conn._on_io``, which
        reads through here in turn. Where the loop reads inline (level-triggered), its inlined read path takes a
        readable event's first read itself (``_read_failed`` sorts what it raised, ``_more`` says when to read on
        here): this loop and that path are to change together.
        """
        if ev != IN:
            Conn._on_io(self, ev)
            return
        size = self._loop.read_size
        obj = self._ssl
        for _ in range(READS_PER_ROUND):
            reads = READS[self._state]
            if reads == NO_READ or (reads == DELIVER and self._pause & READ_HELD):
                return
            try:
                data = self._recv(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._read_failed(exc)
                return
            if not data:
                self._peer_eof()
                return
            loop = self._loop
            self._seen = loop.now
            loop.bytes_in += len(data)
            if reads == DELIVER:
                self._traffic(data)
            if not self._pending(obj):
                return  # what is left is in the socket: the poller reports it
        self._more_to_read()

    _on_io = _read_on

    def _read_failed(self, exc: OSError) -> None:
        if isinstance(exc, _WANT):
            return  # a record not complete yet (or one that carried no plaintext): the socket reports the rest
        if isinstance(exc, _ENDED):
            self._peer_eof()  # close_notify, or the peer closed without it (a ragged EOF)
            return
        self._close(exc)

    def _more_to_read(self) -> None:
        # Records wait in OpenSSL (decrypted, or read ahead), not in the socket: no readiness event will come for them.
        if self._pending(self._ssl):
            self._loop.call_soon(self._read_on)

    def _update_interest(self) -> None:
        # The handshake watches the socket for what OpenSSL wants (``_want``) until it completes.
        if self._info is not None:
            super()._update_interest()

    def _resume(self) -> None:
        self._update_interest()
        if self._pending(self._ssl):
            self._loop.call_soon(self._read_on)

    # -- writing --------------------------------------------------------------------------------------------

    # ``write`` is ``Conn.write`` (compiled or not), with ``_send`` the ``ssl`` module's C write: OpenSSL takes a
    # whole write or nothing (no partial writes), and ``_write_failed`` keeps one it asked to retry.

    def _write_failed(self, exc: OSError, data: Buffer) -> int:
        n = len(data)
        if not n:
            return 0  # whatever OpenSSL says to a write of nothing
        if isinstance(exc, _WANT):
            self._retry = n  # OpenSSL may hold part of it: the retry hands it these same bytes
            self._buffer_rest(data, 0)
            return n
        self._fail_soon(exc)
        return 0

    def writev(self, chunks: Sequence[Buffer]) -> int:
        return Conn.write(self, b"".join(chunks))

    def _send_buffered(self, in_callback: bool) -> bool:
        out = self._outbound
        send = self._ssl.write
        while out._size:
            n = self._retry or min(out._size, WRITE_SIZE)
            data = _head(out, n)
            try:
                send(data)
            except _WANT:
                self._retry = n
                return True
            except OSError as exc:
                self._retry = 0
                self._send_failed(exc, in_callback)
                return False
            self._retry = 0
            out.advance(n)
            loop = self._loop
            self._seen = loop.now
            loop.bytes_out += n
        return True

    def _shut_wr(self) -> None:
        """Send close_notify, then our FIN.

        The ``ssl`` module's shutdown calls OpenSSL's twice, and the second call reads: a record already waiting
        would be lost there. So records the socket holds are read first. After a close (CLOSING) input is only
        discarded, from the raw socket. After ``shutdown_write`` (SHUTTING) reading goes on through TLS: what was
        read first is kept for ``on_traffic``, and a shutdown that still lost a record closes with its error.
        """
        sock = self._sock
        half = self._state == SHUTTING
        if half:
            self._read_ahead()
        try:
            self._ssl.shutdown()  # sends our close_notify; the peer's may come later
        except (*_WANT, *_ENDED):
            pass
        except ssl.SSLError as exc:
            if half:
                raise
            self._loop.log.debug("netloop: TLS close_notify to %r: %s", self._remote, exc)
        if not half:
            self._recv = functools.partial(socket.socket.recv, sock)  # discard raw: no TLS left to read
        socket.socket.shutdown(sock, socket.SHUT_WR)

    def _read_ahead(self) -> None:
        """Move every record the socket holds into the inbound buffer, to show ``on_traffic`` after this callback."""
        size = self._loop.read_size
        got = False
        while True:
            try:
                data = self._recv(size)
            except (*_WANT, *_ENDED, BlockingIOError, InterruptedError):
                break
            if not data:
                break
            if self._data:
                self._keep_rest()  # the current read's rest goes first, so the order holds
            if self._inbound is NO_INBOUND:
                self._inbound = RingBuffer()
            self._inbound.write(data)
            self._loop.bytes_in += len(data)
            got = True
        if got:
            self._loop.call_soon(self._show_kept)

    def _show_kept(self) -> None:
        if READS[self._state] == DELIVER and self._inbound._size and not self._pause & READ_HELD:
            self._deliver()

    def _finish(self) -> None:
        if self._info is None:
            # Still shaking hands at a graceful stop: dropped at once, the handler never knew of it.
            self._drop(EngineStoppedError("netloop: the engine stopped during the TLS handshake"), BY_SHUTDOWN)
            return
        super()._finish()

    def _close(self, err: BaseException | None) -> None:
        if self._state == CLOSED:
            return
        if self._info is None:
            # Still shaking hands (a stop, or a dial closed early): the handler never knew of it.
            self._drop(err or ConnectionAbortedError(errno.ECONNABORTED, "closed during the TLS handshake"))
            return
        if err is None and not FIN_SENT[self._state] and self._info is not _NOT_OPENED:
            # Closing without our FIN sent yet (the peer ended first): still say close_notify, best effort.
            try:
                self._ssl.shutdown()
            except (OSError, ValueError):
                pass
        super()._close(err)
        _let_go(self._loop)


class PreWriteTlsConn(TlsConn):
    """A TLS connection that calls ``on_pre_write`` once for each buffer before it is written (``pre_write=True``)."""

    __slots__ = ()

    def write(self, data: Buffer) -> int:
        self._handler.on_pre_write(self, data)
        return Conn.write(self, data)

    def writev(self, chunks: Sequence[Buffer]) -> int:
        for chunk in chunks:
            self._handler.on_pre_write(self, chunk)
        return Conn.write(self, b"".join(chunks))


def _head(out: Any, n: int) -> bytes | memoryview:
    """The first ``n`` buffered bytes as one object (``n`` is at most what is buffered); no copy within a chunk."""
    head = out.chunks()[0]
    if len(head) >= n:
        return head if len(head) == n else memoryview(head)[:n]
    parts = []
    left = n
    for chunk in out.chunks():
        if len(chunk) >= left:
            parts.append(chunk[:left])
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


# A TLS connection's OpenSSL state (its objects, record buffers and keys) comes from the loop thread's C heap, some
# tens of KiB. After a flood of handshakes the freed state leaves that heap's pages resident for good unless it is
# trimmed, so every ``_TRIM_EVERY`` connections let go ask for a trim, as a released large buffer does (the trim
# itself is at most one a second in the process).
_TRIM_EVERY = 32
_let_go_since_trim = 0


def _let_go(loop: EventLoop) -> None:
    global _let_go_since_trim
    _let_go_since_trim += 1  # a lost count under free threading only moves a trim
    if _let_go_since_trim >= _TRIM_EVERY:
        _let_go_since_trim = 0
        loop.heap_released()


def _sni(owner: object) -> str | None:
    # The name the client asked for is only visible to the context's sni_callback; record_sni stores it.
    return getattr(owner, "_netloop_sni", None)


# Whether this ssl module's contexts can wrap a socket without the Python SSLSocket (``_wrap_socket``, the call
# ``SSLSocket`` itself makes, on every CPython since 3.7).
_WRAP_BARE = hasattr(ssl.SSLContext, "_wrap_socket")


class _SniOwner:
    """What a server context's ``sni_callback`` is handed as the socket when there is no ``ssl.SSLSocket``: the
    name the client asked for is noted on it, and setting its ``context`` switches the connection's, as on an
    ``SSLSocket``. OpenSSL's object holds it by a weak reference: the connection keeps it."""

    __slots__ = ("__weakref__", "_netloop_sni", "_sslobj")
    _netloop_sni: str | None
    _sslobj: Any

    @property
    def context(self) -> ssl.SSLContext:
        context: ssl.SSLContext = self._sslobj.context
        return context

    @context.setter
    def context(self, ctx: ssl.SSLContext) -> None:
        self._sslobj.context = ctx


def _nothing_pending(obj: object) -> bool:
    return False


def _not_yet(data: object, flags: int = 0, /) -> int:
    raise ssl.SSLWantWriteError("the TLS handshake has not completed yet")


# Stands for the negotiated facts of a client connection whose handshake failed (it closes the ordinary way).
_NOT_OPENED = TlsInfo(None, None, None, None, None)


def open_tls(
    loop: EventLoop,
    sock: socket.SocketType,
    remote: Any,
    ctx: ssl.SSLContext,
    server_side: bool,
    server_hostname: str | None = None,
    connecting: bool = False,
    timeout: float | None = None,
    ready: threading.Event | None = None,
    proxy: ProxyInfo | None = None,
) -> TlsConn:
    """Serve the non-blocking ``sock`` over TLS on ``loop`` (loop thread): the handshake starts now, or once the
    connect completes (``connecting``). ``timeout`` (default ``tls_handshake_timeout``) covers both.

    The connection is the loop's from here (a stop closes it); ``on_open`` fires when the handshake completes.
    """
    kind = PreWriteTlsConn if loop.options.pre_write else TlsConn
    conn = kind(loop, sock, remote, ctx, server_side, server_hostname)
    conn._ready = ready
    conn._proxy = proxy
    loop.conns[conn._fd] = conn
    conn._start(connecting, timeout if timeout is not None else loop.options.tls_handshake_timeout)
    return conn
