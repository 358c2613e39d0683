"""``netloop.Client``: outbound connections served by event loops of their own."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from netloop._address import parse_address
from netloop._balancer import new_balancer
from netloop._conn import Conn
from netloop._dial import TlsSpec, connect, enroll_and_wait, tls_spec
from netloop._engine import EngineCore
from netloop._errors import EngineStoppedError
from netloop._eventloop import EventLoop
from netloop._handler import EventHandler
from netloop._options import LoadBalancing, Options, make_options
from netloop._outbound_conn import peer_of


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
        """Block until the client has stopped (``stop``, or ``Action.SHUTDOWN``); False if ``timeout`` passed.

        Ctrl-C (``KeyboardInterrupt``) while waiting stops the client gracefully and returns True once stopped.
        """
        return self._core.wait(timeout)

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
        from one of its loops (a handler uses ``conn.event_loop.dial``). A failed dial leaves nothing behind:
        no descriptor, no registration, no event.

        With ``tls`` (an ``ssl.SSLContext``) it returns once the TLS handshake has completed and ``on_open`` has
        run; a failed handshake raises its ``ssl.SSLError`` (e.g. ``SSLCertVerificationError``). The context
        verifies the host name as the ``ssl`` module does: ``server_hostname`` defaults to the address's host.
        """
        address = parse_address(addr)
        self._check_caller()
        return self._place(connect(address, timeout), tls_spec(address, tls, server_hostname))

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
            raise RuntimeError("Client.dial/enroll block; from a handler use conn.event_loop.dial/enroll")

    def _place(self, sock: socket.socket, tls: TlsSpec | None = None) -> Conn:
        pick = self._pick
        if pick is None:
            sock.close()
            raise EngineStoppedError("the client is not running")
        # Counted as it is picked, so that concurrent dials see each other and spread out. The client is the
        # only writer of its loops' ``assigned`` (they have no acceptor).
        peer_of(sock)  # a socket that is not connected is refused (ValueError) before it is counted
        with self._lock:
            loop = pick(None)
            loop.assigned += 1
        # From here the loop's count is settled where the connection ends (a failed handshake included).
        return enroll_and_wait(loop, sock, counted=True, tls=tls)
