"""Stream consumer groups as Redis 7.0 runs them: XGROUP, XREADGROUP (blocking through resp_server.blocking), XACK,
XPENDING, XCLAIM and XAUTOCLAIM, with their errors and keyspace events.

A group keeps the last id it delivered and one :class:`~resp_server.values.PendingEntry` per entry delivered and
not acknowledged, shared by the group's pending list and its consumer's, as Redis's NACKs are: memory grows with
the unacknowledged deliveries only. Times are the store's clock in ms.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from resp_server.replies import (
    MANY,
    OK,
    Encoder,
    Entry,
    Reply,
    bulk,
    error,
    join_replies,
    parse_int64,
)
from resp_server.store import KeyValueStore
from resp_server.values import (
    NO_ENTRIES_READ,
    NOT_INTEGER,
    ONE,
    SYNTAX,
    ZERO,
    Consumer,
    ConsumerGroup,
    PendingEntry,
    Stream,
    StreamId,
    _of,
    _typed,
    integer,
)

U64 = 2**64 - 1
INVALID_ID = error(b"ERR Invalid stream ID specified as stream command argument")
_WHITESPACE_NUMBER = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)")


def _unsigned(text: bytes) -> int | None:
    """``text`` as Redis's ``string2ull`` reads it: a strict integer, else what ``strtoull`` accepts."""
    value = parse_int64(text)
    if value is not None:
        return value if value >= 0 else None
    match = _WHITESPACE_NUMBER.fullmatch(text)
    if match is None or int(match[2]) > U64:
        return None
    return (-int(match[2])) % 2**64 if match[1] == b"-" else int(match[2])


def parse_id(text: bytes, missing_seq: int = 0, strict: bool = True) -> StreamId | None:
    """A stream id as Redis parses one (``ms[-seq]``, and ``-``/``+`` unless ``strict``), or None if invalid."""
    if len(text) > 127:
        return None
    if text == b"-" or text == b"+":
        return None if strict else ((0, 0) if text == b"-" else (U64, U64))
    head, dash, tail = text.partition(b"-")
    ms = _unsigned(head)
    seq = _unsigned(tail) if dash else missing_seq
    return None if ms is None or seq is None else (ms, seq)


def parse_interval(text: bytes, missing_seq: int) -> tuple[StreamId, bool] | None:
    """An interval's end (``(`` makes it exclusive), or None if invalid."""
    exclusive = len(text) > 1 and text[:1] == b"("
    parsed = parse_id(text[1:], missing_seq) if exclusive else parse_id(text, missing_seq, strict=False)
    return None if parsed is None else (parsed, exclusive)


def next_id(entry_id: StreamId) -> StreamId | None:
    """The id after ``entry_id``, None after the last possible one."""
    ms, seq = entry_id
    if seq < U64:
        return ms, seq + 1
    return None if ms == U64 else (ms + 1, 0)


def previous_id(entry_id: StreamId) -> StreamId | None:
    ms, seq = entry_id
    if seq:
        return ms, seq - 1
    return (ms - 1, U64) if ms else None


def id_text(entry_id: StreamId) -> bytes:
    return b"%d-%d" % entry_id


def id_bulk(entry_id: StreamId) -> bytes:
    text = id_text(entry_id)
    return b"$%d\r\n%b\r\n" % (len(text), text)


def entry_reply(entry_id: StreamId, fields: list[bytes]) -> Reply:
    parts: list[Reply] = [b"*2\r\n", bulk(id_text(entry_id)), b"*%d\r\n" % len(fields)]
    parts += [bulk(field) for field in fields]
    return join_replies(parts)


def notify(store: KeyValueStore, key: bytes, event: bytes) -> None:
    """Record the stream event ``event`` on ``key`` for keyspace notifications (published under its own name)."""
    if store.notifying:
        store.events.append((event, key))


def nogroup(key: bytes, group: bytes, where: bytes = b"") -> bytes:
    return error(b"NOGROUP No such key '%b' or consumer group '%b'%b" % (key, group, where))


def _syntax_for(args: list[bytes]) -> bytes:
    return error(
        b"ERR unknown subcommand or wrong number of arguments for '%b'. Try %b HELP." % (args[1], args[0].upper())
    )


def consumer_of(store: KeyValueStore, key: bytes, group: ConsumerGroup, name: bytes) -> Consumer:
    """The consumer ``name`` of ``group``, seen now; created (with its event) if it is not there."""
    consumer = group.consumers.get(name)
    if consumer is None:
        consumer = group.consumers[name] = Consumer(name, store.clock())
        notify(store, key, b"xgroup-createconsumer")
    else:
        consumer.seen = store.clock()
    return consumer


# -- lag and the logical read counter (Redis's streamRangeHasTombstones / streamEstimateDistanceFromFirstEverEntry)


def _has_tombstones(stream: Stream, start: StreamId) -> bool:
    """Whether an entry deleted by XDEL may lie at or after ``start``, among the stream's entries."""
    if not stream.entries or stream.max_deleted == (0, 0) or stream.first() > stream.max_deleted:
        return False
    return start <= stream.max_deleted


