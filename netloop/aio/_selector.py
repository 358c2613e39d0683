"""The ``selectors`` face of a netloop loop's poller, so asyncio's selector event loop registers on it.

asyncio's ``_add_reader``/``_remove_reader``/``_add_writer``/``_remove_writer`` keep a ``(reader, writer)`` pair of
handles per descriptor in their selector; this selector keeps those keys and watches each descriptor on the netloop
loop's own poller (``EventLoop.attach``/``detach``, ``poller.modify``), one mask for both directions. A readiness
event queues the handles on the netloop loop's task queue, as asyncio queues them; nothing calls ``select``.
"""

from __future__ import annotations

import functools
import selectors
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from netloop._poller import IN, OUT
from netloop.aio._ready import fast_run_handle

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop


def _fd_of(fileobj: Any) -> int:
    fd = fileobj if isinstance(fileobj, int) else int(fileobj.fileno())
    if fd < 0:
        raise ValueError(f"invalid file descriptor: {fd}")
    return fd


def _mask(events: int) -> int:
    return (IN if events & selectors.EVENT_READ else 0) | (OUT if events & selectors.EVENT_WRITE else 0)


class LoopSelector(selectors.BaseSelector):
    """asyncio's descriptors on a netloop loop's poller; only the asyncio loop on that loop's thread uses it."""

    def __init__(self, owner: EventLoop) -> None:
        self._owner = owner
        self._queue = owner._tasks
        self._keys: dict[int, selectors.SelectorKey] = {}
        self.run_handle: Callable[[Any], None] = fast_run_handle  # the loop's choice (Loop.set_debug)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"invalid events: {events!r}")
        fd = _fd_of(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        owner = self._owner
        if fd in owner.readers:
            # A netloop connection or listener: asyncio would take its events away from it.
            raise ValueError(f"file descriptor {fd} is served by the netloop loop itself")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        try:
            owner.attach(fd, functools.partial(self._ready, fd), _mask(events))
        except BaseException:
            owner.detach(fd)  # attach records the handler before the poller refuses (a regular file: EPERM)
            raise
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fd_of(fileobj)
        key = self._keys.pop(fd)  # KeyError when not registered, as selectors raise
        self._owner.detach(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fd_of(fileobj)
        old = self._keys.get(fd)
        if old is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"invalid events: {events!r}")
        if events != old.events:
            self._owner.poller.modify(fd, _mask(events))
        key = self._keys[fd] = selectors.SelectorKey(fileobj, fd, events, data)
        return key

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._keys[_fd_of(fileobj)]
        except (ValueError, KeyError):
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        raise NotImplementedError("a netloop loop polls by itself: its selector is never asked to select")

    def close(self) -> None:
        owner = self._owner
        for fd in list(self._keys):
            owner.detach(fd)
        self._keys.clear()

    def _ready(self, fd: int, ev: int) -> None:
        """Readiness of ``fd``: queue its reader, then its writer (ERR and HUP queue both, as selectors report them).

        Queued behind the callbacks already waiting, as asyncio's loop runs them: a callback scheduled before the
        poll (a task's first step that sets up the future a protocol's ``datagram_received`` completes) runs first.
        """
        key = self._keys.get(fd)
        if key is None:
            return
        reader, writer = key.data
        if ev & ~OUT and reader is not None:
            self._queue.append((self.run_handle, (reader,)))
        if ev & ~IN and writer is not None:
            self._queue.append((self.run_handle, (writer,)))
