"""Connection buffers: ``RingBuffer`` for inbound bytes, ``OutboundBuffer`` for bytes the kernel refused."""

from __future__ import annotations

from typing import overload

Buffer = bytes | bytearray | memoryview


@overload
def flat(data: memoryview) -> bytes | memoryview: ...
@overload
def flat(data: Buffer) -> Buffer: ...
def flat(data: Buffer) -> Buffer:
    """``data`` as a buffer whose ``len`` is its size in bytes and that a socket call takes as it is.

    A memoryview of wider items (``array('I')``) or of several dimensions counts items, and a strided one is refused
    by the socket calls: either is cast to a flat view of bytes of the same memory, or copied where it is not
    contiguous. Everything that counts outbound bytes goes through this one function.
    """
    if type(data) is not memoryview:
        if type(data) is bytes or type(data) is bytearray:
            return data
        data = memoryview(data)
    if data.itemsize == 1 and data.ndim == 1 and data.c_contiguous:
        return data
    return data.cast("B") if data.c_contiguous else data.tobytes()
