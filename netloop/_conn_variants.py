"""The connection classes a loop picks once from its options: edge-triggered, with ``on_pre_write``, or both."""

from __future__ import annotations

from collections.abc import Sequence

from netloop._conn import Buffer, Conn
from netloop._lifecycle import CLOSED, DELIVER, DISCARD, READS
from netloop._poller import EDGE, ERR, HUP, IN, OUT, READABLE


class EdgeConn(Conn):
    """A connection on an edge-triggered poller: registered once for IN|OUT, reads until drained."""

    __slots__ = ()
    _inline = False
    _short_read_empties = False

    def _on_io(self, ev: int) -> None:
        if ev & OUT and self._outbound._size:
            self._flush(False)
        if ev & READABLE and self._state != CLOSED:
            self._read_on()
            if ev & (ERR | HUP) and self._state != CLOSED and not self._wants_read():
                self._hang_up(ev)

    def _hang_up(self, ev: int) -> None:
        # An edge comes once: no spin to stop. Held reading finds the rest and the EOF when it resumes.
        if ev & ERR or READS[self._state] != DELIVER:
            super()._hang_up(ev)

    def _more_to_read(self) -> None:
        # No new edge comes for bytes already there: read on after the other descriptors had their turn.
        self._loop.call_soon(self._read_on)

    def _update_interest(self) -> None:
        # Registered once for IN and OUT edges. Bytes that arrived before a close raised no new edge: discard them.
        if READS[self._state] == DISCARD:
            self._loop.call_soon(self._read_on)

    def _resume(self) -> None:
        # Bytes that arrived while paused raised no new edge: look now.
        self._loop.call_soon(self._read_on)


class PreWriteConn(Conn):
    """A connection that calls ``on_pre_write`` once for each buffer before it is written (``pre_write=True``)."""

    __slots__ = ()

    def write(self, data: Buffer) -> int:
        self._handler.on_pre_write(self, data)
        return Conn.write(self, data)

    def writev(self, chunks: Sequence[Buffer]) -> int:
        for chunk in chunks:
            self._handler.on_pre_write(self, chunk)
        return Conn.writev(self, chunks)


class PreWriteEdgeConn(EdgeConn):
    __slots__ = ()

    write = PreWriteConn.write
    writev = PreWriteConn.writev


def conn_class(edge: bool, pre_write: bool) -> type[Conn]:
    """The connection class for these options, chosen once per loop so the hot path has no option checks."""
    if edge:
        return PreWriteEdgeConn if pre_write else EdgeConn
    return PreWriteConn if pre_write else Conn


def conn_mask(edge: bool) -> int:
    return IN | OUT | EDGE if edge else IN
