"""Host names looked up off the loop: a connection dialed by name on its loop's thread waits for its address.

The lookups of every loop of the process run on a few daemon threads (``_LOOKUP_THREADS``), never on a loop's
own: a resolver that takes seconds holds up that one connection, not the loop.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from netloop._address import Address, parse_address
from netloop._conn import Buffer, Conn
from netloop._errors import AddressError, EngineStoppedError
from netloop._outbound_conn import (
    CONNECTING,
    DatagramClientConn,
    DialingConn,
    configure,
    connecting,
    dial_error,
    expire,
    pending,
)

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop


# Host names looked up for the loops at once, at most (more wait their turn); and how long a lookup thread with
# nothing to do stays.
_LOOKUP_THREADS = 8


_LOOKUP_IDLE = 10.0


def named_host(text: str) -> tuple[Address, str] | None:
    """(``text`` parsed without its host, the host) when that host is a name to look up; else None.

    None for a numeric host, a Unix path, or an address that ``parse_address`` refuses before any lookup. The
    address without its host (``tcp://:port``) is parsed without a lookup: that checks the scheme and the port, and
    gives the socket type and the family the scheme implies (IPv4 for ``tcp://``).
    """
    if not isinstance(text, str):
        return None
    scheme, sep, rest = text.partition("://")
    head, colon, port = rest.rpartition(":")
    host = head[1:-1] if head[:1] == "[" and head[-1:] == "]" else head
    if not sep or not colon or not host or (":" in host and host == head):
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None
    try:
        hostless = parse_address(f"{scheme}://:{port}")
    except AddressError:
        return None
    return (hostless, host) if hostless.network != "unix" else None


def dial_name(loop: EventLoop, text: str, hostless: Address, host: str, timeout: float | None) -> Conn:
    """``_dial_here`` for a host name: the connection comes back at once and connects once the name is looked up."""
    sock = socket.socket(hostless.family, hostless.socktype)
    try:
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    # Until the lookup answers, its address is the name.
    conn = pending(loop, sock, (host, hostless.sockaddr[1]))
    lookup = Lookup(conn, text)
    if timeout is not None:
        loop.call_later(timeout, expire, conn, text, timeout, lookup)
    lookup.start()
    return conn


class Lookup:
    """A host name looked up on a thread of its own for a connection that waits on its loop.

    A stream connection buffers what is written meanwhile, as while it connects; a datagram connection's socket is
    not connected yet, so its datagrams wait here (up to ``write_buffer_cap`` bytes; beyond, they are dropped as a
    full socket drops them) and go out once it is.
    """

    __slots__ = ("conn", "held", "held_size", "pending", "text")

    def __init__(self, conn: DialingConn | DatagramClientConn, text: str) -> None:
        self.conn = conn
        self.text = text
        self.pending = True
        self.held: list[bytes] = []
        self.held_size = 0
        if isinstance(conn, DatagramClientConn):
            conn._send = self._hold

    def start(self) -> None:
        try:
            _LOOKUPS.submit(self._look_up)
        except RuntimeError as exc:
            # No thread to be had: the connection fails as a failed lookup does, after this callback.
            error = AddressError(f"address {self.text!r}: cannot look up its host now ({exc})")
            self.conn._loop.call_soon(self._answer, error)

    def _look_up(self) -> None:
        """On a lookup thread: resolve, then hand the answer to the loop."""
        try:
            answer: Address | Exception = parse_address(self.text)
        except Exception as exc:
            answer = exc if isinstance(exc, AddressError) else AddressError(f"address {self.text!r}: {exc}")
        try:
            self.conn._loop.submit(self._answer, answer)
        except EngineStoppedError:
            pass  # the loop has stopped, and closed the connection

    def _answer(self, answer: Address | Exception) -> None:
        """Connect ``conn`` to the address looked up, or close it with the error (loop thread)."""
        self.pending = False
        conn = self.conn
        if conn.closed:
            return  # closed meanwhile (by the handler, its timeout, a stop), and so is its socket
        if isinstance(answer, Exception):
            conn._close(answer)
            return
        conn._remote = answer.sockaddr
        conn._local = None
        try:
            code = _connect_looked_up(conn, answer)
        except OSError as exc:
            conn._close(dial_error(exc, answer.text, None))
            return
        if isinstance(conn, DatagramClientConn):
            self._release(conn, code)
        connecting(conn, code, answer)

    def _hold(self, data: object, flags: int = 0, /) -> int:
        """The datagram connection's ``send`` until its socket is connected."""
        datagram = bytes(cast("Buffer", data))
        if self.held_size + len(datagram) > self.conn._loop.high_water:
            raise BlockingIOError(errno.EAGAIN, "too many datagrams wait for the name's lookup")
        self.held.append(datagram)
        self.held_size += len(datagram)
        return len(datagram)

    def _release(self, conn: DatagramClientConn, code: int) -> None:
        """Send the held datagrams, in order, now that the socket is connected."""
        conn._send = conn._sock.send
        held, self.held = self.held, []
        if code in CONNECTING:
            for data in held:
                if conn.closed:
                    break
                conn.write(data)


class LookupThreads:
    """Up to ``_LOOKUP_THREADS`` daemon threads that run the lookups of every loop of the process.

    A job gets a thread at once while there are fewer than that busy; more wait their turn. Daemon threads: a
    lookup stuck in the resolver never holds up the interpreter's exit. A thread that has had nothing to do for
    ``_LOOKUP_IDLE`` seconds ends; a forked child starts with none.
    """

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._jobs: deque[Callable[[], None]] = deque()
        self._threads = 0
        self._waiting = 0  # threads waiting for a job

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on a lookup thread; ``RuntimeError`` when one was needed and could not start."""
        with self._ready:
            # Every waiting thread is spoken for by a job already queued: this one needs a thread of its own.
            if len(self._jobs) >= self._waiting and self._threads < _LOOKUP_THREADS:
                threading.Thread(target=self._work, name="netloop-lookup", daemon=True).start()
                self._threads += 1
            self._jobs.append(job)
            self._ready.notify()

    def _work(self) -> None:
        while True:
            with self._ready:
                self._waiting += 1
                while not self._jobs:
                    if not self._ready.wait(_LOOKUP_IDLE) and not self._jobs:
                        self._waiting -= 1
                        self._threads -= 1
                        return
                self._waiting -= 1
                job = self._jobs.popleft()
            try:
                job()  # a lookup hands its errors to its loop: nothing is expected here
            except BaseException:
                with self._ready:
                    self._threads -= 1
                raise

    def forget(self) -> None:
        """In a forked child: the parent's threads are not there, and its loops' lookups are not this process's."""
        self._ready = threading.Condition(threading.Lock())
        self._jobs = deque()
        self._threads = self._waiting = 0


_LOOKUPS = LookupThreads()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_LOOKUPS.forget)


def _connect_looked_up(conn: DialingConn | DatagramClientConn, address: Address) -> int:
    """Start connecting ``conn``'s socket to ``address``; ``connect_ex``'s code."""
    if conn._sock.family != address.family:
        _refit(conn, address.family)
    return conn._sock.connect_ex(address.sockaddr)


def _refit(conn: DialingConn | DatagramClientConn, family: int) -> None:
    """Give ``conn`` a socket of ``family`` in place of its own, under the same descriptor (its loop's key for it).

    The socket was made with the family the scheme implies (IPv4 for ``tcp://``) before the name was looked up,
    and the name has addresses of the other family only.
    """
    old = conn._sock
    with socket.socket(family, old.type, old.proto) as fresh:
        fresh.setblocking(False)
        configure(conn._loop, fresh)
        os.dup2(fresh.fileno(), conn._fd, inheritable=False)
    # A socket object keeps the family it was made with, and parses and formats addresses by it.
    sock = socket.socket(family, old.type, old.proto, fileno=old.detach())
    sock.setblocking(False)
    conn._sock = sock
    conn._recv = sock.recv
