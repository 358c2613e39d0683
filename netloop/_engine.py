"""The engine: binds the addresses, runs the loops in threads, ticks, and stops gracefully."""

from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from netloop._acceptor import Acceptor, bind, refuse_foreign_listener
from netloop._address import Address
from netloop._balancer import new_balancer
from netloop._datagram import DatagramEndpoint
from netloop._errors import EngineStoppedError, NetloopError
from netloop._eventloop import EventLoop
from netloop._handler import Action, EventHandler
from netloop._loop_api import EventLoop as EventLoopProtocol
from netloop._options import Options
from netloop._sources import SourceLimit
from netloop._tls import prepare_context
from netloop._wakeup import StoppedEvent


class Engine:
    """A running server, handed to ``on_boot``/``on_shutdown`` and returned by ``netloop.start``."""

    def __init__(self, core: EngineCore) -> None:
        self._core = core

    def __repr__(self) -> str:
        return f"<netloop.Engine addrs={self.addrs!r} loops={len(self._core.loops)}>"

    @property
    def addrs(self) -> list[str]:
        """The bound addresses, in the URL form they were given with real ports filled in."""
        return list(self._core.addrs)

    @property
    def worker_id(self) -> int | None:
        """This worker process's index with ``workers=N``; None in a single-process engine."""
        return self._core.worker_id

    @property
    def loops(self) -> list[EventLoopProtocol]:
        """The event loops serving connections (the ``netloop.EventLoop`` protocol)."""
        return list(self._core.loops)

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: stop accepting, ``on_shutdown``, flush and close every connection.

        Thread-safe and idempotent. From a loop's own thread (a callback) it only starts the stop; from any
        other thread it also waits up to ``timeout`` seconds (None: until stopped) for the engine to finish.
        """
        self._core.request_stop()
        if not self._core.on_loop_thread():
            self._core.stopped.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the engine has stopped; False if ``timeout`` passed first.

        Ctrl-C (``KeyboardInterrupt``) while waiting stops the engine gracefully, as under ``run``, and ``wait``
        returns True once it has stopped: no traceback. A second Ctrl-C during that stop is not caught.
        """
        return self._core.wait(timeout)

    @property
    def stopped(self) -> bool:
        return self._core.stopped.is_set()

    def count_connections(self) -> int:
        """Open connections over every loop (with ``workers``: over every worker process)."""
        return self._core.count_connections()

    def stats(self) -> dict[str, Any]:
        """Counters, in total and per loop (``"loops"``; with workers, per worker: ``"workers"``).

        ``connections`` open now; since start: ``accepted``, ``closed`` and ``closed_<cause>`` for each cause
        (``peer``, ``handler``, ``timeout``, ``limit``, ``error``, ``shutdown``), ``bytes_in``/``bytes_out`` (what
        the handlers read and wrote; after TLS decryption), ``backpressure_pauses``, ``handler_errors``,
        ``tls_handshake_failures``, ``proxy_header_failures``, ``refused_max_connections`` and
        ``refused_per_source``. See docs/deploy.md.
        """
        return self._core.stats()

    def restart(self) -> None:
        """With ``workers=N``: start new workers, wait until they serve, then drain and retire the old ones.

        What SIGHUP does under ``run``. With the handler given as a ``"module:attr"`` string the new workers import
        it afresh, so they run the code on disk now. New workers that fail to boot are stopped and the old ones
        keep serving. Returns at once (any thread); raises ``NetloopError`` without workers.
        """
        self._core.restart()

    def dup(self) -> int:
        """A duplicate of the (first) listening socket's descriptor; the caller owns and closes it."""
        return os.dup(self._core.primary_socket().fileno())


