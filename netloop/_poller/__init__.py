"""Readiness pollers behind one small interface: epoll (Linux), kqueue (BSD/macOS), poll (portable).

Event masks use epoll's bit values on every poller, so the loop dispatches the list a poller returns without
translating it: ``IN``, ``OUT``, ``ERR``, ``HUP``; ``EDGE`` asks for edge-triggered notification.
"""

from __future__ import annotations

import select
from typing import Protocol

from netloop._poller.masks import EDGE, ERR, HUP, IN, OUT, READABLE

__all__ = ["EDGE", "ERR", "HUP", "IN", "OUT", "READABLE", "Poller", "available_pollers", "new_poller"]


class Poller(Protocol):
    """What an event loop needs from a readiness API.

    ``poll(timeout)`` waits up to ``timeout`` seconds (negative: forever) and returns ``(fd, mask)`` pairs;
    ``supports_edge`` tells whether ``EDGE`` may be passed to ``register``.
    """

    name: str
    supports_edge: bool

    def register(self, fd: int, mask: int) -> None: ...

    def modify(self, fd: int, mask: int) -> None: ...

    def unregister(self, fd: int) -> None: ...

    def poll(self, timeout: float) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...


def available_pollers() -> list[str]:
    """Names of the pollers this platform has, best first."""
    names = []
    if hasattr(select, "epoll"):
        names.append("epoll")
    if hasattr(select, "kqueue"):
        names.append("kqueue")
    if hasattr(select, "poll"):
        names.append("poll")
    return names


def new_poller(name: str | None = None) -> Poller:
    """A new poller: ``name`` forces one ("epoll", "kqueue", "poll"); None picks the best available."""
    names = available_pollers()
    if name is None:
        if not names:
            raise OSError("no supported poller (epoll, kqueue or poll) on this platform")
        name = names[0]
    if name not in ("epoll", "kqueue", "poll"):
        raise ValueError(f"unknown poller {name!r}; choose from epoll, kqueue, poll")
    if name not in names:
        raise ValueError(f"poller {name!r} is not available on this platform (available: {', '.join(names)})")
    if name == "epoll":
        from netloop._poller.epoll import EpollPoller

        return EpollPoller()
    if name == "kqueue":
        from netloop._poller.kqueue import KqueuePoller

        return KqueuePoller()
    from netloop._poller.poll import PollPoller

    return PollPoller()
