"""One event loop: a poller, the connections it owns, a task queue for other threads, and timers."""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import socket
import ssl
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from netloop import _async_hooks, _compiled
from netloop import _loop_body as loop_body
from netloop import _loop_stats as loop_stats
from netloop import _loop_stop as loop_stop
from netloop._conn import (
    ABOVE_CAP,
    BY_ERROR,
    BY_LIMIT,
    CAUSES,
    NO_INBOUND,
    NO_OUTBOUND,
    PAUSED_BY_PRESSURE,
    Conn,
)
from netloop._conn_variants import conn_class, conn_mask
from netloop._dial import dial_on_loop, enroll_on_loop
from netloop._errors import EngineStoppedError
from netloop._handler import Action, EventHandler
from netloop._heap import fit_allocator, release_soon
from netloop._networks import allowed, parse_networks
from netloop._options import Options
from netloop._poller import IN, Poller, new_poller
from netloop._proxy_parse import Mode, ProxyInfo
from netloop._proxy_reader import ProxyHeaderReader
from netloop._sockopts import socket_configurator
from netloop._timeouts import TimeoutWheel
from netloop._wakeup import SignalWake, wake_pair, wake_write

if TYPE_CHECKING:
    from netloop._engine import EngineCore

Task = tuple[Callable[..., object], tuple[Any, ...]]

# The compiled loop, where the compiled core is in use and has one (epoll: Linux).


def _cancelled(*args: Any) -> None:
    """What a cancelled timer holds instead of its callback."""