class EngineCore:
    """The engine's machinery; ``Engine`` is its public face."""

    def __init__(self, handler: EventHandler, addresses: list[Address], options: Options) -> None:
        self.handler = handler
        self.addresses = addresses
        self.options = options
        self.log = options.get_logger()
        for ctx in options.tls_contexts():
            prepare_context(ctx)  # here, not in Options.validate: checking options leaves the user's contexts be
        # max_connections_per_source: the open connections by client address, shared by the loops.
        self.sources = SourceLimit(options.max_connections_per_source) if options.max_connections_per_source else None
        # Refuse a port another socket holds before an SO_REUSEPORT bind (a worker's parent holds its ports).
        self.check_foreign = True
        self.loops: list[EventLoop] = []
        self.reactor: EventLoop | None = None  # the main reactor, when connections are handed out
        self.acceptors: list[Acceptor] = []
        self.endpoints: list[DatagramEndpoint] = []
        self.addrs: list[str] = []
        self.threads: list[threading.Thread] = []
        # Set before start(): leave loop 0 to the calling thread, which runs it with run_kept().
        self.keep_first = False
        self.kept: EventLoop | None = None
        self._bound: list[socket.socket] = []
        self.stopped = StoppedEvent()  # Engine.wait: wakes on the main thread for a signal a loop thread took
        self.worker_id: int | None = None
        self._stop_lock = threading.Lock()
        self._stop_requested = False
        # What killed a loop (a BaseException that escaped every handler guard): run() re-raises it once stopped.
        self.fatal: BaseException | None = None
        self.engine = Engine(self)
        _LIVE.add(self)

    # -- start ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind, start the loops' threads and fire ``on_boot``.

        With ``keep_first`` loop 0 is left to the caller, who runs it with ``run_kept``: a one-loop server then
        has a single thread, which spares every system call the C library's locking for threaded processes.
        """
        options = self.options
        count = options.loop_count()
        try:
            for i in range(count):
                self.loops.append(EventLoop(i, self, self.handler, options))
            self._bind_all()
        except BaseException:
            self._close_unstarted()
            raise
        if self.keep_first:
            self.kept = self.loops[0]
            # The calling thread is loop 0's from here: engine.stop() in on_boot only starts the stop.
            self.kept.thread_id = threading.get_ident()
        for loop in self._all_loops():
            if loop is self.kept:
                continue
            name = "netloop-reactor" if loop is self.reactor else f"netloop-loop-{loop.index}"
            thread = threading.Thread(target=loop.run, name=name, daemon=True)
            self.threads.append(thread)
            thread.start()
        try:
            action = self.handler.on_boot(self.engine)
        except BaseException:
            self.request_stop()
            self.run_kept()
            self.stopped.wait(options.shutdown_timeout + 5)
            raise
        if action == Action.SHUTDOWN:
            self.request_stop()
            return
        # A stop asked for meanwhile closes them first (each start checks), or finds their loops stopped.
        for acceptor in self.acceptors:
            self._submit(acceptor.owner, acceptor.start)
        for endpoint in self.endpoints:
            self._submit(endpoint.loop, endpoint.start)
        if options.ticker:
            self._submit(self.loops[0], self._tick)

    def run_kept(self) -> None:
        """Run the loop that ``start`` left for this thread (``keep_first``), until it stops."""
        loop, self.kept = self.kept, None
        if loop is not None:
            loop.run()

    def _all_loops(self) -> list[EventLoop]:
        return [*self.loops, self.reactor] if self.reactor is not None else list(self.loops)

    def _bind_all(self) -> None:
        options = self.options
        loops = self.loops
        for address in self.addresses:
            tls = options.tls_for(address.text, address.network)
            # An inherited socket (fd://, systemd://) is one socket: it can't be bound again once per loop.
            spread = options.reuse_port and len(loops) > 1 and address.fd is None
            if address.network == "udp":
                owners = loops if spread else loops[:1]
                socks = self._bind_group(address, len(owners))
                for loop, sock in zip(owners, socks, strict=True):
                    self.endpoints.append(DatagramEndpoint(loop, sock, self.addrs[-1]))
            elif spread and address.network == "tcp":
                socks = self._bind_group(address, len(loops))
                for loop, sock in zip(loops, socks, strict=True):
                    own = new_balancer(options.load_balancing, [loop], EventLoop.load)
                    self.acceptors.append(Acceptor(loop, sock, self.addrs[-1], own, tls, self._full()))
            else:
                (sock,) = self._bind_group(address, 1)
                if len(loops) == 1:
                    owner = loops[0]
                elif options.reuse_port:
                    owner = loops[0]  # Unix sockets have no SO_REUSEPORT: loop 0 accepts and hands out
                else:
                    owner = self._main_reactor()
                pick = new_balancer(options.load_balancing, loops, EventLoop.load)
                self.acceptors.append(Acceptor(owner, sock, self.addrs[-1], pick, tls, self._full()))
                self.acceptors[-1].inherited = address.fd is not None

    def _bind_group(self, address: Address, count: int) -> list[socket.socket]:
        """``count`` sockets on one address (SO_REUSEPORT when more than one); records the bound address."""
        reuse_port = count > 1 or (self.options.reuse_port and address.network != "unix")
        if reuse_port and self.check_foreign:
            refuse_foreign_listener(address)
        first = bind(address, self.options, reuse_port)
        socks = [first]
        try:
            name = first.getsockname()
            port = None if address.network == "unix" else name[1]
            for _ in range(count - 1):
                socks.append(bind(address, self.options, True, port))
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        self.addrs.append(address.format(name))
        self._bound.extend(socks)
        return socks

    def _full(self) -> Callable[[], bool] | None:
        """With ``max_connections``: whether the engine holds that many (connections on their way count too)."""
        limit = self.options.max_connections
        if not limit:
            return None
        loops = self.loops
        return lambda: sum(loop.load() for loop in loops) >= limit

    def _main_reactor(self) -> EventLoop:
        if self.reactor is None:
            self.reactor = EventLoop(-1, self, self.handler, self.options)
        return self.reactor

    def primary_socket(self) -> socket.socket:
        if not self._bound:
            raise EngineStoppedError("the engine has no bound socket")
        return self._bound[0]

    def _close_unstarted(self) -> None:
        for sock in self._bound:
            sock.close()
        for loop in self._all_loops():
            loop.stop()
            loop._teardown()
        self.stopped.set()

    def count_connections(self) -> int:
        return sum(loop.count_connections() for loop in self.loops)

    def stats(self) -> dict[str, Any]:
        loops = [loop.stats() for loop in self._all_loops()]
        total: dict[str, Any] = sum_counts(loops, "loop")
        total["loops"] = loops
        return total

    def restart(self) -> None:
        raise NetloopError("restart needs worker processes (workers=N): one process cannot replace its own code")

    def wait(self, timeout: float | None) -> bool:
        """``Engine.wait``: until stopped; a ``KeyboardInterrupt`` meanwhile stops the engine gracefully first."""
        try:
            return self.stopped.wait_waking_on_signals(timeout)
        except KeyboardInterrupt:
            self.request_stop()
            return self.stopped.wait_waking_on_signals()  # the stop's own deadlines bound it

    def on_loop_thread(self) -> bool:
        return any(loop.in_loop() for loop in self._all_loops())

    # -- ticker --------------------------------------------------------------------------------------------

    def _tick(self) -> None:
        if self._stop_requested:
            return
        try:
            result = self.handler.on_tick()
        except Exception:
            self.log.exception("netloop: on_tick raised; ticking again in 1s")
            result = 1.0
        delay, action = _tick_result(result)
        if action == Action.SHUTDOWN:
            self.request_stop()
            return
        self.loops[0].call_later(delay, self._tick)

    # -- stop ----------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Start the graceful stop once; returns at once (any thread)."""
        with self._stop_lock:
            if self._stop_requested:
                return
            self._stop_requested = True
        threading.Thread(target=self._shutdown, name="netloop-stop", daemon=True).start()

    def loop_died(self, loop: EventLoop, exc: BaseException) -> None:
        """``loop`` stopped on an exception no guard caught: stop every other loop too (loop thread)."""
        with self._stop_lock:
            if self.fatal is None:
                self.fatal = exc
        self.request_stop()

    def _shutdown(self) -> None:
        """The one owner of the loops' end, the same under ``run()`` and ``start()``.

        Stop accepting, ``on_shutdown``, then every loop drains (serves on for ``drain_timeout`` while handlers
        close their connections, then answers what each holds and closes it gracefully) and ends itself once empty
        or at the deadline; the engine is stopped when every loop is.
        """
        deadline = time.monotonic() + self.options.drain_timeout + self.options.shutdown_timeout
        try:
            for acceptor in self.acceptors:
                self._run_on(acceptor.owner, acceptor.close)
            for endpoint in self.endpoints:
                self._run_on(endpoint.loop, endpoint.close)
            if self.loops:
                self._run_on(self.loops[0], self._call_on_shutdown)
            for loop in self.loops:
                self._submit(loop, loop.drain, deadline)
            for loop in self.loops:
                # Each ends itself by the deadline; the margin covers a loop busy in a handler at that moment.
                loop.wait_stopped(max(0.0, deadline - time.monotonic()) + _STOP_MARGIN)
        except Exception:
            self.log.exception("netloop: error while stopping")
        finally:
            for loop in self._all_loops():
                loop.stop()
            for loop in self._all_loops():
                if not loop.wait_stopped(_STOP_MARGIN) and loop.thread_id is not None:
                    self.log.error("netloop: event loop %d did not stop (a handler is blocking it)", loop.index)
            for sock in self._bound:
                sock.close()
            self._call_on_stopped()
            self.stopped.set()

    def _call_on_stopped(self) -> None:
        try:
            self.handler.on_stopped(self.engine)
        except Exception:
            self.log.exception("netloop: on_stopped raised")

    def _call_on_shutdown(self) -> None:
        try:
            self.handler.on_shutdown(self.engine)
        except Exception:
            self.log.exception("netloop: on_shutdown raised")

    def _submit(self, loop: EventLoop, fn: Callable[..., object], *args: Any) -> bool:
        try:
            loop.submit(fn, *args)
        except EngineStoppedError:
            return False
        return True

    def _run_on(self, loop: EventLoop, fn: Callable[[], object]) -> None:
        """Run ``fn`` on ``loop`` and wait for it (a loop that stopped already is skipped)."""
        done = threading.Event()

        def task() -> None:
            try:
                fn()
            finally:
                done.set()

        if self._submit(loop, task):
            done.wait(self.options.shutdown_timeout + _STOP_MARGIN)


