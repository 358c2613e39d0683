"""Streams: XADD, XLEN and XDEL (consumer groups are resp_server.stream_groups' and stream_pending's, XINFO
resp_server.stream_info's)."""

from __future__ import annotations

import time

from resp_server.replies import (
    MANY,
    Entry,
    Reply,
    arity_error,
    bulk,
    error,
    parse_int64,
)
from resp_server.store import KeyValueStore
from resp_server.values import (
    ZERO,
    Stream,
    _of,
    _typed,
    integer,
)


def _stream_id(text: bytes, last: tuple[int, int] | None = None) -> tuple[int, int] | None:
    if text == b"*" and last is not None:
        now = time.time_ns() // 1_000_000
        return (now, 0) if now > last[0] else (last[0], last[1] + 1)
    head, _, tail = text.partition(b"-")
    ms = parse_int64(head)
    if ms is None or ms < 0:
        return None
    if not tail:
        return (ms, 0)
    if tail == b"*" and last is not None:
        return (ms, last[1] + 1 if ms == last[0] else 0)
    seq = parse_int64(tail)
    return None if seq is None or seq < 0 else (ms, seq)


def _id_text(entry_id: tuple[int, int]) -> bytes:
    return b"%d-%d" % entry_id


@_typed
def _xadd(store: KeyValueStore, args: list[bytes]) -> Reply:
    stream = _of(store, args[1], Stream)
    fresh = stream is None
    if stream is None:
        stream = Stream()
    fields = args[3:]
    if not fields or len(fields) % 2:
        return arity_error(b"xadd")
    entry_id = _stream_id(args[2], stream.last)
    if entry_id is None:
        return error(b"ERR Invalid stream ID specified as stream command argument")
    if entry_id <= stream.last:
        return error(b"ERR The ID specified in XADD is equal or smaller than the target stream top item")
    stream.entries[entry_id] = list(fields)
    stream.last = entry_id
    stream.added += 1
    if fresh:
        store.set(args[1], stream)
    else:
        store.modified(args[1])
    return bulk(_id_text(entry_id))


@_typed
def _xlen(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(len(_of(store, args[1], Stream) or ()))


@_typed
def _xdel(store: KeyValueStore, args: list[bytes]) -> Reply:
    stream = _of(store, args[1], Stream)
    if stream is None:
        return ZERO
    removed = 0
    for text in args[2:]:
        entry_id = _stream_id(text)
        if entry_id is not None and stream.entries.pop(entry_id, None) is not None:
            removed += 1
            stream.max_deleted = max(stream.max_deleted, entry_id)
    store.modified(args[1])
    return integer(removed)


STREAMS: dict[bytes, Entry] = {
    b"XADD": (_xadd, 5, MANY),
    b"XLEN": (_xlen, 2, 2),
    b"XDEL": (_xdel, 3, MANY),
}
