"""Client connections (``netloop.Client``) and outbound connections attached to a server's loop.

Two ways in. From a thread that is not the target loop's, ``Client.dial``/``Client.enroll`` and
``EventLoop.register``/``enroll`` connect in the calling thread, hand the socket to the loop and return once
``on_open`` has run there. From a handler on the loop itself they never block: the connection comes back at once,
still connecting, and opens on a later turn of the loop (``on_open``, or ``on_close`` with the error). A host name
is then looked up on a thread of its own, never on the loop's.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

from netloop._address import Address, format_address, parse_address
from netloop._balancer import new_balancer
from netloop._conn import Buffer, Conn
from netloop._conn_variants import conn_class, conn_mask
from netloop._datagram import DATAGRAMS_PER_ROUND
from netloop._engine import EngineCore
from netloop._errors import AddressError, ConnClosedError, EngineStoppedError
from netloop._eventloop import EventLoop
from netloop._handler import EventHandler
from netloop._options import LoadBalancing, Options, make_options
from netloop._poller import ERR, HUP, IN, OUT
from netloop._tls import TlsConn, open_tls, prepare_context

# How often a thread waiting for a loop to take its socket checks that the loop is still alive.
_ALIVE_CHECK = 0.1
# A non-blocking connect that returns one of these is under way (or already done): wait for writability.
_CONNECTING = frozenset({0, errno.EINPROGRESS, errno.EINTR})
# Host names looked up for the loops at once, at most (more wait their turn); and how long a lookup thread with
# nothing to do stays.
_LOOKUP_THREADS = 8
_LOOKUP_IDLE = 10.0


class Client:
    """Outbound connections served by event loops, with the same events and ``Conn`` API as a server's.

    ``start()`` runs the loops (``num_event_loop`` threads, or one per CPU with ``multicore``); every new
    connection goes to the loop with the fewest connections. ``on_boot(engine)`` fires on start and
    ``on_shutdown(engine)`` on stop, with an ``Engine`` whose ``addrs`` is empty. ``on_tick`` works as for a
    server (``ticker=True``); ``Action.SHUTDOWN`` from any event stops the client. Options are those of
    ``netloop.start``; the listener-only ones (``backlog``, ``reuse_port``, ``load_balancing``...) have no effect,
    and ``workers`` is refused. Usable as a context manager: ``with Client(h) as client:`` starts and stops it.
    """

    def __init__(self, handler: EventHandler, *, options: Options | None = None, **kwargs: Any) -> None:
        opts = make_options(options, kwargs)
        if not isinstance(handler, EventHandler):
            raise TypeError(f"handler must be a netloop.EventHandler, got {type(handler).__name__}")
        if opts.worker_count():
            raise ValueError("workers is a server option: a Client's loops are threads of this process")
        self._core = EngineCore(handler, [], opts)
        # Guards start, and picking a loop together with counting the connection on it.
        self._lock = threading.Lock()
        self._started = False
        self._pick: Callable[[Any], EventLoop] | None = None

    def __repr__(self) -> str:
        state = "stopped" if self._core.stopped.is_set() else "running" if self._started else "new"
        return f"<netloop.Client {state} loops={len(self._core.loops)} conns={self.count_connections()}>"

    def __enter__(self) -> Client:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def loops(self) -> list[EventLoop]:
        """The event loops serving this client's connections (empty before ``start``)."""
        return list(self._core.loops)

    def count_connections(self) -> int:
        """Open connections over every loop (connections still connecting on a loop included)."""
        return self._core.count_connections()

    def start(self) -> None:
        """Start the loops; returns once they run and ``on_boot`` has returned. A client starts once."""
        with self._lock:
            if self._started:
                raise RuntimeError("this Client was already started")
            self._started = True
        self._core.start()
        self._pick = new_balancer(LoadBalancing.LEAST_CONNECTIONS, self._core.loops, EventLoop.load)

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: ``on_shutdown``, then flush and close every connection (``on_close`` for each).

        Thread-safe and idempotent. From a loop's own thread it only starts the stop; from any other thread it
        also waits up to ``timeout`` seconds (None: until stopped).
        """
        if self._started:
            self._core.engine.stop(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the client has stopped (``stop``, or ``Action.SHUTDOWN``); False if ``timeout`` passed."""
        return self._core.stopped.wait(timeout)

    def dial(
        self,
        addr: str,
        timeout: float | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Conn:
        """Connect to ``addr`` (``tcp://``, ``tcp6://``, ``udp://``, ``unix://``...) and serve it on a loop.

        Blocks the calling thread until connected, then returns once ``on_open`` has run on the connection's loop.
        A UDP address gives a connected UDP socket: ``on_traffic`` per datagram, ``write`` sends one.
        Raises ``ConnectionRefusedError``, ``TimeoutError`` (``timeout`` seconds passed; None waits as long as
        the OS does) or another ``OSError`` naming the address when no connection can be made, ``AddressError``
        for a bad address, ``EngineStoppedError`` when the client is not running, and ``RuntimeError`` when called
        from one of its loops (a handler uses ``conn.event_loop.register``). A failed dial leaves nothing behind:
        no descriptor, no registration, no event.

        With ``tls`` (an ``ssl.SSLContext``) it returns once the TLS handshake has completed and ``on_open`` has
        run; a failed handshake raises its ``ssl.SSLError`` (e.g. ``SSLCertVerificationError``). The context
        verifies the host name as the ``ssl`` module does: ``server_hostname`` defaults to the address's host.
        """
        address = parse_address(addr)
        self._check_caller()
        return self._place(connect(address, timeout), _tls_spec(address, tls, server_hostname))

    def enroll(self, sock: socket.socket) -> Conn:
        """Serve an already connected stream or datagram socket on a loop; returns once ``on_open`` has run.

        A socket that is not connected raises ``ValueError`` and stays the caller's; otherwise the client owns it
        from here on (if the client has stopped, it is closed and ``EngineStoppedError`` raised).
        """
        self._check_caller()
        return self._place(sock)

    def _check_caller(self) -> None:
        if not self._started or self._core.stopped.is_set():
            raise EngineStoppedError("the client is not running: call start() first")
        if self._core.on_loop_thread():
            raise RuntimeError("Client.dial/enroll block; from a handler use conn.event_loop.register/enroll")

    def _place(self, sock: socket.socket, tls: TlsSpec | None = None) -> Conn:
        pick = self._pick
        if pick is None:
            sock.close()
            raise EngineStoppedError("the client is not running")
        # Counted as it is picked, so that concurrent dials see each other and spread out. The client is the
        # only writer of its loops' ``assigned`` (they have no acceptor).
        _peer(sock)  # a socket that is not connected is refused (ValueError) before it is counted
        with self._lock:
            loop = pick(None)
            loop.assigned += 1
        # From here the loop's count is settled where the connection ends (a failed handshake included).
        return adopt(loop, sock, counted=True, tls=tls)


# -- the EventLoop.register / EventLoop.enroll entry points ------------------------------------------------


def dial_on_loop(
    loop: EventLoop,
    addr: str,
    timeout: float | None,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Conn:
    """``loop.register(addr)``: from the loop's thread, a connection that is still connecting; else like ``dial``.

    On the loop's thread a host name is looked up off the loop, and ``timeout`` counts the lookup too.
    """
    if loop.in_loop():
        named = _named(addr)
        if tls is not None:
            if named is not None:
                raise ValueError(f"{addr}: register with tls from the loop's thread takes a numeric host or a path")
            return _dial_tls_here(loop, parse_address(addr), timeout, tls, server_hostname)
        if named is not None:
            return _dial_name(loop, addr, *named, timeout)
        return _dial_here(loop, parse_address(addr), timeout)
    address = parse_address(addr)
    spec = _tls_spec(address, tls, server_hostname)
    return adopt(loop, connect(address, timeout), counted=False, tls=spec)


def enroll_on_loop(loop: EventLoop, sock: socket.socket) -> Conn:
    """``loop.enroll(sock)``: from the loop's thread, opened on a later turn of the loop; else like ``enroll``."""
    if not loop.in_loop():
        return adopt(loop, sock, counted=False)
    remote = _peer(sock)
    sock.setblocking(False)
    conn = _pending(loop, sock, remote)
    loop.call_soon(_open_later, conn)
    return conn


# -- blocking: connect in the caller's thread, then hand the socket to the loop ----------------------------


def connect(address: Address, timeout: float | None) -> socket.socket:
    """A socket connected to ``address``, waiting up to ``timeout`` seconds; an error names the address."""
    sock = socket.socket(address.family, address.socktype)
    try:
        sock.settimeout(timeout)
        sock.connect(address.sockaddr)
    except OSError as exc:
        sock.close()
        raise _dial_error(exc, address.text, timeout) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _dial_error(exc: OSError, text: str, timeout: float | None) -> OSError:
    """``exc`` as the same exception type and errno, with the address it concerns in its message."""
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return TimeoutError(errno.ETIMEDOUT, f"dial {text}: timed out after {timeout}s")
    if exc.errno is None:
        return exc
    return OSError(exc.errno, f"dial {text}: {exc.strerror}")


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


def adopt(loop: EventLoop, sock: socket.socket, counted: bool, tls: TlsSpec | None = None) -> Conn:
    """Hand the connected ``sock`` to ``loop`` and wait until ``on_open`` has run there (not on that loop's thread).

    ``counted``: the caller already counted the connection in ``loop.load()``. ``ValueError`` for a socket that
    is not connected (the caller keeps it); ``EngineStoppedError``, with the socket closed, when the loop is
    stopping.
    """
    remote = _peer(sock)
    sock.setblocking(False)
    handoff = _Handoff()

    def task() -> None:
        try:
            if handoff.take():
                handoff.conn = _open_now(loop, sock, remote, counted, tls)
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


def _open_now(loop: EventLoop, sock: socket.socket, remote: Any, counted: bool, tls: TlsSpec | None) -> Conn | None:
    """Register a connected socket and fire ``on_open`` (loop thread); None if the loop is stopping."""
    if not counted:
        _count(loop)
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
    conn = _datagram_conn(loop, sock, remote)
    loop.conns[conn._fd] = conn
    conn._open()
    return conn


# -- TLS ------------------------------------------------------------------------------------------------------

# A client TLS connection's context and the host name it checks the certificate against.
TlsSpec = tuple[ssl.SSLContext, "str | None"]


def _tls_spec(address: Address, tls: ssl.SSLContext | None, server_hostname: str | None) -> TlsSpec | None:
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
    """``register(addr, tls=...)`` on the loop's thread: connect and shake hands without blocking."""
    ctx, hostname = cast("TlsSpec", _tls_spec(address, tls, server_hostname))
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
    _count(loop)
    return open_tls(loop, sock, address.sockaddr, ctx, False, hostname, connecting=True, timeout=timeout)


# -- non-blocking: on the loop's own thread -----------------------------------------------------------------


def _dial_here(loop: EventLoop, address: Address, timeout: float | None) -> Conn:
    sock = socket.socket(address.family, address.socktype)
    try:
        sock.setblocking(False)
        code = sock.connect_ex(address.sockaddr)
    except BaseException:
        sock.close()
        raise
    conn = _pending(loop, sock, address.sockaddr)
    _connecting(conn, code, address)
    if timeout is not None and isinstance(conn, DialingConn):
        loop.call_later(timeout, _expire, conn, address.text, timeout)
    return conn


def _connecting(conn: DialingConn | DatagramClientConn, code: int, address: Address) -> None:
    """Carry on with ``conn`` once ``connect_ex`` gave ``code`` (loop thread)."""
    loop = conn._loop
    if code not in _CONNECTING:
        # Failed at once: the connection still comes back, and on_close reports the error after this callback.
        loop.call_soon(conn._close, _connect_error(code, address))
    elif isinstance(conn, DialingConn):
        # The first writability event tells how the connect went.
        conn._mask = OUT
        loop.attach(conn._fd, conn._on_io, OUT)
    else:
        loop.call_soon(_open_later, conn)  # a UDP connect completes at once


def _connect_error(code: int, address: Address) -> OSError:
    if code == errno.EAGAIN and address.family == socket.AF_UNIX:
        # A Unix listener with a full backlog: a blocking connect would wait, a loop can't.
        return ConnectionRefusedError(code, f"dial {address.text}: the listener's backlog is full")
    return OSError(code, f"dial {address.text}: {os.strerror(code)}")


def _expire(conn: Conn, text: str, timeout: float, lookup: _Lookup | None = None) -> None:
    # Still connecting: its name is being looked up, or it is a stream connection that has not opened yet.
    connecting = isinstance(conn, DialingConn) or (lookup is not None and lookup.pending)
    if connecting and not conn.closed:
        conn._close(TimeoutError(errno.ETIMEDOUT, f"dial {text}: timed out after {timeout}s"))


# -- a host name, on the loop's thread: looked up off the loop ----------------------------------------------


def _named(text: str) -> tuple[Address, str] | None:
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


def _dial_name(loop: EventLoop, text: str, hostless: Address, host: str, timeout: float | None) -> Conn:
    """``_dial_here`` for a host name: the connection comes back at once and connects once the name is looked up."""
    sock = socket.socket(hostless.family, hostless.socktype)
    try:
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    # Until the lookup answers, its address is the name.
    conn = _pending(loop, sock, (host, hostless.sockaddr[1]))
    lookup = _Lookup(conn, text)
    if timeout is not None:
        loop.call_later(timeout, _expire, conn, text, timeout, lookup)
    lookup.start()
    return conn


class _Lookup:
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
            conn._close(_dial_error(exc, answer.text, None))
            return
        if isinstance(conn, DatagramClientConn):
            self._release(conn, code)
        _connecting(conn, code, answer)

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
        if code in _CONNECTING:
            for data in held:
                if conn.closed:
                    break
                conn.write(data)


class _LookupThreads:
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


_LOOKUPS = _LookupThreads()
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
        _configure(conn._loop, fresh)
        os.dup2(fresh.fileno(), conn._fd, inheritable=False)
    # A socket object keeps the family it was made with, and parses and formats addresses by it.
    sock = socket.socket(family, old.type, old.proto, fileno=old.detach())
    sock.setblocking(False)
    conn._sock = sock
    conn._recv = sock.recv


def _configure(loop: EventLoop, sock: socket.socket) -> None:
    """The socket options a new connection's socket gets from ``_pending``."""
    if sock.type == socket.SOCK_STREAM:
        loop.configure(sock)
        return
    options = loop.options
    if options.socket_recv_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.socket_recv_buffer)
    if options.socket_send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.socket_send_buffer)


