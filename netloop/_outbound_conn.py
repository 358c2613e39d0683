"""Outbound connections on a loop: a stream connection still connecting, and a connected UDP socket.

``pending`` puts a new connection on its loop before it opens (the caller sees it first); ``connecting`` carries
on once ``connect_ex`` has answered. The socket's first writability tells a ``DialingConn`` how its connect went,
and it then becomes an instance of the loop's ordinary connection class.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from netloop._address import Address, format_address
from netloop._conn import Buffer, Conn
from netloop._conn_variants import conn_mask
from netloop._datagram import DATAGRAMS_PER_ROUND
from netloop._errors import ConnClosedError, EngineStoppedError
from netloop._lifecycle import (
    CLOSED,
    DIAL_TIMEOUT,
    DIALING,
    DROP,
    FINISHED,
    OPENED,
    REFUSE,
    SHUT_WR,
    SHUTTING,
    STATE_NAMES,
    WRITES,
    next_state,
)
from netloop._poller import ERR, HUP, IN, OUT

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop
    from netloop._lookup import Lookup


# A non-blocking connect that returns one of these is under way (or already done): wait for writability.
CONNECTING = frozenset({0, errno.EINPROGRESS, errno.EINTR})


def dial_error(exc: OSError, text: str, timeout: float | None) -> OSError:
    """``exc`` as the same exception type and errno, with the address it concerns in its message."""
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return TimeoutError(errno.ETIMEDOUT, f"dial {text}: timed out after {timeout}s")
    if exc.errno is None:
        return exc
    return OSError(exc.errno, f"dial {text}: {exc.strerror}")


def connecting(conn: DialingConn | DatagramClientConn, code: int, address: Address) -> None:
    """Carry on with ``conn`` once ``connect_ex`` gave ``code`` (loop thread)."""
    loop = conn._loop
    if code not in CONNECTING:
        # Failed at once: the connection still comes back, and on_close reports the error after this callback.
        loop.call_soon(conn._close, _connect_error(code, address))
    elif isinstance(conn, DialingConn):
        # The first writability event tells how the connect went.
        conn._mask = OUT
        loop.attach(conn._fd, conn._on_io, OUT)
    else:
        loop.call_soon(open_later, conn)  # a UDP connect completes at once


def _connect_error(code: int, address: Address) -> OSError:
    if code == errno.EAGAIN and address.family == socket.AF_UNIX:
        # A Unix listener with a full backlog: a blocking connect would wait, a loop can't.
        return ConnectionRefusedError(code, f"dial {address.text}: the listener's backlog is full")
    return OSError(code, f"dial {address.text}: {os.strerror(code)}")


def expire(conn: Conn, text: str, timeout: float, lookup: Lookup | None = None) -> None:
    # Still connecting: its name is being looked up, or it is a stream connection that has not opened yet.
    connecting = isinstance(conn, DialingConn) or (lookup is not None and lookup.pending)
    if connecting and not conn.closed and next_state(conn._state, DIAL_TIMEOUT) == CLOSED:
        conn._close(TimeoutError(errno.ETIMEDOUT, f"dial {text}: timed out after {timeout}s"))


def pending(loop: EventLoop, sock: socket.socket, remote: Any) -> DialingConn | DatagramClientConn:
    """One of the loop's connections for ``sock``, not watched yet: the caller sees it before ``on_open`` fires."""
    if not loop.accepting:
        sock.close()
        raise EngineStoppedError(f"event loop {loop.index} is stopping and takes no new connections")
    count_on(loop)
    conn: DialingConn | DatagramClientConn
    if sock.type == socket.SOCK_DGRAM:
        conn = datagram_conn(loop, sock, remote)
    else:
        loop.configure(sock)
        conn = dialing_class(loop._conn_class)(loop, sock, remote)  # the loop's class: debug mode's checks included
        conn._send = _not_yet
    loop.conns[conn._fd] = conn
    return conn


def open_later(conn: DialingConn | DatagramClientConn) -> None:
    if not conn.closed:
        conn._open()


def peer_of(sock: socket.socket) -> Any:
    """The peer address of a connected stream or datagram socket; ``ValueError`` for anything else."""
    if sock.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        raise ValueError(f"cannot enroll {sock!r}: only stream and datagram sockets can be connections")
    try:
        return sock.getpeername()
    except OSError as exc:
        raise ValueError(f"cannot enroll {sock!r}: it is not connected ({exc.strerror})") from None


def count_on(loop: EventLoop) -> None:
    """Count one more connection in ``loop.load()`` (loop thread only).

    ``assigned`` is written by the acceptor's thread and ``released`` by the loop's: one release fewer counts the
    connection without giving either counter a second writer.
    """
    loop.released -= 1


def fire_open(conn: Conn) -> None:
    """Run ``on_open`` as the loop does for an accepted connection: a raise closes it, an action is applied."""
    conn._loop.open_conn(conn)


def _not_yet(data: object, flags: int = 0, /) -> int:
    # A dialing connection's writes are buffered until the connect completes.
    raise BlockingIOError(errno.EAGAIN, "not connected yet")


def configure(loop: EventLoop, sock: socket.socket) -> None:
    """The socket options a new connection's socket gets from ``pending``."""
    loop.configure(sock)  # TCP's options only to a TCP stream