# Every engine core of this process (servers, clients, a worker pool's parent) while it exists: a worker process
# closes the descriptors of those that are not its own after the fork (another engine's port stays the parent's).
_LIVE: weakref.WeakSet[EngineCore] = weakref.WeakSet()


def live_engines() -> list[EngineCore]:
    """The engine cores of this process that have not stopped."""
    return [core for core in list(_LIVE) if not core.stopped.is_set()]


def forget_engine(core: EngineCore) -> None:
    """In a forked child: close ``core``'s descriptors (listeners, connections, its loops' pollers and wake-ups).

    Closed as they are, and nothing more: the child's epoll descriptor is the parent's epoll, so unregistering
    anything through it (as a loop's own teardown does) would take it from the parent's loop. The child has
    none of the parent's threads: nothing else touches these objects here.
    """
    socks: list[socket.SocketType] = [*core._bound, *(acceptor.sock for acceptor in core.acceptors)]
    for loop in core._all_loops():
        socks.extend(conn._sock for conn in list(loop.conns.values()))
    for sock in socks:
        try:
            sock.close()
        except OSError:
            pass
    for loop in core._all_loops():
        forget_loop(loop)


def forget_loop(loop: EventLoop) -> None:
    """In a forked child: close the descriptors of the parent's ``loop`` (its poller and its wake-up)."""
    try:
        loop.poller.close()
    except OSError:
        pass  # a kqueue is not inherited: there is nothing to close
    for fd in {loop._wake_r, loop._wake_w}:
        try:
            os.close(fd)
        except OSError:
            pass


# How long stopping waits past the deadline for a loop that is busy in a handler.
_STOP_MARGIN = 1.0


def sum_counts(parts: list[dict[str, Any]], *keys: str) -> dict[str, Any]:
    """The sums of the int counters of ``parts`` (loops' or workers' stats), leaving out ``keys`` (their index...)."""
    total: dict[str, Any] = {}
    for part in parts:
        for name, value in part.items():
            if name not in keys and type(value) is int:
                total[name] = total.get(name, 0) + value
    return total


def _tick_result(result: Any) -> tuple[float, Action | None]:
    if isinstance(result, tuple):
        delay, action = result
    else:
        delay, action = result, None
    try:
        delay = float(delay)
    except (TypeError, ValueError):
        raise TypeError(f"on_tick must return a delay or (delay, Action), got {result!r}") from None
    return max(0.0, delay), action
