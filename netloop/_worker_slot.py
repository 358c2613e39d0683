"""The supervisor's record of one worker slot, and a question asked of every worker.

A slot outlives the processes that fill it (a crash, a restart): its index is the worker's ``engine.worker_id``.
To the parent's acceptors a slot is a target like an event loop: adding a connection passes it to the process.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netloop._eventloop import Timer
    from netloop._supervisor import Supervisor


class WorkerSlot:
    """The parent's record of one worker slot, kept across restarts.

    To the parent's acceptors it is a target like an event loop (``assigned``, ``load()``, ``submit``,
    ``add_conn``): adding a connection passes it to the worker process.
    """

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid: int | None = None
        self.control: socket.socket | None = None
        self.handoff: socket.socket | None = None
        self.ready = False
        self.started_at = 0.0
        self.failures = 0  # quick deaths in a row
        self.failure: str | None = None  # what the worker said when it failed to start
        self.shutdown_asked = False
        self.restart: Timer | None = None
        # Connections passed to the current process, of those how many it has taken off its channel, and how
        # many it holds; the last two as the worker last reported them.
        self.assigned = 0
        self.taken = 0
        self.held = 0
        self.conns = 0  # its open connections, as it last answered a count
        self.stats: dict[str, Any] = {}  # its counters, as it last answered; {} before its first answer
        self.beat_at = 0.0  # when its last heartbeat came (or when it started)
        self.responsive = True  # heartbeats on time: it may be handed connections

    def __repr__(self) -> str:
        return f"<netloop worker {self.index} pid={self.pid}>"

    def last(self, kind: str) -> Any:
        """What this worker last answered to a ``kind`` query."""
        return self.conns if kind == "count" else self.stats

    def load(self) -> int:
        """Connections on this worker, counting those passed to it and not yet taken."""
        return self.assigned - self.taken + self.held

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        fn(*args)  # the parent's acceptors run on the supervisor's loop, which does the hand-off too

    def add_conn(self, sock: socket.SocketType, remote: Any, tls: ssl.SSLContext | None = None) -> None:
        # The parent never speaks TLS: the worker that takes the connection does (its hand-off listener has tls).
        self.supervisor.add_conn(self, sock, remote)

    def send_fd(self, message: bytes, sock: socket.SocketType) -> bool:
        """Send ``sock``'s descriptor to the worker; False when it can't take it now."""
        if not self.ready or not self.responsive or self.handoff is None:
            return False
        try:
            socket.send_fds(self.handoff, [message], [sock.fileno()])
        except (BlockingIOError, InterruptedError):
            return False  # its channel is full: another worker takes this one
        except OSError:
            self.ready = False  # it is gone; its control channel's end of file follows
            return False
        self.assigned += 1
        return True


class WorkerQuery:
    """One question to every ready worker (``count``, ``stats``): their answers, else what each last said."""

    def __init__(self, kind: str, workers: list[WorkerSlot]) -> None:
        self.kind = kind
        self.answers: dict[int, Any] = {w.index: w.last(kind) for w in workers}
        self.waiting = set(self.answers)
        self.lock = threading.Lock()
        self.done = threading.Event()
        if not self.waiting:
            self.done.set()

    def answer(self, index: int, value: Any) -> None:
        with self.lock:
            self.answers[index] = value
            self.waiting.discard(index)
            if not self.waiting:
                self.done.set()

    def values(self) -> list[tuple[int, Any]]:
        with self.lock:
            return sorted(self.answers.items())
