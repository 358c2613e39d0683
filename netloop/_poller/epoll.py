"""epoll poller: the kernel's masks are netloop's masks, so ``poll`` is epoll's own bound method."""

from __future__ import annotations

import select


class EpollPoller:
    name = "epoll"
    supports_edge = True

    def __init__(self) -> None:
        self._epoll = select.epoll()
        # Bound once: the loop calls it every iteration.
        self.poll = self._epoll.poll
        self.register = self._epoll.register
        self.modify = self._epoll.modify
        self.unregister = self._epoll.unregister

    def fileno(self) -> int:
        return self._epoll.fileno()

    def close(self) -> None:
        self._epoll.close()
