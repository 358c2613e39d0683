"""Outbound bytes the kernel did not take yet: a queue of immutable chunks, flushed by gather writes."""

from __future__ import annotations

from collections import deque

from netloop._buffer import flat

# Linux's IOV_MAX is 1024; fewer chunks per sendmsg keep each call's setup cheap.
MAX_IOV = 64


class OutboundBuffer:
    """FIFO of ``bytes`` chunks with a byte count.

    Callers append immutable data only (the connection copies mutable buffers first), so chunks are never
    copied again until they reach the kernel.
    """

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        # No deque until something is buffered: most connections never need one.
        self._chunks: deque[bytes | memoryview] | None = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def append(self, data: bytes | memoryview) -> None:
        if type(data) is memoryview:
            data = flat(data)  # len() counts bytes, not items
        if data:
            if self._chunks is None:
                self._chunks = deque()
            self._chunks.append(data)
            self._size += len(data)

    def chunks(self) -> list[bytes | memoryview]:
        """Up to ``MAX_IOV`` leading chunks, for one ``sendmsg``."""
        chunks = self._chunks
        if chunks is None:
            return []
        if len(chunks) <= MAX_IOV:
            return list(chunks)
        return [chunks[i] for i in range(MAX_IOV)]

    def advance(self, n: int) -> None:
        """Drop ``n`` bytes from the front (they were sent)."""
        if n > self._size:
            raise ValueError(f"cannot advance {n} bytes past {self._size} buffered")
        self._size -= n
        chunks = self._chunks
        if chunks is None:
            return
        while n:
            head = chunks[0]
            if n >= len(head):
                n -= len(head)
                chunks.popleft()
            else:
                chunks[0] = memoryview(head)[n:]
                n = 0
        if not self._size:
            self._chunks = None

    def peek_all(self) -> bytes:
        """Everything buffered, as one bytes object (tests and diagnostics)."""
        return b"".join(self._chunks or ())

    def clear(self) -> None:
        self._chunks = None
        self._size = 0
