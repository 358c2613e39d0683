"""XREAD and XREADGROUP as Redis 7.0 runs them, BLOCK included: the parse answers what it can at once, and hands a
read that must wait to resp_server.blocking (its keys, its deadline and the attempt that serves it later)."""

from __future__ import annotations

from collections.abc import Callable

from resp_server.replies import Encoder, Reply, bulk, error, join_replies, parse_int64
from resp_server.store import KeyValueStore
from resp_server.stream_groups import consumer_of, distance, has_tombstones, nogroup
from resp_server.streams import INVALID_ID, entry_reply, id_text, next_id, parse_id
from resp_server.values import (
    NO_ENTRIES_READ,
    NOT_INTEGER,
    SYNTAX,
    Consumer,
    ConsumerGroup,
    PendingEntry,
    Stream,
    StreamId,
    _of,
)

_BLOCKED_COUNT = 1000
"""The most entries a blocked read without COUNT is served at once (Redis's XREAD_BLOCKED_DEFAULT_COUNT)."""

Wait = tuple[list[bytes], "int | None", Callable[[bool], "Reply | None"]]
"""A read that must wait: its keys, its deadline in ms (None: forever), and the attempt that serves it (``True``
for the first try, which the parse has just made)."""


def _range(stream: Stream, after: StreamId, count: int) -> list[Reply]:
    """The entries after ``after``, up to ``count`` (0: all)."""
    start = next_id(after)
    replies: list[Reply] = []
    if start is not None:
        for entry_id, fields in stream.since(start):
            replies.append(entry_reply(entry_id, fields))
            if len(replies) == count:
                break
    return replies


def _deliver(store: KeyValueStore, stream: Stream, group: ConsumerGroup, consumer: Consumer, count: int,
             noack: bool) -> list[Reply]:  # fmt: skip
    """Deliver the entries after the group's last id (up to ``count``, 0: all) to ``consumer``."""
    start = next_id(group.last)
    if start is None:
        return []
    now = store.clock()
    replies: list[Reply] = []
    for entry_id, fields in stream.since(start):
        if group.entries_read != NO_ENTRIES_READ and not has_tombstones(stream, entry_id):
            group.entries_read += 1
        elif stream.added:
            group.entries_read = distance(stream, entry_id)
        group.last = entry_id
        replies.append(entry_reply(entry_id, fields))
        if not noack:
            pending = group.pending.get(entry_id)
            if pending is None:
                pending = group.pending[entry_id] = PendingEntry(consumer, now)
            else:  # XGROUP SETID moved the group back: the entry changes hands
                if pending.consumer is not None:
                    pending.consumer.pending.pop(entry_id, None)
                pending.consumer, pending.delivered, pending.count = consumer, now, 1
            consumer.pending[entry_id] = pending
        if len(replies) == count:
            break
    return replies


def _history(encoder: Encoder, store: KeyValueStore, stream: Stream, consumer: Consumer, after: StreamId,
             count: int) -> list[Reply]:  # fmt: skip
    """The entries after ``after`` that ``consumer`` holds, delivered again (an entry deleted since: a null)."""
    start = next_id(after) or (0, 0)
    now = store.clock()
    replies: list[Reply] = []
    for entry_id in sorted(consumer.pending):
        if entry_id < start:
            continue
        if count and len(replies) == count:
            break
        fields = stream.entries.get(entry_id)
        if fields is None:
            replies.append(join_replies([b"*2\r\n", bulk(id_text(entry_id)), encoder.nil_array]))
            continue
        pending = consumer.pending[entry_id]
        pending.delivered = now
        pending.count += 1
        replies.append(entry_reply(entry_id, fields))
    return replies


def _streams_reply(encoder: Encoder, served: list[tuple[bytes, list[Reply]]]) -> Reply:
    """XREAD's reply: per stream its name and entries (an array of pairs in RESP2, a map in RESP3)."""
    parts: list[Reply] = [b"%%%d\r\n" % len(served) if encoder.proto == 3 else b"*%d\r\n" % len(served)]
    for key, entries in served:
        if encoder.proto == 2:
            parts.append(b"*2\r\n")
        parts += [bulk(key), b"*%d\r\n" % len(entries), *entries]
    return join_replies(parts)


class _Read:
    """One XREAD or XREADGROUP, parsed."""

    __slots__ = ("block", "consumer", "count", "group", "keys", "noack")

    def __init__(self) -> None:
        self.block = -1  # ms; -1: no BLOCK
        self.count = 0
        self.noack = False
        self.group: bytes | None = None
        self.consumer = b""
        self.keys: list[bytes] = []


