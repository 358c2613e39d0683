"""Streams: the core of XADD, XLEN, XDEL, XGROUP, XREADGROUP and XINFO STREAM (what Redis's keyspace tests touch)."""

from __future__ import annotations

import time

from resp_server.replies import (
    MANY,
    OK,
    Encoder,
    Entry,
    Reply,
    arity_error,
    array,
    bulk,
    error,
    join_replies,
    parse_int64,
    per_protocol,
)
from resp_server.store import KeyValueStore
from resp_server.values import (
    NO_SUCH_KEY,
    ONE,
    SYNTAX,
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


@_typed
def _xgroup(store: KeyValueStore, args: list[bytes]) -> Reply:
    sub = args[1].upper()
    if sub not in (b"CREATE", b"SETID", b"DESTROY") or len(args) < 4:
        return error(b"ERR unknown subcommand '%b'. Try XGROUP HELP." % args[1])
    stream = _of(store, args[2], Stream)
    if stream is None:
        return error(b"ERR The XGROUP subcommand requires the key to exist.")
    name = args[3]
    if sub == b"DESTROY":
        return ONE if stream.groups.pop(name, None) is not None else ZERO
    if len(args) < 5:
        return arity_error(b"xgroup|" + sub.lower())
    start = stream.last if args[4] == b"$" else _stream_id(args[4])
    if start is None:
        return error(b"ERR Invalid stream ID specified as stream command argument")
    if sub == b"CREATE":
        if name in stream.groups:
            return error(b"BUSYGROUP Consumer Group name already exists")
        stream.groups[name] = {"last": start, "pending": {}, "consumers": set()}
    else:
        if name not in stream.groups:
            return error(b"NOGROUP No such consumer group '%b' for key name '%b'" % (name, args[2]))
        stream.groups[name]["last"] = start
    store.modified(args[2])
    return OK


def _entry(entry_id: tuple[int, int], fields: list[bytes]) -> Reply:
    return join_replies([b"*2\r\n", bulk(_id_text(entry_id)), array(fields)])


@per_protocol
@_typed
def _xreadgroup(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    upper = [a.upper() for a in args]
    if len(args) < 7 or upper[1] != b"GROUP":
        return SYNTAX
    group_name, consumer = args[2], args[3]
    count: int | None = None
    noack = False
    i = 4
    while i < len(args) and upper[i] != b"STREAMS":
        if upper[i] == b"COUNT" and i + 1 < len(args):
            count = parse_int64(args[i + 1])
            i += 2
        elif upper[i] == b"NOACK":
            noack = True
            i += 1
        elif upper[i] == b"BLOCK" and i + 1 < len(args):
            i += 2
        else:
            return SYNTAX
    rest = args[i + 1 :]
    if not rest or len(rest) % 2:
        return SYNTAX
    keys, ids = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    results: list[Reply] = []
    replied = 0
    for key, wanted in zip(keys, ids, strict=True):
        stream = _of(store, key, Stream)
        group = None if stream is None else stream.groups.get(group_name)
        if stream is None or group is None:
            return error(
                b"NOGROUP No such key '%b' or consumer group '%b' in XREADGROUP with GROUP option" % (key, group_name)
            )
        group["consumers"].add(consumer)
        if wanted != b">":
            continue
        fresh = [(eid, f) for eid, f in sorted(stream.entries.items()) if eid > group["last"]]
        if count:
            fresh = fresh[:count]
        if not fresh:
            continue
        group["last"] = fresh[-1][0]
        if not noack:
            for eid, _ in fresh:
                group["pending"][eid] = consumer
        store.modified(key)
        replied += 1
        results += [b"*2\r\n", bulk(key), b"*%d\r\n" % len(fresh), *(_entry(e, f) for e, f in fresh)]
    if not replied:
        return encoder.nil_array
    return join_replies([b"*%d\r\n" % replied, *results])


# Redis packs a stream's entries into listpacks of up to this many (stream-node-max-entries), the keys of a radix
# tree; XINFO reports the tree's size, which this server estimates (exact for the small streams tests make).
_NODE_ENTRIES = 100


@per_protocol
@_typed
def _xinfo(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    """XINFO STREAM key: the fields Redis 7.0 reports, in its order (FULL and the GROUPS/CONSUMERS forms aside)."""
    if len(args) < 3 or args[1].upper() != b"STREAM":
        return error(b"ERR unknown subcommand or wrong number of arguments for '%b'. Try XINFO HELP." % args[1])
    full = len(args) > 3 and args[3].upper() == b"FULL"
    count = 10
    if full and len(args) == 6 and args[4].upper() == b"COUNT":
        parsed = parse_int64(args[5])
        if parsed is None:
            return error(b"ERR value is not an integer or out of range")
        count = parsed
    elif len(args) > 3 and not (full and len(args) == 4):
        return SYNTAX
    stream = _of(store, args[2], Stream)
    if stream is None:
        return NO_SUCH_KEY
    entries = sorted(stream.entries.items())
    if full:
        return _xinfo_full(encoder, stream, entries, count)
    keys = -(-len(entries) // _NODE_ENTRIES)
    first: Reply = _entry(*entries[0]) if entries else encoder.nil
    last: Reply = _entry(*entries[-1]) if entries else encoder.nil
    return join_replies(
        [
            encoder.map_header(10),
            b"$6\r\nlength\r\n:%d\r\n" % len(entries),
            b"$15\r\nradix-tree-keys\r\n:%d\r\n" % keys,
            b"$16\r\nradix-tree-nodes\r\n:%d\r\n" % (keys + 1),
            b"$17\r\nlast-generated-id\r\n",
            bulk(_id_text(stream.last)),
            b"$20\r\nmax-deleted-entry-id\r\n",
            bulk(_id_text(stream.max_deleted)),
            b"$13\r\nentries-added\r\n:%d\r\n" % stream.added,
            b"$23\r\nrecorded-first-entry-id\r\n",
            bulk(_id_text(entries[0][0] if entries else (0, 0))),
            b"$6\r\ngroups\r\n:%d\r\n" % len(stream.groups),
            b"$11\r\nfirst-entry\r\n",
            first,
            b"$10\r\nlast-entry\r\n",
            last,
        ]
    )


def _xinfo_full(encoder: Encoder, stream: Stream, entries: list[tuple[tuple[int, int], list[bytes]]], count: int
                ) -> Reply:  # fmt: skip
    """XINFO STREAM key FULL [COUNT n]: Redis 7.0's fields, the entries (the first ``count``, 0 for all) and each
    group with its pending entries and consumers. Delivery times and counts are not kept: they read 0 and 1."""
    keys = -(-len(entries) // _NODE_ENTRIES)
    shown = entries if count <= 0 else entries[:count]
    parts: list[Reply] = [
        encoder.map_header(9),
        b"$6\r\nlength\r\n:%d\r\n" % len(entries),
        b"$15\r\nradix-tree-keys\r\n:%d\r\n" % keys,
        b"$16\r\nradix-tree-nodes\r\n:%d\r\n" % (keys + 1),
        b"$17\r\nlast-generated-id\r\n",
        bulk(_id_text(stream.last)),
        b"$20\r\nmax-deleted-entry-id\r\n",
        bulk(_id_text(stream.max_deleted)),
        b"$13\r\nentries-added\r\n:%d\r\n" % stream.added,
        b"$23\r\nrecorded-first-entry-id\r\n",
        bulk(_id_text(entries[0][0] if entries else (0, 0))),
        b"$7\r\nentries\r\n*%d\r\n" % len(shown),
        *[_entry(*entry) for entry in shown],
        b"$6\r\ngroups\r\n*%d\r\n" % len(stream.groups),
    ]
    for name, group in sorted(stream.groups.items()):
        pending = sorted(group["pending"].items())
        parts += [
            encoder.map_header(7),
            b"$4\r\nname\r\n",
            bulk(name),
            b"$17\r\nlast-delivered-id\r\n",
            bulk(_id_text(group["last"])),
            b"$12\r\nentries-read\r\n",
            encoder.nil,
            b"$3\r\nlag\r\n",
            encoder.nil,
            b"$9\r\npel-count\r\n:%d\r\n" % len(pending),
            b"$7\r\npending\r\n*%d\r\n" % len(pending),
            *[join_replies([b"*4\r\n", bulk(_id_text(eid)), bulk(owner), b":0\r\n:1\r\n"]) for eid, owner in pending],
            b"$9\r\nconsumers\r\n*%d\r\n" % len(group["consumers"]),
        ]
        for consumer in sorted(group["consumers"]):
            owned = [eid for eid, owner in pending if owner == consumer]
            parts += [
                encoder.map_header(4),
                b"$4\r\nname\r\n",
                bulk(consumer),
                b"$9\r\nseen-time\r\n:0\r\n",
                b"$9\r\npel-count\r\n:%d\r\n" % len(owned),
                b"$7\r\npending\r\n*%d\r\n" % len(owned),
                *[join_replies([b"*3\r\n", bulk(_id_text(eid)), b":0\r\n:1\r\n"]) for eid in owned],
            ]
    return join_replies(parts)


STREAMS: dict[bytes, Entry] = {
    b"XADD": (_xadd, 5, MANY),
    b"XLEN": (_xlen, 2, 2),
    b"XDEL": (_xdel, 3, MANY),
    b"XGROUP": (_xgroup, 2, MANY),
    b"XREADGROUP": (_xreadgroup, 7, MANY),
    b"XINFO": (_xinfo, 2, MANY),
}
