"""What the modules of a connection share: the buffers' stand-ins, the pause bits, why a connection closed."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from netloop._buffer.elastic import OutboundBuffer
from netloop._buffer.ring import RingBuffer
from netloop._errors import (
    EngineStoppedError,
    InboundLimitError,
    OutboundLimitError,
)

if TYPE_CHECKING:
    from netloop._conn import Conn

Buffer = bytes | bytearray | memoryview
Callback = Callable[["Conn", BaseException | None], object]


# Reads stop after this many full reads in one round, so one busy peer can't starve the rest.
READS_PER_ROUND = 16
# The most buffers one gather write (sendmsg) takes.
IOV_MAX = max(16, min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024))


# Shared stand-ins for a connection's buffers while it has nothing kept: never written, replaced by a buffer of the
# connection's own on first use. Most connections never need one, and an idle one then holds no buffer objects.
NO_INBOUND = RingBuffer()
NO_OUTBOUND = OutboundBuffer()


def frozen(data: Buffer) -> bytes | memoryview:
    """``data`` safe to keep: immutable bytes are kept as they are, anything mutable is copied."""
    return data if type(data) is bytes else bytes(data)


# -- the connection's state: one variable, its table in netloop._lifecycle ----------------------------------------
#
# ``_state`` changes only through ``next_state`` (``Conn._to``); what a read or a write does in a state is read from
# the table's permission tuples (``READS``, ``WRITES``, ``FINISHED``), never from the order of the numbers.
# ``on_close`` fires when a connection enters LINGERING (it is finished for the handler: ``closed`` is true, every
# byte and our FIN are sent), else when it enters CLOSED; LINGERING's end only closes the descriptor.
#
# Reading is also held by the pause bits (the user's, backpressure's, the inbound cap's) in the states that show reads;
# a closing connection reads and discards whatever the pauses, so the peer is never blocked on it. Every closing
# state has a deadline (``linger_timeout``).

# Pause bits: the user's pause_reading(), backpressure (outbound at the high-water mark), and the inbound cap
# (unconsumed inbound at ``inbound_cap``). ABOVE_CAP marks the outbound crossing without holding reading
# (``backpressure_pause=False``): only the drain event waits for it.
PAUSED_BY_USER = 1
PAUSED_BY_PRESSURE = 2
ABOVE_CAP = 4
PAUSED_BY_INBOUND = 8
# netloop.aio: an async handler's task is running; the connection's next events wait for it.
PAUSED_BY_TASK = 16
READ_HELD = PAUSED_BY_USER | PAUSED_BY_PRESSURE | PAUSED_BY_INBOUND | PAUSED_BY_TASK
PRESSURE = PAUSED_BY_PRESSURE | ABOVE_CAP

# netloop.aio: the connections whose coroutines wait in ``drain(conn)``, and what wakes them once drained.
DRAIN_WAITERS: dict[Conn, Callable[[], None]] = {}

# ``_mask`` of a connection taken off the poller: its peer hung up while the user held reading.
PARKED = -1

# Why a connection closed, as the loops count it (``EventLoop.closed_by``, ``engine.stats()``): the peer ended it
# (its FIN first, or a reset), the handler did (``Action.CLOSE``, ``close()``), a timeout, a limit
# (``write_buffer_limit``, ``max_connections``), an error (a socket error, a handler that raised, a failed TLS
# handshake or PROXY header), or the engine's stop.
CAUSES = ("peer", "handler", "timeout", "limit", "error", "shutdown")
BY_PEER, BY_HANDLER, BY_TIMEOUT, BY_LIMIT, BY_ERROR, BY_SHUTDOWN = range(6)


def cause_of(err: BaseException) -> int:
    """The ``CAUSES`` index of a connection closed with ``err``."""
    if isinstance(err, TimeoutError):  # ConnTimeoutError, linger and shutdown deadlines, handshake deadlines
        return BY_TIMEOUT
    if isinstance(err, (OutboundLimitError, InboundLimitError)):
        return BY_LIMIT
    if isinstance(err, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return BY_PEER
    if isinstance(err, EngineStoppedError):
        return BY_SHUTDOWN
    return BY_ERROR