def _distance(stream: Stream, entry_id: StreamId) -> int:
    """``entry_id``'s logical read counter, or NO_ENTRIES_READ where it cannot be told."""
    if not stream.added:
        return 0
    if not stream.entries and entry_id <= stream.last:
        return stream.added
    if entry_id >= stream.last:
        return stream.added if entry_id == stream.last else NO_ENTRIES_READ
    first = stream.first()
    if stream.max_deleted == (0, 0) or stream.max_deleted < first:
        if entry_id < first:
            return stream.added - len(stream.entries)
        if entry_id == first:
            return stream.added - len(stream.entries) + 1
    return NO_ENTRIES_READ


def lag(stream: Stream, group: ConsumerGroup) -> int | None:
    """The entries not yet delivered to ``group``, None where fragmentation hides it."""
    if not stream.added:
        return 0
    if group.entries_read != NO_ENTRIES_READ and not _has_tombstones(stream, group.last):
        return stream.added - group.entries_read
    read = _distance(stream, group.last)
    return None if read == NO_ENTRIES_READ else stream.added - read


# -- XGROUP

_XGROUP_HELP = [
    b"XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"CREATE <key> <groupname> <id|$> [option]",
    b"    Create a new consumer group. Options are:",
    b"    * MKSTREAM",
    b"      Create the empty stream if it does not exist.",
    b"    * ENTRIESREAD entries_read",
    b"      Set the group's entries_read counter (internal use).",
    b"CREATECONSUMER <key> <groupname> <consumer>",
    b"    Create a new consumer in the specified group.",
    b"DELCONSUMER <key> <groupname> <consumer>",
    b"    Remove the specified consumer.",
    b"DESTROY <key> <groupname>",
    b"    Remove the specified group.",
    b"SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    b"    Set the current group ID and entries_read counter.",
    b"HELP",
    b"    Prints this help.",
]
HELP_XGROUP = join_replies([b"*%d\r\n" % len(_XGROUP_HELP), *(b"+%b\r\n" % line for line in _XGROUP_HELP)])


@_typed
def _xgroup(store: KeyValueStore, args: list[bytes]) -> Reply:
    """XGROUP CREATE/SETID/DESTROY/CREATECONSUMER/DELCONSUMER/HELP (the subcommand and its arity are checked
    before, by resp_server.subcommands)."""
    sub = args[1].upper()
    if sub == b"HELP":
        return HELP_XGROUP
    mkstream, entries_read = False, NO_ENTRIES_READ
    i = 5
    while i < len(args):
        option = args[i].upper()
        if sub == b"CREATE" and option == b"MKSTREAM":
            mkstream = True
            i += 1
        elif sub in (b"CREATE", b"SETID") and option == b"ENTRIESREAD" and i + 1 < len(args):
            parsed = parse_int64(args[i + 1])
            if parsed is None:
                return NOT_INTEGER
            if parsed < 0 and parsed != NO_ENTRIES_READ:
                return error(b"ERR value for ENTRIESREAD must be positive or -1")
            entries_read = parsed
            i += 2
        else:
            return _syntax_for(args)
    key, name = args[2], args[3]
    stream: Stream | None = _of(store, key, Stream)
    group = None if stream is None else stream.groups.get(name)
    if not mkstream:
        if stream is None:
            return error(
                b"ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use "
                b"the MKSTREAM option to create an empty stream automatically."
            )
        if group is None and sub in (b"SETID", b"CREATECONSUMER", b"DELCONSUMER"):
            return error(b"NOGROUP No such consumer group '%b' for key name '%b'" % (name, key))
    if sub == b"CREATE" and len(args) <= 8:
        return _create(store, key, stream, name, args[4], entries_read)
    assert stream is not None  # only CREATE takes MKSTREAM
    if sub == b"SETID" and group is not None and len(args) in (5, 7):
        start = stream.last if args[4] == b"$" else parse_id(args[4], strict=False)
        if start is None:
            return INVALID_ID
        group.last, group.entries_read = start, entries_read
        notify(store, key, b"xgroup-setid")
        return OK
    if sub == b"DESTROY" and len(args) == 4:
        if group is None:
            return ZERO
        del stream.groups[name]
        notify(store, key, b"xgroup-destroy")
        if key in store.blocked and key not in store.ready:  # its blocked readers get NOGROUP
            store.ready.append(key)
        return ONE
    if sub == b"CREATECONSUMER" and group is not None:
        if args[4] in group.consumers:
            return ZERO
        consumer_of(store, key, group, args[4])
        return ONE
    if sub == b"DELCONSUMER" and group is not None:
        consumer = group.consumers.pop(args[4], None)
        if consumer is None:
            return ZERO
        for entry_id in consumer.pending:
            del group.pending[entry_id]
        notify(store, key, b"xgroup-delconsumer")
        return integer(len(consumer.pending))
    return _syntax_for(args)


