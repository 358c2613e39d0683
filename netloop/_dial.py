"""Dialing and enrolling: a connected socket taken in by a loop, and ``EventLoop.dial``/``enroll``.

Two ways in. From a thread that is not the target loop's, ``Client.dial``/``Client.enroll`` and
``EventLoop.dial``/``enroll`` connect in the calling thread, hand the socket to the loop and return once
``on_open`` has run there (``enroll_and_wait``). From a handler on the loop itself they never block: the
connection comes back at once, still connecting, and opens on a later turn of the loop (``on_open``, or
``on_close`` with the error). A host name is then looked up on a thread of its own, never on the loop's
(``netloop._lookup``).

This module is below the event loop: it sees a loop only through the methods it calls.
"""

from __future__ import annotations

import socket
import ssl
import threading
from typing import TYPE_CHECKING, Any, cast

from netloop._address import Address, parse_address
from netloop._conn import Conn
from netloop._errors import EngineStoppedError
from netloop._lookup import dial_name, named_host
from netloop._outbound_conn import (
    DialingConn,
    connecting,
    count_on,
    datagram_conn,
    dial_error,
    expire,
    open_later,
    peer_of,
    pending,
)
from netloop._tls import TlsConn, open_tls, prepare_context

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop


# How often a thread waiting for a loop to take its socket checks that the loop is still alive.
_ALIVE_CHECK = 0.1


