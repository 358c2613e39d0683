"""The C heap: reads sized for the allocator, and freed outbound memory handed back to the kernel.

glibc returns a thread arena's memory only from the top of its heaps, so a large buffer freed under a few live
blocks stays resident until ``malloc_trim``. A loop that let go of a large outbound buffer asks for a trim; at most
one runs per ``_TRIM_INTERVAL`` in the process, and one asked for sooner is deferred, never dropped.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

# A trim walks every arena's free pages (about 0.1 s per GB retained): once a second at most, process-wide.
_TRIM_INTERVAL = 1.0
_trim_at = 0.0  # when the scheduled trim runs (in the past when none is)
_trimmed = float("-inf")  # when the last one ran


def release_soon(call_later: Callable[[float, Callable[[], None]], Any]) -> None:
    """Schedule a trim with the loop's ``call_later`` (loop thread), unless one is scheduled already."""
    global _trim_at
    now = time.monotonic()
    if _trim_at >= now or _malloc_trim() is None:
        return  # a trim is already scheduled: it will take this release too
    _trim_at = max(now, _trimmed + _TRIM_INTERVAL)
    call_later(_trim_at - now, _trim_heap)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError, TypeError):
        return None


def _trim_heap() -> None:
    global _trimmed
    _trimmed = time.monotonic()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)  # ctypes releases the GIL: other loops run on (briefly waiting for an arena it holds)


@functools.cache
def fit_allocator(read_size: int) -> None:
    """Let the C allocator serve read-sized blocks from its heap rather than mapping and trimming for each read.

    Each read allocates ``read_size`` bytes and shrinks the block to what arrived. glibc maps blocks above its
    threshold (128 KiB at first) from the kernel one by one, and a mapped block that is shrunk before it is freed
    never raises that threshold: every short read would cost three more system calls and a page fault. Freeing
    one mapped block raises the threshold to its size, and the heap's trim threshold to twice that, so the heap
    keeps the memory reads reuse instead of returning it between reads. Elsewhere this is one harmless allocation.
    Once per process and read size: the thresholds are the process's.
    """
    bytes(max(read_size, 1 << 20) + 4096)
