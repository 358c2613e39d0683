"""The event interface users implement: ``EventHandler`` and the ``Action`` its events return."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from netloop._conn import Conn
    from netloop._engine import Engine


class Action(enum.IntEnum):
    """What the engine should do after an event. ``NONE`` is falsy, like ``None``."""

    NONE = 0
    CLOSE = 1  # close this connection once its outbound bytes are flushed
    SHUTDOWN = 2  # stop the whole engine gracefully


TickResult = Union[float, "tuple[float, Action | None]"]


class EventHandler:
    """Subclass and override the events you need; every method has a no-op default.

    Events of a connection run on that connection's event loop, one at a time. With several loops, events of
    different connections run on different threads: synchronise state shared between connections.
    A handler that raises gets its connection closed, with the exception passed to ``on_close`` and logged;
    every other connection keeps being served.
    """

    def on_boot(self, engine: Engine) -> Action | None:
        """Listeners are bound and loops are running; accepting starts when this returns.

        Return ``Action.SHUTDOWN`` to stop at once.
        """
        return None

    def on_open(self, conn: Conn) -> Action | None:
        """A connection opened (never for a UDP server socket). ``Action.CLOSE`` closes it."""
        return None

    def on_traffic(self, conn: Conn) -> Action | None:
        """Inbound bytes are waiting on ``conn`` (UDP: exactly one datagram).

        Bytes not consumed with ``next``/``discard``/``read_into`` stay buffered for the next call; a UDP
        datagram's unread rest is dropped.
        """
        return None

    def on_eof(self, conn: Conn) -> Action | None:
        """The peer half-closed (sent FIN) after every byte before it was shown to ``on_traffic``.

        The default, ``Action.CLOSE``, closes the connection once its outbound bytes are flushed. Return None to
        keep it open for writing (a reply still being computed goes out), then close it with ``conn.close()`` or
        ``Action.CLOSE`` later. No more bytes arrive; bytes left unconsumed stay readable.
        """
        return Action.CLOSE

    def on_drain(self, conn: Conn) -> Action | None:
        """``conn``'s outbound bytes fell to half of ``write_buffer_cap`` after reaching it (reading resumed, unless
        ``backpressure_pause=False`` never held it).

        A handler that stops producing once ``conn.outbound_buffered() >= write_buffer_cap`` resumes here:
        backpressure without polling.
        """
        return None

    def on_close(self, conn: Conn, err: BaseException | None) -> Action | None:
        """``conn`` closed; ``err`` is None for an orderly close, else the exception that closed it."""
        return None

    def on_tick(self) -> TickResult:
        """With ``ticker=True``: called once at start, then again after each returned delay (seconds).

        Return a delay, or ``(delay, Action)``; ``Action.SHUTDOWN`` stops the engine.
        """
        return 1.0

    def on_pre_write(self, conn: Conn, data: bytes | bytearray | memoryview) -> None:
        """With ``pre_write=True``: called just before ``data`` is written to ``conn``'s socket."""
        return None

    def on_shutdown(self, engine: Engine) -> None:
        """The engine is stopping: accepting has stopped, connections are still open (and then closed)."""
        return None

    def on_stopped(self, engine: Engine) -> None:
        """The engine has stopped: the drain is over, every connection is closed (``on_close`` ran for each).

        The place to release what requests used until the end, e.g. a ``WorkerPool``: ``on_shutdown`` runs before
        the drain, while connections are still served. Runs once, on a thread of netloop's (no loop runs any
        more); with ``workers=N``, in each worker process (and for each generation a restart retires).
        """
        return None
