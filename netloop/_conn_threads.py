"""What may be asked of a ``Conn`` from any thread: each is a task for the connection's loop.

Each function here is a method of ``Conn`` (netloop/_conn.py attaches them to the class): one concern a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from netloop._conn_shared import (
    PAUSED_BY_INBOUND,
    READ_HELD,
    Buffer,
    Callback,
)
from netloop._errors import (
    ConnClosedError,
)
from netloop._lifecycle import (
    DROP,
    FINISHED,
    REFUSE,
    STATE_NAMES,
    WRITES,
)

if TYPE_CHECKING:
    from netloop._conn import Conn


def async_write(self: Conn, data: Buffer, callback: Callback | None = None) -> None:
    """Queue ``data`` to be written on the loop; ``callback(conn, err)`` runs there afterwards.

    ``err`` is None once the bytes are sent or buffered, else why not (``ConnClosedError``,
    ``OutboundLimitError``). A loop that has stopped raises ``EngineStoppedError`` here; a write it took
    always gets its callback.
    """
    self._loop.submit(self._write_task, (bytes(data),), callback)


def async_writev(self: Conn, chunks: Sequence[Buffer], callback: Callback | None = None) -> None:
    """Like ``async_write`` for several buffers, sent in order with one gather write when possible."""
    self._loop.submit(self._write_task, tuple(bytes(c) for c in chunks), callback)


def _write_task(self: Conn, chunks: tuple[bytes, ...], callback: Callback | None) -> None:
    err: BaseException | None = None
    if WRITES[self._state] == REFUSE:
        err = ConnClosedError(f"write on {STATE_NAMES[self._state]} connection {self!r}")
    else:
        self.writev(chunks)
        self._seen = self._loop.now  # a push from another thread is activity (idle_timeout)
        err = self._err if WRITES[self._state] == DROP else None  # dropped: why
    if callback is not None:
        self._loop.run_callback(callback, self, err)


def wake(self: Conn, callback: Callback | None = None) -> None:
    """Fire ``on_traffic`` for this connection again (on its loop), then ``callback(conn, err)``."""
    self._loop.submit(self._wake_task, callback)


def _wake_task(self: Conn, callback: Callback | None) -> None:
    err: BaseException | None = None
    if FINISHED[self._state]:
        err = ConnClosedError(f"wake on closed connection {self!r}")
    elif self._pause & READ_HELD == PAUSED_BY_INBOUND:
        err = self._deliver_held()  # and again while it consumes: no read comes until it is down to half
    else:
        err = self._deliver()
    if callback is not None:
        self._loop.run_callback(callback, self, err)


def close(self: Conn, callback: Callback | None = None) -> None:
    """Close after flushing buffered output; ``callback(conn, err)`` runs on the loop once it is closed."""
    self._loop.submit(self._close_task, callback)


def _close_task(self: Conn, callback: Callback | None) -> None:
    if callback is not None:
        if FINISHED[self._state]:
            self._loop.run_callback(callback, self, None)
            return
        if self._close_callbacks is None:
            self._close_callbacks = []
        self._close_callbacks.append(callback)
    self._close_request(None)