class Timer:
    """A scheduled call; ``cancel()`` it from the loop's thread."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        # The timer stays in the heap until its time: let go of what it would have called (often a connection).
        self.cancelled = True
        self.callback = _cancelled
        self.args = ()


class EventLoop:
    """Runs ``poll → dispatch by fd → queued tasks → due timers`` on one thread.

    The public protocol: ``index``, ``options``, ``submit`` (any thread), ``call_soon``, ``call_later``,
    ``in_loop``, ``dial``, ``enroll`` and ``count_connections``; everything else is the loop's own. Other threads
    hand work in with ``submit``; the loop is woken (eventfd, else a pipe) only when it is asleep in ``poll`` and no
    wake-up is already pending. A task handed in is either run or refused with ``EngineStoppedError`` at once:
    never dropped.
    """

    def __init__(self, index: int, core: EngineCore, handler: EventHandler, options: Options) -> None:
        self.index = index
        self.core = core
        self.handler = handler
        self.options = options
        self.log: logging.Logger = options.get_logger()
        self.poller: Poller = new_poller(options.poller)
        try:
            if options.edge_triggered and not self.poller.supports_edge:
                raise ValueError(f"edge_triggered needs epoll or kqueue; the {self.poller.name} poller can't")
            self._wake_r, self._wake_w = wake_pair()
        except BaseException:
            self.poller.close()
            raise
        self.read_size = options.read_buffer_cap
        fit_allocator(self.read_size)
        self.high_water = options.write_buffer_cap
        self.low_water = options.write_buffer_cap // 2
        self.write_limit = options.write_buffer_limit
        # Unconsumed inbound bytes: reading pauses at inbound_cap (0: never), the connection closes past inbound_limit.
        self.inbound_cap = options.inbound_cap
        self.inbound_limit = options.inbound_limit
        # The pause bit a connection takes when its outbound passes the high-water mark: one that holds reading,
        # or (backpressure_pause=False) one that only waits for the drain.
        self.pressure_bit = PAUSED_BY_PRESSURE if options.backpressure_pause else ABOVE_CAP
        self.linger = options.linger_timeout
        # The loop's clock as of this iteration (read once per iteration while timers exist).
        self.now = time.monotonic()
        self.timeouts: TimeoutWheel | None = None
        # How long a message begun with Conn.start_message may take (read_timeout); None: no deadline.
        self.message_timeout = options.read_timeout
        if options.idle_timeout is not None or options.read_timeout is not None:
            self.timeouts = TimeoutWheel(self, options.idle_timeout, options.read_timeout)
        self._conn_class = conn_class(options.edge_triggered, options.pre_write)
        self._conn_mask = conn_mask(options.edge_triggered)
        self.configure = socket_configurator(options)
        """Apply the connection socket options to a new connection's socket (decided once per loop)."""
        self._handlers: dict[int, Callable[[int], None]] = {}
        self.conns: dict[int, Conn] = {}
        # Every watched descriptor: the accepted level-triggered connection whose plain "readable" events the
        # inlined read path in run handles, else None (a lookup that never misses is the cheap one).
        self.readers: dict[int, Conn | None] = {}
        self.inline_reads = not options.edge_triggered
        # PROXY protocol: the mode ("v1", "v2", "auto") and the networks allowed to send it (None: any).
        self.proxy_mode: Mode | None = _PROXY_MODES.get(options.proxy_protocol)
        self.proxy_networks = parse_networks(options.proxy_protocol_from)
        # Connections whose PROXY header is still being read, by descriptor.
        self.pending: dict[int, ProxyHeaderReader] = {}
        self._tasks: deque[Task] = deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._purge_at = _PURGE_MIN
        self._timer_seq = itertools.count()
        self._wake_lock = threading.Lock()
        self._sleeping = False
        self._wake_pending = False
        self._running = False
        self._draining = False
        self._stopped = threading.Event()
        self.thread_id: int | None = None
        # Connections handed to this loop and closed on it; each counter has one writer thread.
        self.assigned = 0
        self.released = 0
        # Closed for their handlers (on_close fired), descriptors lingering for the peer's EOF: not counted as open.
        self.lingering = 0
        # Counters for engine.stats(), each written by the loop's thread only.
        self.accepted = 0  # connections opened on this loop (accepted, or refused by max_connections)
        self.closed_by = [0] * len(CAUSES)  # connections closed, by cause (netloop._conn.CAUSES)
        self.bytes_in = 0
        self.bytes_out = 0
        self.pauses = 0  # reading paused because the outbound bytes passed the high-water mark
        self.inbound_pauses = 0  # reading paused because the handler held inbound_cap unconsumed bytes
        self.handler_errors = 0  # callbacks that raised
        self.tls_failures = 0  # handshakes that failed or timed out
        self.proxy_failures = 0  # PROXY protocol headers refused (malformed, too slow, not allowed)
        self.refused = 0  # connections its acceptors closed at once because of max_connections
        self.refused_by_source = 0  # connections closed at once because of max_connections_per_source
        self.sources = core.sources
        self.sourced: dict[int, str] = {}  # the client address each counted connection took, by descriptor
        self.attach(self._wake_r, self._on_wake, IN)

    def __repr__(self) -> str:
        return f"<netloop.EventLoop {self.index} conns={len(self.conns)}>"

    # -- the loop ------------------------------------------------------------------------------------------

    def run(self) -> None:
        """The loop's body; returns when the loop is stopped (or drained during a graceful stop).

        The hot path of the whole library. A slow client gives the loop one or two events per poll, so the
        per-iteration part is as lean as the per-event part: one clock read, and only while timers exist. A plain
        "readable" on an accepted level-triggered connection runs ``Conn._on_io``'s read path inlined in ``_serve``,
        which saves a Python call per request: change the two together.
        """
        self.thread_id = threading.get_ident()
        self._running = True
        running = _async_hooks.enter(self)  # netloop.aio: this loop is asyncio's running loop on its thread
        signals = SignalWake.on_main_thread(self)
        try:
            self._serve()
        except BaseException as exc:
            # Only what escapes every per-event guard gets here (SystemExit, KeyboardInterrupt from a handler...):
            # never a silently dead loop; the engine stops, and run() re-raises it.
            self.log.critical("netloop: event loop %d died: %r; stopping the engine", self.index, exc, exc_info=exc)
            self.core.loop_died(self, exc)
        finally:
            if signals is not None:
                signals.close()
            self._teardown()
            _async_hooks.leave(running)  # netloop.aio: cancel its tasks, close it, restore the thread's running loop

    # The loop's body, alone in netloop/_loop_body.py (the pure loop, and the hand-over to the compiled one).
    _serve = loop_body.serve

    def _internal_error(self, exc: Exception, fd: int = -1) -> None:
        """An exception escaped the handling of an event on ``fd``: log it, and close the connection on ``fd`` with
        it, so that a readiness it can no longer handle does not come back on every poll (the loop serves on)."""
        self.log.error("netloop: internal error in event loop %d", self.index, exc_info=exc)
        conn = self.conns.get(fd)
        if conn is not None:
            try:
                conn._close(exc)
            except Exception:
                self.log.exception("netloop: closing %r after an internal error failed", conn)
                self.detach(fd)

    def _run_tasks(self) -> None:
        tasks = self._tasks
        # Only what is queued now: a task that queues another must not starve the poller.
        for _ in range(len(tasks)):
            fn, args = tasks.popleft()
            try:
                fn(*args)
            except Exception:
                self.log.exception("netloop: task %r failed on event loop %d", fn, self.index)

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if timer.cancelled:
                continue
            try:
                timer.callback(*timer.args)
            except Exception:
                self.log.exception("netloop: timer %r failed on event loop %d", timer.callback, self.index)

    def _on_wake(self, ev: int) -> None:
        try:
            os.read(self._wake_r, 4096)
        except (BlockingIOError, InterruptedError):
            pass
        self._wake_pending = False

    # -- scheduling ----------------------------------------------------------------------------------------

    def in_loop(self) -> bool:
        """True on this loop's own thread."""
        return threading.get_ident() == self.thread_id

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop; safe from any thread.

        Raises ``EngineStoppedError`` when the loop has stopped: a task that is taken always runs (the check and
        the append are one step under the lock that the loop's teardown takes to close the queue).
        """
        with self._wake_lock:
            if self._stopped.is_set():
                raise EngineStoppedError(f"event loop {self.index} is stopped")
            self._tasks.append((fn, args))
            if self._sleeping and not self._wake_pending:
                self._wake_pending = True
                wake_write(self._wake_w)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` after the current events are dispatched (loop thread only)."""
        self._tasks.append((fn, args))

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> Timer:
        """Run ``fn(*args)`` on the loop after ``delay`` seconds (loop thread only; use ``submit`` elsewhere)."""
        timer = Timer(time.monotonic() + max(0.0, delay), fn, args)
        timers = self._timers
        heapq.heappush(timers, (timer.when, next(self._timer_seq), timer))
        if len(timers) >= self._purge_at:
            self._purge_cancelled()
        return timer

    def _purge_cancelled(self) -> None:
        """Drop cancelled timers from the heap (a handshake timer per TLS connection, cancelled once it completes,
        would otherwise stay until its time): the heap holds at most twice the live timers, at an amortised cost."""
        timers = self._timers
        timers[:] = [entry for entry in timers if not entry[2].cancelled]  # in place: the compiled loop holds it
        heapq.heapify(timers)
        self._purge_at = max(_PURGE_MIN, 2 * len(timers))

    # -- descriptors ---------------------------------------------------------------------------------------

    def attach(self, fd: int, handler: Callable[[int], None], mask: int) -> None:
        """Watch ``fd`` for ``mask``; ``handler(events)`` runs on readiness (loop thread, or before run)."""
        self._handlers[fd] = handler
        self.readers[fd] = None
        self.poller.register(fd, mask)

    def detach(self, fd: int) -> None:
        self.readers.pop(fd, None)
        if self._handlers.pop(fd, None) is not None:
            try:
                self.poller.unregister(fd)
            except (OSError, KeyError, ValueError):
                pass

    @property
    def accepting(self) -> bool:
        """True while the loop runs and takes new connections (not stopping, not draining)."""
        return self._running and not self._draining

    def add_conn(
        self, sock: socket.SocketType, remote: Any, tls: ssl.SSLContext | None = None, server_side: bool = True
    ) -> Conn | None:
        """Adopt a connected non-blocking socket: register it and fire ``on_open`` (loop thread).

        With ``tls`` the TLS handshake runs first, and ``on_open`` fires once it completes.
        """
        if not self.accepting:
            self.released += 1
            sock.close()
            return None
        try:
            self.configure(sock)
        except OSError as exc:
            # e.g. the peer reset before its options were set: nothing was registered, nothing leaks.
            self.released += 1
            sock.close()
            self.log.debug("netloop: dropped a new connection from %r: %s", remote, exc)
            return None
        if type(remote) is tuple:
            # Connections from one host share its address string (idle connections stay small).
            remote = (sys.intern(remote[0]), *remote[1:])
        self.accepted += 1
        if server_side and self.proxy_mode is not None:
            reader = ProxyHeaderReader(self, sock, remote, tls, self.proxy_mode)
            if not allowed(remote, self.proxy_networks):
                reader.fail(PermissionError(errno.EPERM, "the source is not in proxy_protocol_from"), BY_ERROR)
                return None
            reader.start(self.options.proxy_header_timeout)
            return None
        return self.open_accepted(sock, remote, tls, None, server_side)

    def open_accepted(
        self,
        sock: socket.SocketType,
        remote: Any,
        tls: ssl.SSLContext | None,
        proxy: ProxyInfo | None,
        server_side: bool = True,
    ) -> Conn | None:
        """Serve a configured socket: register its connection and fire ``on_open`` (after TLS's handshake).

        With ``max_connections_per_source`` a connection from an address that has that many open is closed at once
        (None). ``remote`` is the client's address: the PROXY header's when one was read.
        """
        sources = self.sources
        if sources is not None and server_side and type(remote) is tuple:
            host = remote[0]
            if not sources.take(host):
                self.refused_by_source += 1
                self.log.debug("netloop: refused a connection from %r: max_connections_per_source", remote)
                self.drop_unopened(sock, BY_LIMIT)
                return None
            self.sourced[sock.fileno()] = host
        if tls is not None:
            from netloop._tls import open_tls

            conn: Conn = open_tls(self, sock, remote, tls, server_side, proxy=proxy)
            return conn
        conn = self._conn_class(self, sock, remote)
        conn._proxy = proxy
        fd = conn._fd
        self.conns[fd] = conn
        conn._mask = self._conn_mask
        self.attach(fd, conn._on_io, self._conn_mask)
        if self.inline_reads:
            self.readers[fd] = conn
        self.open_conn(conn)
        return conn

    def clock(self) -> float:
        """Read the clock now (and keep it as the loop's ``now``)."""
        self.now = now = time.monotonic()
        return now

    def open_conn(self, conn: Conn) -> None:
        """Fire ``on_open`` for a registered connection: a raise closes it, an action is applied."""
        if self.timeouts is not None:
            conn._seen = self.now
            self.timeouts.add(conn, self.now)
        conn._fire("on_open")

    def set_handler(self, fd: int, handler: Callable[[int], None]) -> None:
        """Route a watched descriptor's events to another handler."""
        self._handlers[fd] = handler

    def dial(
        self,
        addr: str,
        timeout: float | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Conn:
        """Dial ``addr`` and serve the new outbound connection on this loop (see ``netloop.Client``)."""
        return dial_on_loop(self, addr, timeout, tls, server_hostname)

    def register(
        self,
        addr: str,
        timeout: float | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Conn:
        """Deprecated name of ``dial``."""
        warnings.warn("EventLoop.register is deprecated; use EventLoop.dial", DeprecationWarning, stacklevel=2)
        return dial_on_loop(self, addr, timeout, tls, server_hostname)

    def enroll(self, sock: socket.socket) -> Conn:
        """Serve an already connected socket on this loop as a connection (see ``netloop.Client``)."""
        return enroll_on_loop(self, sock)

    def detach_conn(self, conn: Conn) -> None:
        fd = conn._fd
        if self.conns.pop(fd, None) is conn:
            self.released += 1
            self.detach(fd)
            if self.sourced:
                self.forget_source(fd)

    def forget_source(self, fd: int) -> None:
        """A connection counted by ``max_connections_per_source`` left: its address has room for one more."""
        host = self.sourced.pop(fd, None)
        if host is not None and self.sources is not None:
            self.sources.give(host)

    def conn_closed(self, conn: Conn, err: BaseException | None) -> None:
        """Fire ``on_close`` for a connection that just closed."""
        try:
            action = self.handler.on_close(conn, err)
        except Exception:
            self.handler_errors += 1
            self.log.exception("netloop: on_close raised for %r", conn)
            action = None
        if action == Action.SHUTDOWN:
            self.engine_stop()
        elif action:  # netloop.aio: an async on_close runs as a task once the connection's others are cancelled
            _async_hooks.adopt_close(conn, action)
        self.conn_dropped()

    def drop_unopened(self, sock: socket.SocketType, cause: int) -> None:
        """Close an accepted socket the handler never knew of (refused, or its PROXY header failed): counted."""
        self.closed_by[cause] += 1
        self.released += 1
        try:
            sock.close()
        except OSError:
            pass
        self.conn_dropped()

    def conn_dropped(self) -> None:
        """A connection left the loop (closed, or dropped before its handler knew of it)."""
        if self._draining and not self.conns:
            self._leave()

    def _leave(self) -> None:
        """End the loop after this iteration (loop thread).

        From a timer the poll would otherwise sleep until the next timer first (a cancelled linger deadline, say):
        a queued task keeps it from sleeping.
        """
        self._running = False
        self._tasks.append((_nothing, ()))

    # Defined in netloop/_loop_stats.py, one concern a module; methods of EventLoop all the same.
    count_connections = loop_stats.count_connections
    stats = loop_stats.stats
    load = loop_stats.load

    # -- the user's code -----------------------------------------------------------------------------------

    def handler_failed(self, conn: Conn, event: str, exc: Exception) -> None:
        """A handler raised: log it and close only that connection, handing ``exc`` to ``on_close``."""
        self.handler_errors += 1
        self.log.error("netloop: %s raised for %r; closing it", event, conn, exc_info=exc)
        conn._close_request(exc)

    def heap_released(self) -> None:
        """An outbound buffer past the high-water mark was let go: give the C heap's free pages back soon
        (``netloop._heap``)."""
        release_soon(self.call_later)

    def run_callback(self, callback: Callable[..., object], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            self.log.exception("netloop: callback %r raised", callback)

    def engine_stop(self) -> None:
        self.core.request_stop()

    # -- stopping ------------------------------------------------------------------------------------------

    # Defined in netloop/_loop_stop.py, one concern a module; methods of EventLoop all the same.
    drain = loop_stop.drain
    _finish_all = loop_stop._finish_all
    _release_lingering = loop_stop._release_lingering
    _drop_pending = loop_stop._drop_pending
    _abort_all = loop_stop._abort_all
    _teardown = loop_stop._teardown

    def stop(self) -> None:
        """Leave the loop at the end of this iteration (any thread)."""

        def _stop() -> None:
            self._running = False

        try:
            self.submit(_stop)
        except EngineStoppedError:
            pass

    @property
    def stopped(self) -> bool:
        """True once the loop has stopped (its queue takes no more tasks)."""
        return self._stopped.is_set()

    def wait_stopped(self, timeout: float | None) -> bool:
        return self._stopped.wait(timeout)


_PROXY_MODES: dict[str, Mode] = {"v1": "v1", "v2": "v2", "auto": "auto"}


def _nothing() -> None:
    pass


# The heap size at which cancelled timers are first dropped from it (``EventLoop._purge_cancelled``).
_PURGE_MIN = 64


# The compiled core serves only Python code that has every name it looks up: checked here, where the last class it
# names exists (netloop/_compiled.py); where it doesn't, the pure-Python core serves, with a warning.
_compiled.adopt(Conn, EventLoop, {"NO_INBOUND": NO_INBOUND, "NO_OUTBOUND": NO_OUTBOUND})