def _parse(args: list[bytes], grouped: bool) -> _Read | bytes:
    """The options of ``args`` up to STREAMS, as Redis checks them, and the keys; or the error reply."""
    read = _Read()
    streams_at = 0
    i = 1
    while i < len(args):
        more = len(args) - i - 1
        option = args[i].upper()
        if option == b"BLOCK" and more:
            parsed = parse_int64(args[i + 1])
            if parsed is None:
                return error(b"ERR timeout is not an integer or out of range")
            if parsed < 0:
                return error(b"ERR timeout is negative")
            read.block = parsed
            i += 2
        elif option == b"COUNT" and more:
            parsed = parse_int64(args[i + 1])
            if parsed is None:
                return NOT_INTEGER
            read.count = max(parsed, 0)
            i += 2
        elif option == b"STREAMS" and more:
            streams_at = i + 1
            if (len(args) - streams_at) % 2:
                return error(
                    b"ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."
                )
            break
        elif option == b"GROUP" and more >= 2:
            if not grouped:
                return error(b"ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.")
            read.group, read.consumer = args[i + 1], args[i + 2]
            i += 3
        elif option == b"NOACK":
            if not grouped:
                return error(b"ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.")
            read.noack = True
            i += 1
        else:
            return SYNTAX
    if not streams_at:
        return SYNTAX
    if grouped and read.group is None:
        return error(b"ERR Missing GROUP option for XREADGROUP")
    read.keys = args[streams_at : (len(args) + streams_at) // 2]
    return read


def _start_ids(store: KeyValueStore, read: _Read, texts: list[bytes]) -> list[StreamId | None] | bytes:
    """Where each stream is read from (None: ``>``, the group's new entries), or the error reply."""
    wanted: list[StreamId | None] = []
    for key, text in zip(read.keys, texts, strict=True):
        stream: Stream | None = _of(store, key, Stream)
        if read.group is not None and (stream is None or read.group not in stream.groups):
            return nogroup(key, read.group, b" in XREADGROUP with GROUP option")
        if text == b"$":
            if read.group is not None:
                return error(
                    b"ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of "
                    b"this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would "
                    b"just return an empty result set."
                )
            wanted.append((0, 0) if stream is None else stream.last)
        elif text == b">":
            if read.group is None:
                return error(
                    b"ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> "
                    b"<consumer> option."
                )
            wanted.append(None)
        else:
            parsed = parse_id(text)
            if parsed is None:
                return INVALID_ID
            wanted.append(parsed)
    return wanted


def read_streams(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply | Wait:
    """XREAD or XREADGROUP: the reply when it can answer now (or has no BLOCK), else the :data:`Wait`."""
    read = _parse(args, args[0].upper() == b"XREADGROUP")
    if isinstance(read, bytes):
        return read
    wanted = _start_ids(store, read, args[len(args) - len(read.keys) :])
    if isinstance(wanted, bytes):
        return wanted
    served: list[tuple[bytes, list[Reply]]] = []
    for key, after in zip(read.keys, wanted, strict=True):
        stream = store.get(key)
        if stream is None:
            continue
        newest = stream.newest()
        if read.group is None:
            if after is not None and newest is not None and newest > after:
                served.append((key, _range(stream, after, read.count)))
            continue
        group = stream.groups[read.group]
        if after is not None:
            consumer = consumer_of(store, key, group, read.consumer)
            served.append((key, _history(encoder, store, stream, consumer, after, read.count)))
        elif newest is not None and newest > group.last:
            consumer = consumer_of(store, key, group, read.consumer)
            served.append((key, _deliver(store, stream, group, consumer, read.count, read.noack)))
    if served:
        return _streams_reply(encoder, served)
    if read.block == -1:
        return encoder.nil_array
    return _wait(encoder, store, read, wanted)


def _wait(encoder: Encoder, store: KeyValueStore, read: _Read, wanted: list[StreamId | None]) -> Wait:
    count = read.count or _BLOCKED_COUNT

    def attempt(first: bool) -> Reply | None:
        if first:  # the parse has just found nothing to serve
            return None
        for key, after in zip(read.keys, wanted, strict=True):
            stream = store.get(key)
            if read.group is None:
                if type(stream) is Stream and after is not None and stream.last > after:
                    return _streams_reply(encoder, [(key, _range(stream, after, count))])
                continue
            if type(stream) is not Stream:
                return error(b"UNBLOCKED the stream key no longer exists")
            group = stream.groups.get(read.group)
            if group is None:
                return error(b"NOGROUP the consumer group this client was blocked on no longer exists")
            if stream.last > group.last:
                consumer = consumer_of(store, key, group, read.consumer)
                entries = _deliver(store, stream, group, consumer, count, read.noack)
                return _streams_reply(encoder, [(key, entries)])
        return None

    return read.keys, (store.clock() + read.block if read.block else None), attempt