class DialingConn(Conn):
    """A stream connection whose connect is still in progress (``dial``/``enroll`` on the loop's thread).

    It is one of the loop's connections already: ``write`` buffers (the bytes go out once connected, in order),
    ``close`` works, reading waits. The first readiness event tells the connect's outcome: on success the object
    becomes an instance of ``opened`` (the loop's ordinary connection class) and ``on_open`` fires; on failure
    ``on_close`` gets the error. Closed before connecting, ``on_close`` gets ``ConnectionAbortedError``.
    """

    __slots__ = ()
    opened: ClassVar[type[Conn]] = Conn
    _initial = DIALING

    def _on_io(self, ev: int) -> None:
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._close(OSError(code, f"dial {self._url()}: {os.strerror(code)}"))
        else:
            self._open()

    def _open(self) -> None:
        """Become an ordinary connection, watch it as the loop does, fire ``on_open``, send what was written."""
        loop = self._loop
        fd = self._fd
        # From here on it is an ordinary connection: the hot paths carry no "still connecting" check.
        conn: Conn = self
        conn.__class__ = self.opened
        self._to(OPENED)
        self._send = self._sock.send
        mask = conn_mask(loop.options.edge_triggered)
        loop.detach(fd)
        self._mask = mask
        loop.attach(fd, self._on_io, mask)
        fire_open(self)
        self._update_interest()
        self.flush()
        if self._state == SHUTTING and not self._outbound._size:
            self._flushed()  # shutdown_write while connecting: our FIN waited for the connect, and nothing precedes it

    def shutdown_write(self) -> None:
        # Our FIN waits for the connect, as bytes written meanwhile do (a FIN now would leave a connecting socket
        # half-shut before it opened): the state says it is asked for, and _open sends it.
        if FINISHED[self._state]:
            raise ConnClosedError(f"shutdown_write on closed connection {self!r}")
        if next_state(self._state, SHUT_WR) != self._state:
            self._to(SHUT_WR)

    def writev(self, chunks: Sequence[Buffer]) -> int:
        # One write per chunk keeps on_pre_write and the buffering of write; no gather write before connecting.
        return sum(self.write(chunk) for chunk in chunks)

    def flush(self) -> None:
        pass

    def _update_interest(self) -> None:
        # Only writability, the connect's outcome, is watched until then.
        pass

    def _resume_reading(self) -> None:
        pass

    def _close_request(self, err: BaseException | None) -> None:
        # Bytes written meanwhile go out once connected, before the close; with none there is nothing to wait for.
        if self._outbound._size:
            super()._close_request(err)
        else:
            self._close(err)

    def _finish(self) -> None:
        self._close_request(None)

    def _close(self, err: BaseException | None) -> None:
        if err is None and not self.closed:
            err = ConnectionAbortedError(errno.ECONNABORTED, f"dial {self._url()}: closed before it connected")
        super()._close(err)

    def _url(self) -> str:
        family = self._sock.family
        return format_address("unix" if family == socket.AF_UNIX else "tcp", family, self._remote)


_DIALING: dict[type[Conn], type[DialingConn]] = {Conn: DialingConn}


def dialing_class(opened: type[Conn]) -> type[DialingConn]:
    """The dialing variant of the loop's connection class; same layout, so ``__class__`` can switch to it."""
    dialing = _DIALING.get(opened)
    if dialing is None:
        namespace = {"__slots__": (), "opened": opened}
        dialing = cast("type[DialingConn]", type(f"Dialing{opened.__name__}", (DialingConn, opened), namespace))
        # Several loops may race here; either class works, and the dict keeps one.
        dialing = _DIALING.setdefault(opened, dialing)
    return dialing


class DatagramClientConn(Conn):
    """A connected UDP socket as a connection: ``on_traffic`` once per datagram, ``write`` sends one datagram.

    A datagram is readable during its ``on_traffic`` only: its unread rest is dropped, and an empty datagram is a
    datagram, not the end of a stream. A datagram the kernel has no room for is dropped (``write`` returns 0). An
    ICMP "port unreachable" for an earlier datagram closes the connection with ``ConnectionRefusedError``.
    """

    __slots__ = ()
    _inline = False

    def _open(self) -> None:
        """Start reading and fire ``on_open`` (loop thread)."""
        self._mask = IN
        self._loop.attach(self._fd, self._on_io, IN)
        fire_open(self)

    def _on_io(self, ev: int) -> None:
        recv = self._recv
        size = self._loop.read_size
        for _ in range(DATAGRAMS_PER_ROUND):
            if not self._wants_read():
                if ev & (ERR | HUP) and not self.closed:
                    self._hang_up(ev)  # reported whatever the interest mask: an error ends it, never a spin
                return
            try:
                data = recv(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._close(exc)
                return
            self._data = data
            self._deliver()

    def _keep_rest(self) -> None:
        # A datagram's unread rest is dropped: the next on_traffic is the next datagram.
        self._data = b""
        self._pos = 0

    def _close_request(self, err: BaseException | None) -> None:
        # Nothing is buffered and there is no FIN to send: a datagram socket closes at once.
        self._close(err if self._err is None else self._err)

    def _finish(self) -> None:
        self._close(None)

    def write(self, data: Buffer) -> int:
        """*loop* Send ``data`` as one datagram; returns ``len(data)``, or 0 when the kernel dropped it."""
        writes = WRITES[self._state]
        if writes == REFUSE:
            what = "connection" if self.closed else f"{STATE_NAMES[self._state]} connection"
            raise ConnClosedError(f"write on {what} {self!r}")
        if writes == DROP:
            return 0  # a send already failed; the connection is closing with that error
        try:
            self._send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._fail_soon(exc)
            return 0
        return len(data)

    def writev(self, chunks: Sequence[Buffer]) -> int:
        """*loop* Send the chunks joined as one datagram."""
        return self.write(b"".join(chunks))


def datagram_conn(loop: EventLoop, sock: socket.socket, remote: Any) -> DatagramClientConn:
    configure(loop, sock)
    return DatagramClientConn(loop, sock, remote)
