"""A worker process's side of ``workers=N``: its life after the fork, its engine, the link to the supervisor.

The supervisor (``netloop._supervisor``) forks this process and calls ``run_worker`` in it, which builds its
``WorkerCore``: the hand-off channel it accepts from and the link to its parent. What both ends share (the
``Message`` tuples, ``send_message``, the message limits) lives here and the supervisor imports it, so this module
never imports the supervisor's at run time.
"""

from __future__ import annotations

import ctypes
import errno
import marshal
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from netloop._address import Address
from netloop._engine import EngineCore, forget_engine, forget_loop, live_engines
from netloop._errors import EngineStoppedError, NetloopError
from netloop._handler_loader import load_handler
from netloop._options import LoadBalancing
from netloop._poller import IN

if TYPE_CHECKING:
    from netloop._supervisor import Supervisor  # only for annotations: the supervisor imports this module

SWEEP_INTERVAL = 1.0  # how often the parent looks for exits that its channels did not report
_REPORT_INTERVAL = 0.1  # how often a worker reports its load while the parent balances by least connections
MESSAGE_MAX = 4096
MESSAGES_PER_ROUND = 64
QUIET_BEATS = 3  # heartbeats a worker may miss before it is handed no more connections


def heartbeat_interval(timeout: float | None) -> float | None:
    """How often a worker sends its heartbeat: often enough that a frozen one is passed over within ~1.5 s."""
    return None if timeout is None else min(0.5, timeout / 4)


_PR_SET_PDEATHSIG = 1
# Stands for "every stream connection the parent hands off" among a worker's addresses.
_HANDOFF = Address("parent hand-off", "unix", "unix", socket.AF_UNIX, "")

Message = tuple[Any, ...]


def send_message(sock: socket.socket, message: Message) -> bool:
    try:
        sock.send(marshal.dumps(message))
    except OSError:
        return False  # the peer is gone or not reading; its channel's end of file tells the rest
    return True


