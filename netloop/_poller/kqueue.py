"""kqueue poller (BSD, macOS): one read and one write filter per descriptor; EV_CLEAR gives edge-triggering.

Not exercised by CI on Linux (``select.kqueue`` does not exist there).
"""

from __future__ import annotations

import select
from typing import Any

from netloop._poller.masks import EDGE, ERR, HUP, IN, OUT

_kq: Any = select  # select.kqueue and its constants exist only on BSD/macOS


class KqueuePoller:
    name = "kqueue"
    supports_edge = True

    def __init__(self) -> None:
        self._kq = _kq.kqueue()
        self._masks: dict[int, int] = {}

    def _apply(self, fd: int, old: int, new: int) -> None:
        changes = []
        edge = _kq.KQ_EV_CLEAR if new & EDGE else 0
        for bit, kfilter in ((IN, _kq.KQ_FILTER_READ), (OUT, _kq.KQ_FILTER_WRITE)):
            if new & bit and (not old & bit or (old ^ new) & EDGE):
                changes.append(_kq.kevent(fd, kfilter, _kq.KQ_EV_ADD | edge))
            elif old & bit and not new & bit:
                changes.append(_kq.kevent(fd, kfilter, _kq.KQ_EV_DELETE))
        if changes:
            self._kq.control(changes, 0, 0)

    def register(self, fd: int, mask: int) -> None:
        if fd in self._masks:
            raise FileExistsError(f"fd {fd} is already registered")
        self._apply(fd, 0, mask)
        self._masks[fd] = mask

    def modify(self, fd: int, mask: int) -> None:
        self._apply(fd, self._masks[fd], mask)
        self._masks[fd] = mask

    def unregister(self, fd: int) -> None:
        old = self._masks.pop(fd)
        try:
            self._apply(fd, old, 0)
        except OSError:
            # The descriptor may already be closed; the kernel dropped its filters then.
            pass

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        events = self._kq.control(None, max(len(self._masks), 1), None if timeout < 0 else timeout)
        ready = []
        for kev in events:
            mask = IN if kev.filter == _kq.KQ_FILTER_READ else OUT
            if kev.flags & _kq.KQ_EV_EOF:
                mask |= HUP
            if kev.flags & _kq.KQ_EV_ERROR:
                mask |= ERR
            ready.append((kev.ident, mask))
        return ready

    def close(self) -> None:
        self._kq.close()