def _pending(loop: EventLoop, sock: socket.socket, remote: Any) -> DialingConn | DatagramClientConn:
    """One of the loop's connections for ``sock``, not watched yet: the caller sees it before ``on_open`` fires."""
    if not loop.accepting:
        sock.close()
        raise EngineStoppedError(f"event loop {loop.index} is stopping and takes no new connections")
    _count(loop)
    conn: DialingConn | DatagramClientConn
    if sock.type == socket.SOCK_DGRAM:
        conn = _datagram_conn(loop, sock, remote)
    else:
        loop.configure(sock)
        options = loop.options
        conn = _dialing_class(conn_class(options.edge_triggered, options.pre_write))(loop, sock, remote)
        conn._send = _not_yet
    loop.conns[conn._fd] = conn
    return conn


def _open_later(conn: DialingConn | DatagramClientConn) -> None:
    if not conn.closed:
        conn._open()


# -- shared by both paths -----------------------------------------------------------------------------------


def _peer(sock: socket.socket) -> Any:
    """The peer address of a connected stream or datagram socket; ``ValueError`` for anything else."""
    if sock.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        raise ValueError(f"cannot enroll {sock!r}: only stream and datagram sockets can be connections")
    try:
        return sock.getpeername()
    except OSError as exc:
        raise ValueError(f"cannot enroll {sock!r}: it is not connected ({exc.strerror})") from None


