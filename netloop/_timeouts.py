"""Idle and read timeouts: a hashed timing wheel whose cost follows the connections due, not all connections.

Every connection carries the loop time of its last byte either way: one store on the read paths, the buffered send
path and ``async_write`` (a direct ``write`` the kernel takes whole follows a read, and is not marked). The wheel
files each connection under the tick its timeout could fall due at; when that tick comes, the connection's true
deadline is worked out from that time and it is either closed (``ConnTimeoutError``) or filed again. Activity never
touches the wheel, so an event costs the same with 10 connections as with 15,000, and each connection is looked at
about once per timeout period. Deadlines are kept to within one tick (1/8 of the shortest timeout, between 10 ms and
1 s).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from netloop._errors import ConnTimeoutError
from netloop._lifecycle import CLOSED, IDLE_TIMEOUT, READ_TIMEOUT, next_state

if TYPE_CHECKING:
    from netloop._conn import Conn
    from netloop._eventloop import EventLoop


class TimeoutWheel:
    """One loop's idle/read timeouts (loop thread only)."""

    def __init__(self, loop: EventLoop, idle: float | None, read: float | None) -> None:
        self.loop = loop
        self.idle = idle
        self.read = read
        shortest = min(t for t in (idle, read) if t is not None)
        self.tick = min(1.0, max(0.01, shortest / 8))
        self.slots: dict[int, list[Conn]] = {}
        self.at = 0  # the next tick to look at

    def start(self, now: float) -> None:
        self.at = int(now / self.tick)
        self.loop.call_later(self.tick, self._sweep)

    def add(self, conn: Conn, now: float) -> None:
        """File a new connection: it is first looked at when its earliest timeout could pass."""
        first = min(t for t in (self.idle, self.read) if t is not None)
        self._file(conn, now + first)

    def _file(self, conn: Conn, when: float) -> None:
        key = max(self.at, math.ceil(when / self.tick))
        slot = self.slots.get(key)
        if slot is None:
            self.slots[key] = [conn]
        else:
            slot.append(conn)

    def _sweep(self) -> None:
        loop = self.loop
        now = loop.clock()
        due = int(now / self.tick)
        slots = self.slots
        while self.at <= due:
            conns = slots.pop(self.at, None)
            self.at += 1
            if conns:
                for conn in conns:
                    if conn._state != CLOSED:
                        self._check(conn, now)
        loop.call_later(self.tick, self._sweep)

    def _check(self, conn: Conn, now: float) -> None:
        idle, read = self.idle, self.read
        deadline = math.inf
        kind = ""
        if idle is not None:
            deadline = conn._seen + idle
            kind = "idle_timeout"
        if read is not None and conn._inbound._size and next_state(conn._state, READ_TIMEOUT) == CLOSED:
            # A partial message lingers: the handler left bytes unconsumed and no more came.
            partial = conn._seen + read
            if partial < deadline:
                deadline, kind = partial, "read_timeout"
        if (
            now >= deadline
            and next_state(conn._state, IDLE_TIMEOUT if kind == "idle_timeout" else READ_TIMEOUT) == CLOSED
        ):
            limit = idle if kind == "idle_timeout" else read
            # At once, not lingering: a peer that went quiet (or is trickling) gets no more of our time.
            conn._close(ConnTimeoutError(kind, f"{conn!r}: {kind}={limit}s passed"))
            return
        if deadline == math.inf:
            deadline = now + (read if read is not None else 1.0)  # look again: bytes may be left over later
        self._file(conn, deadline)