def dial_on_loop(
    loop: EventLoop,
    addr: str,
    timeout: float | None,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Conn:
    """``loop.dial(addr)``: from the loop's thread, a connection that is still connecting; else like ``dial``.

    On the loop's thread a host name is looked up off the loop, and ``timeout`` counts the lookup too.
    """
    if loop.in_loop():
        named = named_host(addr)
        if tls is not None:
            if named is not None:
                raise ValueError(f"{addr}: dial with tls from the loop's thread takes a numeric host or a path")
            return _dial_tls_here(loop, parse_address(addr), timeout, tls, server_hostname)
        if named is not None:
            return dial_name(loop, addr, *named, timeout)
        return _dial_here(loop, parse_address(addr), timeout)
    address = parse_address(addr)
    spec = tls_spec(address, tls, server_hostname)
    return enroll_and_wait(loop, connect(address, timeout), counted=False, tls=spec)


def enroll_on_loop(loop: EventLoop, sock: socket.socket) -> Conn:
    """``loop.enroll(sock)``: from the loop's thread, opened on a later turn of the loop; else like ``enroll``."""
    if not loop.in_loop():
        return enroll_and_wait(loop, sock, counted=False)
    remote = peer_of(sock)
    sock.setblocking(False)
    conn = pending(loop, sock, remote)
    loop.call_soon(open_later, conn)
    return conn


def connect(address: Address, timeout: float | None) -> socket.socket:
    """A socket connected to ``address``, waiting up to ``timeout`` seconds; an error names the address."""
    sock = socket.socket(address.family, address.socktype)
    try:
        sock.settimeout(timeout)
        sock.connect(address.sockaddr)
    except OSError as exc:
        sock.close()
        raise dial_error(exc, address.text, timeout) from None
    except BaseException:
        sock.close()
        raise
    return sock


class _Handoff:
    """A socket on its way to a loop: exactly one of the loop's task and the waiting thread gets to use it."""

    def __init__(self) -> None:
        self.conn: Conn | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._taken = False

    def take(self) -> bool:
        with self._lock:
            taken, self._taken = self._taken, True
        return not taken


def enroll_and_wait(loop: EventLoop, sock: socket.socket, counted: bool, tls: TlsSpec | None = None) -> Conn:
    """Hand the connected ``sock`` to ``loop`` and wait until ``on_open`` has run there (not on that loop's thread).

    ``counted``: the caller already counted the connection in ``loop.load()``. ``ValueError`` for a socket that
    is not connected (the caller keeps it); ``EngineStoppedError``, with the socket closed, when the loop is
    stopping.
    """
    remote = peer_of(sock)
    sock.setblocking(False)
    handoff = _Handoff()

    def task() -> None:
        try:
            if handoff.take():
                handoff.conn = _add_now(loop, sock, remote, counted, tls)
        finally:
            handoff.done.set()

    try:
        loop.submit(task)
    except EngineStoppedError:
        sock.close()
        raise
    # A loop that stops before running the task drops it: notice that instead of waiting forever.
    while not handoff.done.wait(_ALIVE_CHECK):
        if loop.core.stopped.is_set() and handoff.take():
            sock.close()
            break
    conn = handoff.conn
    if conn is None:
        raise EngineStoppedError(f"event loop {loop.index} is stopping; the connection was closed")
    if isinstance(conn, TlsConn) and conn._ready is not None:
        conn._ready.wait()  # the handshake's own timeout bounds it
        if conn.tls is None:
            raise conn._err or EngineStoppedError("the TLS handshake did not complete")
    return conn


def _add_now(loop: EventLoop, sock: socket.socket, remote: Any, counted: bool, tls: TlsSpec | None) -> Conn | None:
    """Register a connected socket and fire ``on_open`` (loop thread); None if the loop is stopping."""
    if not counted:
        count_on(loop)
    if tls is not None:
        if not loop.accepting:
            loop.released += 1
            sock.close()
            return None
        loop.configure(sock)
        ctx, hostname = tls
        return open_tls(loop, sock, remote, ctx, False, hostname, ready=threading.Event())
    if sock.type != socket.SOCK_DGRAM:
        return loop.add_conn(sock, remote)
    if not loop.accepting:
        loop.released += 1
        sock.close()
        return None
    conn = datagram_conn(loop, sock, remote)
    loop.conns[conn._fd] = conn
    conn._open()
    return conn


# A client TLS connection's context and the host name it checks the certificate against.
TlsSpec = tuple[ssl.SSLContext, "str | None"]


def tls_spec(address: Address, tls: ssl.SSLContext | None, server_hostname: str | None) -> TlsSpec | None:
    if tls is None:
        return None
    if not isinstance(tls, ssl.SSLContext):
        raise TypeError(f"tls must be an ssl.SSLContext, got {type(tls).__name__}")
    if address.network != "tcp" and address.network != "unix":
        raise ValueError(f"{address.text}: TLS needs a stream address")
    prepare_context(tls)
    if server_hostname is None and address.family != socket.AF_UNIX:
        server_hostname = address.host
    if server_hostname is None and tls.check_hostname:
        raise ValueError(f"{address.text}: the context checks host names: give server_hostname=")
    return tls, server_hostname


def _dial_tls_here(
    loop: EventLoop, address: Address, timeout: float | None, tls: ssl.SSLContext, server_hostname: str | None
) -> Conn:
    """``loop.dial(addr, tls=...)`` on the loop's thread: connect and shake hands without blocking."""
    ctx, hostname = cast("TlsSpec", tls_spec(address, tls, server_hostname))
    if not loop.accepting:
        raise EngineStoppedError(f"event loop {loop.index} is stopping and takes no new connections")
    sock = socket.socket(address.family, address.socktype)
    try:
        sock.setblocking(False)
        loop.configure(sock)
        sock.connect_ex(address.sockaddr)  # an error shows as the first writability event's SO_ERROR
    except BaseException:
        sock.close()
        raise
    count_on(loop)
    return open_tls(loop, sock, address.sockaddr, ctx, False, hostname, connecting=True, timeout=timeout)


def _dial_here(loop: EventLoop, address: Address, timeout: float | None) -> Conn:
    sock = socket.socket(address.family, address.socktype)
    try:
        sock.setblocking(False)
        code = sock.connect_ex(address.sockaddr)
    except BaseException:
        sock.close()
        raise
    conn = pending(loop, sock, address.sockaddr)
    connecting(conn, code, address)
    if timeout is not None and isinstance(conn, DialingConn):
        loop.call_later(timeout, expire, conn, address.text, timeout)
    return conn