def _create(store: KeyValueStore, key: bytes, stream: Stream | None, name: bytes, text: bytes, entries_read: int
            ) -> Reply:  # fmt: skip
    if text == b"$":
        start = (0, 0) if stream is None else stream.last
    else:
        parsed = parse_id(text)
        if parsed is None:
            return INVALID_ID
        start = parsed
    if stream is None:
        stream = Stream()
        store.set(key, stream)
    if name in stream.groups:
        return error(b"BUSYGROUP Consumer Group name already exists")
    stream.groups[name] = ConsumerGroup(start, entries_read)
    notify(store, key, b"xgroup-create")
    return OK


# -- XREADGROUP

_BLOCKED_COUNT = 1000
"""The most entries a blocked XREADGROUP without COUNT is served at once (Redis's XREAD_BLOCKED_DEFAULT_COUNT)."""


def _after(stream: Stream, start: StreamId) -> Iterator[tuple[StreamId, list[bytes]]]:
    """The entries from ``start`` on, in id order."""
    if stream.entries and next(reversed(stream.entries)) < start:
        return
    for entry_id, fields in stream.entries.items():
        if entry_id >= start:
            yield entry_id, fields


def _deliver(store: KeyValueStore, stream: Stream, group: ConsumerGroup, consumer: Consumer, count: int,
             noack: bool) -> list[Reply]:  # fmt: skip
    """Deliver the entries after the group's last id (up to ``count``, 0: all) to ``consumer``."""
    start = next_id(group.last)
    if start is None:
        return []
    now = store.clock()
    replies: list[Reply] = []
    for entry_id, fields in _after(stream, start):
        if group.entries_read != NO_ENTRIES_READ and not _has_tombstones(stream, entry_id):
            group.entries_read += 1
        elif stream.added:
            group.entries_read = _distance(stream, entry_id)
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


def read_group(encoder: Encoder, store: KeyValueStore, args: list[bytes]
               ) -> Reply | tuple[list[bytes], int | None, Callable[[bool], Reply | None]]:  # fmt: skip
    """XREADGROUP: its reply when it can answer now (or has no BLOCK), else what a blocked session waits with:
    the keys, the deadline in ms (None: forever) and the attempt that serves it."""
    timeout, count, noack, streams_at = -1, 0, False, 0
    group_name = consumer_name = b""
    grouped = False
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
            timeout = parsed
            i += 2
        elif option == b"COUNT" and more:
            parsed = parse_int64(args[i + 1])
            if parsed is None:
                return NOT_INTEGER
            count = max(parsed, 0)
            i += 2
        elif option == b"STREAMS" and more:
            streams_at = i + 1
            if (len(args) - streams_at) % 2:
                return error(
                    b"ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."
                )
            break
        elif option == b"GROUP" and more >= 2:
            group_name, consumer_name, grouped = args[i + 1], args[i + 2], True
            i += 3
        elif option == b"NOACK":
            noack = True
            i += 1
        else:
            return SYNTAX
    if not streams_at:
        return SYNTAX
    if not grouped:
        return error(b"ERR Missing GROUP option for XREADGROUP")
    half = (len(args) - streams_at) // 2
    keys = args[streams_at : streams_at + half]
    wanted: list[StreamId | None] = []  # None: ">", new entries
    for key, text in zip(keys, args[streams_at + half :], strict=True):
        stream = _of(store, key, Stream)
        if stream is None or group_name not in stream.groups:
            return nogroup(key, group_name, b" in XREADGROUP with GROUP option")
        if text == b"$":
            return error(
                b"ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this "
                b"consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just "
                b"return an empty result set."
            )
        parsed_id = None if text == b">" else parse_id(text)
        if parsed_id is None and text != b">":
            return INVALID_ID
        wanted.append(parsed_id)
    served: list[tuple[bytes, list[Reply]]] = []
    for key, after in zip(keys, wanted, strict=True):
        stream = store.get(key)
        group = stream.groups[group_name]
        if after is not None:
            consumer = consumer_of(store, key, group, consumer_name)
            served.append((key, _history(encoder, store, stream, consumer, after, count)))
        elif stream.entries and next(reversed(stream.entries)) > group.last:
            consumer = consumer_of(store, key, group, consumer_name)
            served.append((key, _deliver(store, stream, group, consumer, count, noack)))
    if served:
        return _streams_reply(encoder, served)
    if timeout == -1:
        return encoder.nil_array

    def attempt(first: bool) -> Reply | None:
        if first:  # the parse above has just found nothing to serve
            return None
        for key in keys:
            stream = store.get(key)
            if type(stream) is not Stream:
                return error(b"UNBLOCKED the stream key no longer exists")
            group = stream.groups.get(group_name)
            if group is None:
                return error(b"NOGROUP the consumer group this client was blocked on no longer exists")
            if stream.last > group.last:
                consumer = consumer_of(store, key, group, consumer_name)
                entries = _deliver(store, stream, group, consumer, count or _BLOCKED_COUNT, noack)
                return _streams_reply(encoder, [(key, entries)])
        return None

    return keys, (store.clock() + timeout if timeout else None), attempt


STREAM_GROUPS: dict[bytes, Entry] = {
    b"XGROUP": (_xgroup, 2, MANY),
}
"""XGROUP for the keyspace table (XREADGROUP, which may block, is resp_server.blocking's)."""
