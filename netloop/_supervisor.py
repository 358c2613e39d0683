"""Worker processes (``workers=N``): a supervising parent and N forked workers, each a full engine.

The parent binds every address once (so port 0 resolves once), forks the workers and supervises them: a worker
that dies is restarted with a back-off, and a stop drains them all. How the workers share an address:

- ``WorkerBalancing.REUSE_PORT``: every worker binds its own SO_REUSEPORT socket for TCP and UDP and the kernel
  balances; the parent only holds the port (a bound socket that never listens).
- ``WorkerBalancing.PARENT``: the parent accepts each stream connection and passes its descriptor (SCM_RIGHTS)
  over a Unix socket pair to the worker its ``load_balancing`` picks; a UDP socket is shared by every worker.

Unix-socket addresses have no SO_REUSEPORT, so the parent hands their connections off in both modes.
Each worker also has a control pair to the parent: readiness, count queries, load reports, and the end of file
that tells a worker its parent is gone. The worker process's own side (its engine and its ends of the channels)
is ``netloop._worker_process``; the parent's record of each worker is ``netloop._worker_slot``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import marshal
import os
import signal
import socket
import threading
import time
import warnings
from typing import Any

from netloop._acceptor import Acceptor, refuse_foreign_listener
from netloop._address import Address
from netloop._balancer import new_balancer
from netloop._engine import Engine, EngineCore, sum_counts
from netloop._errors import NetloopError
from netloop._handler import EventHandler
from netloop._options import Options, WorkerBalancing
from netloop._poller import IN
from netloop._worker_process import (
    MESSAGE_MAX,
    MESSAGES_PER_ROUND,
    QUIET_BEATS,
    SWEEP_INTERVAL,
    Message,
    flush_stdio,
    heartbeat_interval,
    run_worker,
    send_message,
)
from netloop._worker_slot import WorkerQuery, WorkerSlot

_RESTART_FIRST = 0.1  # seconds before the second quick restart in a row; doubles with each one after
_RESTART_CAP = 10.0
_STABLE_UPTIME = 5.0  # a worker that ran this long before dying counts as healthy: restarted at once
_EXIT_GRACE = 2.0  # beyond shutdown_timeout, how long a stop waits for the workers before SIGKILL
_COUNT_TIMEOUT = 1.0  # how long count_connections waits for the workers' answers


def restart_delay(failures: int) -> float:
    """Seconds to wait before restarting a worker that died after ``failures`` quick deaths in a row."""
    if failures <= 0:
        return 0.0
    return min(_RESTART_CAP, _RESTART_FIRST * 2.0 ** (failures - 1))


def start_workers(handler: EventHandler, addresses: list[Address], options: Options, spec: str | None = None) -> Engine:
    """Bind ``addresses``, fork ``options.worker_count()`` workers and return the parent's ``Engine``.

    With ``spec`` (``"module:attr"``) each worker imports its handler after the fork. Returns once every worker
    has booted (``on_boot`` ran in each); raises ``NetloopError`` naming the worker and its error when one fails
    to start, after stopping the others.
    """
    supervisor = Supervisor(handler, addresses, options, spec)
    supervisor.start()
    return supervisor.engine


def _channel() -> tuple[socket.socket, socket.socket]:
    """A connected pair of Unix sockets that keep message boundaries: (parent's end, worker's end)."""
    try:
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except (AttributeError, OSError):
        # No SOCK_SEQPACKET for Unix sockets here (macOS): datagrams keep boundaries too, but a peer's exit gives
        # no end of file, so the parent's sweep and the worker's parent-pid check notice it instead.
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)


def _hold_port(address: Address, options: Options) -> socket.socket:
    """A bound SO_REUSEPORT socket that never listens: it keeps the port for the workers' own listeners."""
    refuse_foreign_listener(address)
    sock = socket.socket(address.family, address.socktype)
    try:
        if options.reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if address.family == socket.AF_INET6 and address.scheme.endswith("6"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address.sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


# -- the parent ----------------------------------------------------------------------------------------------


class Supervisor(EngineCore):
    """The parent process's engine core: binds, forks and supervises the workers; serves no connection itself.

    ``loops`` is empty; ``count_connections`` sums the workers' answers.
    """

    def __init__(
        self, handler: EventHandler, addresses: list[Address], options: Options, spec: str | None = None
    ) -> None:
        super().__init__(handler, addresses, options)
        self.spec = spec
        kernel = options.worker_balancing is WorkerBalancing.REUSE_PORT
        self.worker_options = dataclasses.replace(options, workers=None, reuse_port=options.reuse_port or kernel)
        self.workers = [WorkerSlot(self, i) for i in range(options.worker_count())]
        # A restart's new generation while it boots, and old workers draining after one (or after a failed one).
        self.incoming: list[WorkerSlot] = []
        self.retiring: list[WorkerSlot] = []
        self._beat = heartbeat_interval(options.heartbeat_timeout)
        # What a worker serves itself (its own SO_REUSEPORT sockets, or a shared UDP socket), with real ports.
        self.worker_addresses: list[Address] = []
        self.shared: dict[Address, socket.socket] = {}
        self._udp_holds: list[socket.socket] = []
        self._queries: dict[int, WorkerQuery] = {}
        self._tokens = itertools.count()
        self._booted = threading.Event()
        self._boot_error: str | None = None
        self._gone = threading.Event()
        self._thread: threading.Thread | None = None

    # -- start ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        reactor = self._main_reactor()
        try:
            self._bind_all()
            for worker in self.workers:
                self._spawn(worker)
        except BaseException:
            self._kill_all()
            self._close_unstarted()
            raise
        self._thread = threading.Thread(target=reactor.run, name="netloop-supervisor", daemon=True)
        self.threads.append(self._thread)
        self._thread.start()
        try:
            self._booted.wait()
        except BaseException:
            self.request_stop()  # e.g. KeyboardInterrupt while the workers boot: leave no worker behind
            self.stopped.wait()
            raise
        if self._boot_error is not None:
            self.request_stop()
            self.stopped.wait()
            raise NetloopError(self._boot_error)
        for sock in self._udp_holds:
            # Every worker has its own UDP socket now; a held one would take a share of the datagrams.
            self._bound.remove(sock)
            sock.close()
        reactor.submit(self._serve)

    def _bind_all(self) -> None:
        kernel = self.options.worker_balancing is WorkerBalancing.REUSE_PORT
        pick = new_balancer(self.options.load_balancing, self.workers, WorkerSlot.load)
        for address in self.addresses:
            if kernel and address.network != "unix" and address.fd is None:
                # Inherited sockets (fd://, systemd://) can't be bound again: the parent hands them off instead.
                sock = _hold_port(address, self.options)
                self._bound.append(sock)
                name = sock.getsockname()
                self.addrs.append(address.format(name))
                self.worker_addresses.append(dataclasses.replace(address, text=self.addrs[-1], sockaddr=name))
                if address.network == "udp":
                    self._udp_holds.append(sock)
            elif address.network == "udp":
                (sock,) = self._bind_group(address, 1)
                shared = dataclasses.replace(address, text=self.addrs[-1], sockaddr=sock.getsockname())
                self.worker_addresses.append(shared)
                self.shared[shared] = sock
            else:
                (sock,) = self._bind_group(address, 1)
                self.acceptors.append(Acceptor(self._main_reactor(), sock, self.addrs[-1], pick))

    def _serve(self) -> None:
        for acceptor in self.acceptors:
            acceptor.start()
        self._main_reactor().call_later(SWEEP_INTERVAL, self._sweep)
        if self._beat is not None:
            self._main_reactor().call_later(self._beat, self._check_heartbeats)

    def _spawn(self, worker: WorkerSlot) -> None:
        """Fork a process for ``worker`` (the caller's thread; the supervisor's loop once it runs)."""
        control, their_control = _channel()
        handoff: socket.socket | None = None
        their_handoff: socket.socket | None = None
        # A parent-death signal fires when the forking thread ends: only ask for it from a thread that lasts.
        lasting = threading.current_thread() in (threading.main_thread(), self._thread)
        try:
            if self.acceptors:
                handoff, their_handoff = _channel()
                handoff.setblocking(False)
            control.setblocking(False)
            flush_stdio()
            with warnings.catch_warnings():
                # Python 3.12+ warns about forking a threaded process: the child builds its own engine from
                # new objects (logging resets its locks at fork) and leaves with os._exit.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except BaseException:
            for sock in (control, their_control, handoff, their_handoff):
                if sock is not None:
                    sock.close()
            raise
        if pid == 0:
            run_worker(self, worker.index, their_control, their_handoff, [control, handoff], lasting)
        their_control.close()
        if their_handoff is not None:
            their_handoff.close()
        worker.pid = pid
        worker.control = control
        worker.handoff = handoff
        worker.ready = False
        worker.started_at = time.monotonic()
        worker.failure = None
        worker.shutdown_asked = False
        worker.assigned = worker.taken = worker.held = worker.conns = 0
        worker.beat_at = time.monotonic()
        worker.responsive = True
        self._main_reactor().attach(control.fileno(), functools.partial(self._on_control, worker), IN)

    # -- messages from the workers -------------------------------------------------------------------------

    def _on_control(self, worker: WorkerSlot, ev: int) -> None:
        sock = worker.control
        if sock is None:
            return
        for _ in range(MESSAGES_PER_ROUND):
            try:
                data = sock.recv(MESSAGE_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._lost(worker)
                return
            self._handle(worker, marshal.loads(data))

    def _handle(self, worker: WorkerSlot, message: Message) -> None:
        kind = message[0]
        if kind == "load":
            worker.taken, worker.held = message[1], message[2]
        elif kind == "count":
            _, token, worker.conns, worker.taken, worker.held = message
            self._answered(token, worker, worker.conns)
        elif kind == "stats":
            _, token, worker.stats = message
            self._answered(token, worker, worker.stats)
        elif kind == "beat":
            worker.beat_at = time.monotonic()
            if not worker.responsive:
                worker.responsive = True
                self.log.warning("netloop: worker %d (pid %s) answers its heartbeat again", worker.index, worker.pid)
        elif kind == "ready":
            worker.ready = True
            worker.beat_at = time.monotonic()
            if worker in self.incoming:
                if all(w.ready for w in self.incoming):
                    self._promote()
            elif all(w.ready for w in self.workers):
                self._booted.set()
        elif kind == "failed":
            worker.failure = message[1]
        elif kind == "shutdown":
            # The application stopped a worker (Action.SHUTDOWN, engine.stop()): that stops the engine.
            worker.shutdown_asked = True
            self.request_stop()

    # -- exits and restarts --------------------------------------------------------------------------------

    def _lost(self, worker: WorkerSlot) -> None:
        """The worker's control channel ended: it is exiting; reap it as soon as it has."""
        worker.ready = False
        if worker.control is not None:
            self._main_reactor().detach(worker.control.fileno())
        if worker.pid is not None:
            self._reap_soon(worker, worker.pid, 0.002)

    def _reap_soon(self, worker: WorkerSlot, pid: int, delay: float) -> None:
        if worker.pid == pid and not self._try_reap(worker):
            self._main_reactor().call_later(delay, self._reap_soon, worker, pid, min(delay * 2, 0.5))

    def _try_reap(self, worker: WorkerSlot) -> bool:
        assert worker.pid is not None
        try:
            pid, status = os.waitpid(worker.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = worker.pid, 0  # reaped elsewhere (SIGCHLD ignored): gone, status unknown
        if pid == 0:
            return False
        self._exited(worker, status)
        return True

    def _sweep(self) -> None:
        for worker in self._every_worker():
            if worker.pid is not None:
                self._try_reap(worker)
        self._main_reactor().call_later(SWEEP_INTERVAL, self._sweep)

    def _exited(self, worker: WorkerSlot, status: int) -> None:
        pid = worker.pid
        worker.pid = None
        worker.ready = False
        self._close_channels(worker)
        if worker in self.retiring:
            self.retiring.remove(worker)
            self.log.info("netloop: old worker %d (pid %s) %s", worker.index, pid, _describe(status))
            self._check_gone()
            return
        if worker in self.incoming:
            why = f" ({worker.failure})" if worker.failure else ""
            self.log.error(
                "netloop: restart failed: new worker %d (pid %s) %s while starting%s; the running workers keep serving",
                worker.index, pid, _describe(status), why,
            )  # fmt: skip
            self._retire(self.incoming)
            self.incoming = []
            self._check_gone()
            return
        if self._stop_requested:
            self._check_gone()
            return
        what = f"worker {worker.index} (pid {pid}) {_describe(status)}"
        if worker.failure:
            what += f" ({worker.failure})"
        if not self._booted.is_set():
            self._boot_error = f"{what} while starting"
            self._booted.set()
            return
        if time.monotonic() - worker.started_at >= _STABLE_UPTIME:
            worker.failures = 0
        delay = restart_delay(worker.failures)
        worker.failures += 1
        # A clean exit nobody here asked for is someone's SIGTERM to that worker: a restart, not a crash.
        level = logging.WARNING if status == 0 else logging.ERROR
        self.log.log(level, "netloop: %s; restarting it in %.1fs", what, delay)
        worker.restart = self._main_reactor().call_later(delay, self._respawn, worker)

    def _respawn(self, worker: WorkerSlot) -> None:
        worker.restart = None
        if self._stop_requested or worker.pid is not None:
            return
        try:
            self._spawn(worker)
        except OSError as exc:
            delay = restart_delay(worker.failures)
            worker.failures += 1
            self.log.error("netloop: cannot start worker %d: %s; trying again in %.1fs", worker.index, exc, delay)
            worker.restart = self._main_reactor().call_later(delay, self._respawn, worker)

    def _close_channels(self, worker: WorkerSlot) -> None:
        if worker.control is not None:
            self._main_reactor().detach(worker.control.fileno())
            worker.control.close()
            worker.control = None
        if worker.handoff is not None:
            worker.handoff.close()
            worker.handoff = None

    def _check_gone(self) -> None:
        if all(w.pid is None for w in self._every_worker()):
            self._gone.set()

    def _every_worker(self) -> list[WorkerSlot]:
        return [*self.workers, *self.incoming, *self.retiring]

    # -- restart and heartbeat -----------------------------------------------------------------------------

    def restart(self) -> None:
        if not self._submit(self._main_reactor(), self._begin_restart):
            raise NetloopError("the engine is stopped")

    def _begin_restart(self) -> None:
        if self._stop_requested:
            return
        if self.incoming:
            self.log.warning("netloop: a restart is already under way; this one is ignored")
            return
        self.log.info("netloop: restarting %d workers", len(self.workers))
        self.incoming = [WorkerSlot(self, worker.index) for worker in self.workers]
        for worker in self.incoming:
            try:
                self._spawn(worker)
            except OSError as exc:
                self.log.error(
                    "netloop: restart failed: cannot start a worker: %s; the running workers keep serving", exc
                )
                self._retire(self.incoming)
                self.incoming = []
                return

    def _promote(self) -> None:
        """Every new worker serves: connections go to them from now on; the old ones drain and exit."""
        old = list(self.workers)
        self.workers[:] = self.incoming
        self.incoming = []
        pick = new_balancer(self.options.load_balancing, self.workers, WorkerSlot.load)
        for acceptor in self.acceptors:
            acceptor.retarget(pick)
        self._retire(old)
        self.log.info("netloop: restart done: workers %s serve", ", ".join(str(w.pid) for w in self.workers))

    def _retire(self, workers: list[WorkerSlot]) -> None:
        """Ask ``workers`` to drain and exit (after the connections already passed to them).

        They serve on for ``restart_drain_timeout`` after their ``on_shutdown``: a handler that ends connections
        at a message boundary then cuts no request, even with the default ``drain_timeout`` of 0.
        """
        retire = ("retire", self.options.restart_drain())
        for worker in workers:
            if worker.restart is not None:
                worker.restart.cancel()
                worker.restart = None
            if worker.pid is None:
                continue
            self.retiring.append(worker)
            channel = worker.handoff or worker.control
            if channel is not None:
                send_message(channel, retire)

    def _check_heartbeats(self) -> None:
        """Hand nothing to a worker whose heartbeat is late; kill one silent for ``heartbeat_timeout``."""
        assert self._beat is not None and self.options.heartbeat_timeout is not None
        now = time.monotonic()
        for worker in [*self.workers, *self.incoming]:
            if worker.pid is None or not worker.ready:
                continue
            silent = now - worker.beat_at
            if silent > self.options.heartbeat_timeout:
                self.log.error(
                    "netloop: worker %d (pid %d) missed its heartbeat for %.1fs; killing it",
                    worker.index, worker.pid, silent,
                )  # fmt: skip
                worker.ready = False
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._reap_soon(worker, worker.pid, 0.002)
            elif silent > QUIET_BEATS * self._beat and worker.responsive:
                worker.responsive = False
                self.log.warning(
                    "netloop: worker %d (pid %d) is late with its heartbeat (%.1fs); no new connections for it",
                    worker.index, worker.pid, silent,
                )  # fmt: skip
        self._main_reactor().call_later(self._beat, self._check_heartbeats)

    # -- hand-off and counts -------------------------------------------------------------------------------

    def add_conn(self, chosen: WorkerSlot, sock: socket.SocketType, remote: Any) -> None:
        """Pass an accepted connection to ``chosen``, or to the least loaded worker that can take it now."""
        chosen.assigned -= 1  # the acceptor counted it on ``chosen``; send_fd counts it where it goes
        message = marshal.dumps((int(sock.family), int(sock.type), sock.proto, remote))
        try:
            if chosen.send_fd(message, sock):
                return
            for worker in sorted(self.workers, key=WorkerSlot.load):
                if worker is not chosen and worker.send_fd(message, sock):
                    return
            self.log.warning("netloop: no worker can take a connection from %r now; closing it", remote)
        finally:
            sock.close()  # the worker has its own descriptor now

    def count_connections(self) -> int:
        reactor = self._main_reactor()
        if self.stopped.is_set() or reactor.in_loop():
            return sum(w.conns for w in self.workers if w.pid is not None)
        return sum(conns for _, conns in self._ask("count"))

    def stats(self) -> dict[str, Any]:
        """The workers' counters (each asked now; a worker that does not answer in time gives its last ones)."""
        if self.stopped.is_set() or self._main_reactor().in_loop():
            answers = [(w.index, w.stats) for w in self.workers]
        else:
            answers = self._ask("stats")
        pids = {w.index: (w.pid, w.responsive) for w in self.workers}
        workers = [
            {"worker": index, "pid": pids[index][0] or 0, "responsive": int(pids[index][1]), **counts}
            for index, counts in answers
        ]
        total: dict[str, Any] = sum_counts(workers, "worker", "pid", "responsive")
        total["workers"] = workers
        return total

    def _ask(self, kind: str) -> list[tuple[int, Any]]:
        """Ask every ready worker ``kind``; waits up to ``_COUNT_TIMEOUT`` for their answers (not the loop's thread)."""
        reactor = self._main_reactor()
        query = WorkerQuery(kind, [w for w in self.workers if w.ready])
        token = next(self._tokens)
        if not self._submit(reactor, self._send_query, token, query):
            return query.values()
        query.done.wait(_COUNT_TIMEOUT)
        self._submit(reactor, self._queries.pop, token, None)
        return query.values()

    def _send_query(self, token: int, query: WorkerQuery) -> None:
        self._queries[token] = query
        for worker in self.workers:
            if worker.index in query.waiting and (
                worker.control is None or not send_message(worker.control, (query.kind, token))
            ):
                query.answer(worker.index, worker.last(query.kind))

    def _answered(self, token: int, worker: WorkerSlot, value: Any) -> None:
        query = self._queries.get(token)
        if query is not None:
            query.answer(worker.index, value)

    # -- stop ----------------------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._booted.set()  # a start() still waiting for the workers stops waiting
        reactor = self._main_reactor()
        try:
            self._run_on(reactor, self._stop_workers)
            if not self._gone.wait(self.options.restart_drain() + self.options.shutdown_timeout + _EXIT_GRACE):
                self.log.warning("netloop: workers still running after the shutdown timeout; killing them")
                self._run_on(reactor, self._kill_all)
        except Exception:
            self.log.exception("netloop: error while stopping the workers")
        finally:
            reactor.stop()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(self.options.shutdown_timeout + 1.0)
            self._kill_all()  # only if the loop could not: normally every worker is reaped by now
            for sock in self._bound:
                sock.close()
            for acceptor in self.acceptors:
                acceptor.sock.close()
            self.stopped.set()

    def _stop_workers(self) -> None:
        """Stop accepting, then ask every worker to drain: after the last connection passed to it, in order."""
        for acceptor in self.acceptors:
            acceptor.close()
        for worker in [*self.workers, *self.incoming]:
            if worker.restart is not None:
                worker.restart.cancel()
                worker.restart = None
            channel = worker.handoff or worker.control
            if worker.pid is not None and channel is not None:
                send_message(channel, ("stop",))
        self._check_gone()

    def _kill_all(self) -> None:
        for worker in self._every_worker():
            pid = worker.pid
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                status = 0
            self._exited(worker, status)

    # -- the child side of a fork --------------------------------------------------------------------------
