"""What handlers may use of an event loop: the ``netloop.EventLoop`` protocol.

The loop object itself has more (its poller, its connection table, its counters); those are the loop's own and may
change. ``conn.event_loop`` and ``engine.loops`` are typed with this protocol, so a type checker keeps user code to it.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from netloop._conn import Conn
    from netloop._options import Options


class TimerHandle(Protocol):
    """A call scheduled with ``call_later``."""

    def cancel(self) -> None:
        """Do not run it (loop thread)."""


class EventLoop(Protocol):
    """One event loop: a thread (or the caller's, under ``netloop.run``) serving the connections it owns."""

    @property
    def index(self) -> int:
        """The loop's number, 0 to N-1 (-1 for a main reactor that only accepts)."""

    @property
    def options(self) -> Options:
        """The engine's options (read them; changing them has no effect)."""

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop; safe from any thread. ``EngineStoppedError`` once the loop has stopped:
        a task that was taken always runs."""

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` after the current events are dispatched (loop thread only)."""

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` on the loop after ``delay`` seconds (loop thread only)."""

    def in_loop(self) -> bool:
        """True on this loop's own thread."""

    def dial(
        self,
        addr: str,
        timeout: float | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Conn:
        """Dial ``addr`` and serve the new outbound connection on this loop (see ``netloop.Client``).

        With ``tls`` the connection speaks TLS (``on_open`` after the handshake); ``server_hostname`` defaults to
        the address's host, and the context's hostname check applies to it.
        """

    def register(
        self,
        addr: str,
        timeout: float | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Conn:
        """Deprecated name of ``dial`` (a ``DeprecationWarning``); kept for one release."""

    def enroll(self, sock: socket.socket) -> Conn:
        """Serve an already connected socket on this loop (see ``netloop.Client``)."""

    def count_connections(self) -> int:
        """Connections this loop owns now."""