def _count(loop: EventLoop) -> None:
    """Count one more connection in ``loop.load()`` (loop thread only).

    ``assigned`` is written by the acceptor's thread and ``released`` by the loop's: one release fewer counts the
    connection without giving either counter a second writer.
    """
    loop.released -= 1


def _fire_open(conn: Conn) -> None:
    """Run ``on_open`` as the loop does for an accepted connection: a raise closes it, an action is applied."""
    conn._loop.open_conn(conn)


def _not_yet(data: object, flags: int = 0, /) -> int:
    # A dialing connection's writes are buffered until the connect completes.
    raise BlockingIOError(errno.EAGAIN, "not connected yet")


# -- connection classes -------------------------------------------------------------------------------------


class DialingConn(Conn):
    """A stream connection whose connect is still in progress (``register``/``enroll`` on the loop's thread).

    It is one of the loop's connections already: ``write`` buffers (the bytes go out once connected, in order),
    ``close`` works, reading waits. The first readiness event tells the connect's outcome: on success the object
    becomes an instance of ``opened`` (the loop's ordinary connection class) and ``on_open`` fires; on failure
    ``on_close`` gets the error. Closed before connecting, ``on_close`` gets ``ConnectionAbortedError``.
    """

    __slots__ = ()
    opened: ClassVar[type[Conn]] = Conn

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
        self._send = self._sock.send
        mask = conn_mask(loop.options.edge_triggered)
        loop.detach(fd)
        self._mask = mask
        loop.attach(fd, self._on_io, mask)
        _fire_open(self)
        self._update_interest()
        self.flush()

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


def _dialing_class(opened: type[Conn]) -> type[DialingConn]:
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
        _fire_open(self)

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
        if self.closed:
            raise ConnClosedError(f"write on closed connection {self!r}")
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


def _datagram_conn(loop: EventLoop, sock: socket.socket, remote: Any) -> DatagramClientConn:
    options = loop.options
    if options.socket_recv_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.socket_recv_buffer)
    if options.socket_send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.socket_send_buffer)
    return DatagramClientConn(loop, sock, remote)
