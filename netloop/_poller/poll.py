"""poll(2) poller, the portable fallback (level-triggered only)."""

from __future__ import annotations

import select

from netloop._poller.masks import EDGE, ERR, HUP, IN, OUT

_NATIVE = {IN: select.POLLIN, OUT: select.POLLOUT}
# On Linux poll's bits equal epoll's; elsewhere translate both ways.
_SAME_BITS = (select.POLLIN, select.POLLOUT, select.POLLERR, select.POLLHUP) == (IN, OUT, ERR, HUP)


def _to_native(mask: int) -> int:
    if mask & EDGE:
        raise ValueError("the poll poller is level-triggered only; use epoll or kqueue for edge_triggered")
    if _SAME_BITS:
        return mask
    return (select.POLLIN if mask & IN else 0) | (select.POLLOUT if mask & OUT else 0)


def _from_native(events: int) -> int:
    mask = events & (IN | OUT | ERR | HUP) if _SAME_BITS else 0
    if not _SAME_BITS:
        mask |= IN if events & select.POLLIN else 0
        mask |= OUT if events & select.POLLOUT else 0
        mask |= ERR if events & select.POLLERR else 0
        mask |= HUP if events & select.POLLHUP else 0
    if events & select.POLLNVAL:
        mask |= ERR
    return mask


class PollPoller:
    name = "poll"
    supports_edge = False

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int, mask: int) -> None:
        self._poll.register(fd, _to_native(mask))

    def modify(self, fd: int, mask: int) -> None:
        self._poll.modify(fd, _to_native(mask))

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        ready = self._poll.poll(None if timeout < 0 else timeout * 1000.0)
        if _SAME_BITS:
            return [(fd, ev & 0x1F | (ERR if ev & select.POLLNVAL else 0)) for fd, ev in ready]
        return [(fd, _from_native(ev)) for fd, ev in ready]

    def close(self) -> None:
        # poll objects hold no descriptor.
        pass