def die_with_parent(parent: int) -> None:
    """Linux: have the kernel send SIGTERM to this process when its parent dies (belt and braces)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before the request took effect


# -- a worker ------------------------------------------------------------------------------------------------


class _HandoffSocket(socket.socket):
    """The worker's end of the hand-off channel, served by an ``Acceptor`` like a listening socket.

    ``accept()`` returns the next connection the parent passed over; the parent's stop (or retire) message, sent
    after the last connection, stops the worker instead, so no connection passed before it is dropped.
    """

    taken = 0  # connections taken off the channel
    on_stop: Callable[[str, float | None], None]  # set by the worker's core: stop this worker for a reason

    def accept(self) -> tuple[socket.socket, Any]:
        data, fds, _flags, _addr = socket.recv_fds(self, MESSAGE_MAX, 1)
        if fds:
            family, kind, proto, remote = marshal.loads(data)
            self.taken += 1
            return socket.socket(family, kind, proto, fileno=fds[0]), remote
        if data:
            message = marshal.loads(data)
            self.on_stop("parent", message[1] if message[0] == "retire" else None)
            raise BlockingIOError(errno.EAGAIN, "the parent asked this worker to stop")
        self.on_stop("orphaned", None)
        raise ConnectionAbortedError(errno.ECONNABORTED, "the parent process is gone")


class _ParentLink:
    """The worker's end of its control channel: answers the parent, and stops the worker when the parent is gone.

    With least-connections hand-off it also reports this worker's load whenever it changes.
    """

    def __init__(self, core: WorkerCore, sock: socket.socket, parent: int, report_loads: bool) -> None:
        self.core = core
        self.sock = sock
        self.parent = parent
        self.report_loads = report_loads
        self._reported: tuple[int, int] | None = None
        self.alive: dict[int, float] = {}  # when each of the worker's other loops last ran its heartbeat task

    def start(self) -> None:
        """Begin listening to the parent (any thread); nothing to do when the worker is stopping already."""
        try:
            self.core.loops[0].submit(self._attach)
        except EngineStoppedError:
            pass

    def _attach(self) -> None:
        loop = self.core.loops[0]
        loop.attach(self.sock.fileno(), self._on_readable, IN)
        if self.sock.type != getattr(socket, "SOCK_SEQPACKET", None):
            self._check_parent()
        if self.report_loads:
            self._report()
        interval = heartbeat_interval(self.core.options.heartbeat_timeout)
        if interval is not None:
            self._beat(interval)

    def _beat(self, interval: float) -> None:
        """Tell the parent this worker is alive, when every one of its loops ran a task lately."""
        loops = self.core.loops
        now = time.monotonic()
        if all(now - self.alive.get(loop.index, now) < QUIET_BEATS * interval for loop in loops[1:]):
            self.send(("beat",))
        for loop in loops[1:]:
            try:
                loop.submit(self._alive, loop.index)
            except EngineStoppedError:
                pass
        loops[0].call_later(interval, self._beat, interval)

    def _alive(self, index: int) -> None:
        self.alive[index] = time.monotonic()

    def send(self, message: Message) -> None:
        """Send ``message`` to the parent (any thread); lost quietly when the parent is gone."""
        send_message(self.sock, message)

    def _on_readable(self, ev: int) -> None:
        for _ in range(MESSAGES_PER_ROUND):
            try:
                data = self.sock.recv(MESSAGE_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.core.loops[0].detach(self.sock.fileno())
                self.core.stop_because("orphaned")
                return
            message = marshal.loads(data)
            if message[0] == "stop":
                self.core.stop_because("parent")
            elif message[0] == "retire":
                self.core.stop_because("parent", message[1])
            elif message[0] == "count":
                self.send(("count", message[1], self.core.count_connections(), *self.core.load()))
            elif message[0] == "stats":
                counts = self.core.stats()
                del counts["loops"]  # the totals only: one message, whatever the number of loops
                self.send(("stats", message[1], counts))

    def _report(self) -> None:
        load = self.core.load()
        if load != self._reported:
            self._reported = load
            self.send(("load", *load))
        self.core.loops[0].call_later(_REPORT_INTERVAL, self._report)

    def _check_parent(self) -> None:
        if os.getppid() != self.parent:
            self.core.stop_because("orphaned")
            return
        self.core.loops[0].call_later(SWEEP_INTERVAL, self._check_parent)


class WorkerCore(EngineCore):
    """A worker process's engine: the parent's addresses and options, served the way the parent arranged.

    ``addrs`` are the parent's; sockets the parent gave (the hand-off channel, shared UDP sockets) are used as
    they are, the rest are this worker's own SO_REUSEPORT sockets.
    """

    def __init__(
        self, supervisor: Supervisor, worker_id: int, control: socket.socket, handoff: socket.socket | None
    ) -> None:
        options = supervisor.worker_options
        addresses = list(supervisor.worker_addresses)
        self._given: dict[Address, socket.socket] = dict(supervisor.shared)
        self._handoff: _HandoffSocket | None = None
        if handoff is not None:
            self._handoff = _HandoffSocket(handoff.family, handoff.type, handoff.proto, fileno=handoff.detach())
            self._handoff.setblocking(False)
            self._handoff.on_stop = self.stop_because
            self._given[_HANDOFF] = self._handoff
            addresses.append(_HANDOFF)
        super().__init__(supervisor.handler, addresses, options)
        self.check_foreign = False  # the parent checked, and holds the ports itself
        self.worker_id = worker_id
        self._public = list(supervisor.addrs)
        self._booted = False
        self.stop_reason: str | None = None
        least = options.load_balancing is LoadBalancing.LEAST_CONNECTIONS
        control.setblocking(False)
        self.link = _ParentLink(self, control, os.getppid(), report_loads=least and handoff is not None)

    def start(self) -> None:
        super().start()
        self._booted = True
        if self._stop_requested and self.stop_reason is None:
            self.stop_reason = "application"  # on_boot returned Action.SHUTDOWN
            self.link.send(("shutdown",))
        self.link.start()

    def _bind_all(self) -> None:
        super()._bind_all()
        self.addrs = list(self._public)

    def _bind_group(self, address: Address, count: int) -> list[socket.socket]:
        given = self._given.get(address)
        if given is None:
            return super()._bind_group(address, count)  # this worker's own SO_REUSEPORT socket(s)
        socks = [given, *(given.dup() for _ in range(count - 1))]
        self.addrs.append(address.text)
        self._bound.extend(socks)
        return socks

    def request_stop(self) -> None:
        if self._booted and self.stop_reason is None:
            self.stop_reason = "application"
            self.link.send(("shutdown",))
        super().request_stop()

    def stop_because(self, reason: str, drain: float | None = None) -> None:
        """Stop this worker for ``reason`` ("parent", "orphaned", "signal"), without stopping the others.

        ``drain``: a restart retires this worker; it serves on that long after ``on_shutdown`` (at least its
        ``drain_timeout``), so that its handler can end each connection at a message boundary.
        """
        if self.stop_reason is None:
            self.stop_reason = reason
        if drain is not None and not self._stop_requested:
            # This process's own copy of the options (the fork's): the loops read the drain from it when they stop.
            self.options.drain_timeout = max(self.options.drain_timeout, drain)
        super().request_stop()

    def load(self) -> tuple[int, int]:
        """(connections taken from the parent so far, connections on this worker now)."""
        taken = self._handoff.taken if self._handoff is not None else 0
        return taken, sum(loop.load() for loop in self.loops)


# -- the child side of a fork --------------------------------------------------------------------------------


def run_worker(
    supervisor: Supervisor,
    index: int,
    control: socket.socket,
    handoff: socket.socket | None,
    parent_ends: list[socket.socket | None],
    lasting: bool,
) -> NoReturn:
    """The new worker process's whole life; leaves with ``os._exit`` and never returns to the caller."""
    code = 1
    try:
        parent = os.getppid()
        forget_parent(supervisor, parent_ends)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C stops the parent, which drains the workers
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a restart is the parent's to run
        if supervisor.spec is not None:
            try:
                supervisor.handler = load_handler(
                    supervisor.spec
                )  # imported here, after the fork: the code on disk now
            except NetloopError as exc:
                send_message(control, ("failed", str(exc)))
                raise
        core = WorkerCore(supervisor, index, control, handoff)
        signal.signal(signal.SIGTERM, lambda signum, frame: core.stop_because("signal"))
        if lasting:
            die_with_parent(parent)
        try:
            core.start()
        except BaseException as exc:
            core.link.send(("failed", f"{type(exc).__name__}: {exc}"))
            raise
        core.link.send(("ready",))
        core.stopped.wait()
        code = 0
    except BaseException:
        supervisor.log.exception("netloop: worker %d failed", index)
    finally:
        flush_stdio()
        os._exit(code)


def forget_parent(supervisor: Supervisor, parent_ends: list[socket.socket | None]) -> None:
    """In a new worker: close the parent's descriptors it inherited (channels, listeners, held ports, its loop).

    Only what the parent's engines opened (this one's and the process's others): anything else the parent had open
    is the application's, and a fork keeps it, as any fork does.
    """
    keep = set(supervisor.shared.values())
    closing: list[socket.socket | None] = [*parent_ends, *supervisor._bound, *(a.sock for a in supervisor.acceptors)]
    for w in supervisor._every_worker():
        closing += [w.control, w.handoff]
    for sock in closing:
        if sock is not None and sock not in keep:
            sock.close()
    if supervisor.reactor is not None:
        forget_loop(supervisor.reactor)
    # The process's other engines (a metrics port, a client...) are the parent's: a worker holding their sockets
    # would keep a port open after the parent closed it, and across restarts.
    for core in live_engines():
        if core is not supervisor:
            forget_engine(core)


def flush_stdio() -> None:
    # Buffered output must not be written twice (by the parent and by a fresh worker) or lost at os._exit.
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
