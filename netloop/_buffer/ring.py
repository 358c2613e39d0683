"""An auto-growing ring buffer that gives its memory back whenever it runs empty."""

from __future__ import annotations

from collections.abc import Callable

from netloop._errors import ShortBufferError

_MIN_CAP = 4096
# Every empty ring shares these, so an idle connection's ring is a bare object.
_NO_STORAGE = bytearray()
_NO_VIEW = memoryview(_NO_STORAGE)


def _capacity_for(n: int) -> int:
    cap = _MIN_CAP
    while cap < n:
        cap <<= 1
    return cap


class RingBuffer:
    """FIFO bytes with wrap-around storage.

    Every byte-returning method returns a fresh ``bytes`` object, so nothing handed out aliases the storage.
    Asking for more than ``len(self)`` bytes raises ``ShortBufferError`` and consumes nothing; ``n < 0`` means all.
    An empty buffer holds no storage (an idle connection stays small).
    """

    __slots__ = ("_buf", "_cap", "_head", "_low", "_size", "_view", "_watch")

    def __init__(self) -> None:
        self._buf = _NO_STORAGE
        self._view = _NO_VIEW
        self._cap = 0
        self._head = 0
        self._size = 0
        self._watch: Callable[[], object] | None = None
        self._low = 0

    def watch(self, low: int, callback: Callable[[], object] | None) -> None:
        """Call ``callback()`` once, as soon as reading leaves ``low`` bytes or fewer (None: stop watching)."""
        self._low = low
        self._watch = callback

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        """Bytes of storage held now (0 when empty)."""
        return self._cap

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not n:
            return
        size = self._size
        if size + n > self._cap:
            self._grow(size + n)
        cap = self._cap
        view = self._view
        tail = (self._head + size) % cap
        first = min(n, cap - tail)
        view[tail : tail + first] = data[:first]
        if first < n:
            view[: n - first] = data[first:]
        self._size = size + n

    def _grow(self, need: int) -> None:
        cap = _capacity_for(need)
        buf = bytearray(cap)
        size = self._size
        if size:
            buf[:size] = self._linear(size)
        if self._view is not _NO_VIEW:
            self._view.release()
        self._buf = buf
        self._view = memoryview(buf)
        self._cap = cap
        self._head = 0

    def _linear(self, n: int) -> bytes:
        head = self._head
        cap = self._cap
        view = self._view
        if head + n <= cap:
            return view[head : head + n].tobytes()
        return b"".join((view[head:cap], view[: n - (cap - head)]))

    def _check(self, n: int) -> int:
        if n < 0:
            return self._size
        if n > self._size:
            raise ShortBufferError(f"asked for {n} bytes, {self._size} buffered")
        return n

    def peek(self, n: int = -1) -> bytes:
        n = self._check(n)
        return self._linear(n) if n else b""

    def read(self, n: int = -1) -> bytes:
        n = self._check(n)
        if not n:
            return b""
        data = self._linear(n)
        self._consume(n)
        return data

    def discard(self, n: int = -1) -> int:
        n = self._check(n)
        self._consume(n)
        return n

    def read_into(self, buf: bytearray | memoryview) -> int:
        """Move up to ``len(buf)`` bytes into ``buf``; returns how many."""
        n = min(len(buf), self._size)
        if not n:
            return 0
        head = self._head
        first = min(n, self._cap - head)
        view = self._view
        buf[:first] = view[head : head + first]
        if first < n:
            buf[first:n] = view[: n - first]
        self._consume(n)
        return n

    def _consume(self, n: int) -> None:
        self._size -= n
        if self._size:
            self._head = (self._head + n) % self._cap
        else:
            self.release()
        watch = self._watch
        if watch is not None and self._size <= self._low:
            self._watch = None
            watch()

    def release(self) -> None:
        """Drop all content and storage."""
        if self._view is not _NO_VIEW:
            self._view.release()
        self._buf = _NO_STORAGE
        self._view = _NO_VIEW
        self._cap = 0
        self._head = 0
        self._size = 0
