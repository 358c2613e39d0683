"""A loop's counters for ``engine.stats()``: each written by the loop's own thread, read from any.

Each function here is a method of ``EventLoop`` (netloop/_eventloop.py attaches them to the class).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netloop import _compiled
from netloop._conn import (
    CAUSES,
)

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop


def count_connections(self: EventLoop) -> int:
    """Open connections: a closed one whose descriptor still lingers for the peer's EOF is not counted."""
    return len(self.conns) - self.lingering


def stats(self: EventLoop) -> dict[str, int]:
    """This loop's counters (read from any thread: each is one int its own thread writes)."""
    closed = list(self.closed_by)
    counts = {
        "loop": self.index,
        "connections": len(self.conns) - self.lingering,
        "accepted": self.accepted,
        "closed": sum(closed),
    }
    for cause, n in zip(CAUSES, closed, strict=True):
        counts["closed_" + cause] = n
    # The compiled loop keeps its byte counts aside while it runs; ``counted`` adds them (netloop/_speedups.c).
    counted = getattr(_compiled.speedups, "counted", None)
    bytes_in, bytes_out = (self.bytes_in, self.bytes_out) if counted is None else counted(self)
    counts.update(
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        backpressure_pauses=self.pauses,
        inbound_pauses=self.inbound_pauses,
        handler_errors=self.handler_errors,
        tls_handshake_failures=self.tls_failures,
        proxy_header_failures=self.proxy_failures,
        refused_max_connections=self.refused,
        refused_per_source=self.refused_by_source,
    )
    return counts


def load(self: EventLoop) -> int:
    """Connections assigned and not yet closed, counting those still on their way to the loop.

    A connection whose ``on_close`` fired is not counted while its descriptor lingers for the peer's EOF.
    """
    return self.assigned - self.released - self.lingering
