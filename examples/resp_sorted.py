"""The core of sorted sets and streams (what Redis's keyspace tests touch), SORT and MEMORY USAGE."""

from __future__ import annotations

import sys
from collections import deque

from examples.kvstore import KeyValueStore
from examples.resp_commands import (
    _ANY,
    NIL,
    NIL_ARRAY,
    OK,
    Command,
    Reply,
    arity_error,
    array,
    bulk,
    error,
    parse_int64,
)
from examples.resp_values import (
    NO_SUCH_KEY,
    NOT_FLOAT,
    NOT_INTEGER,
    ONE,
    SYNTAX,
    ZERO,
    Stream,
    ZSet,
    _of,
    _pop_entries,
    _range,
    _typed,
    _Wrong,
    format_float,
    integer,
    parse_float,
)

# -- sorted sets and streams: the core that the keyspace tests touch ----------------------------------------------


@_typed
def _zadd(store: KeyValueStore, args: list[bytes]) -> Reply:
    flags = set()
    i = 2
    while i < len(args) and args[i].upper() in (b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"):
        flags.add(args[i].upper())
        i += 1
    pairs = args[i:]
    if not pairs or len(pairs) % 2:
        return SYNTAX
    if b"NX" in flags and (b"XX" in flags or b"GT" in flags or b"LT" in flags):
        return error(b"ERR GT, LT, and/or NX options at the same time are not compatible")
    scores = []
    for j in range(0, len(pairs), 2):
        score = parse_float(pairs[j])
        if score is None:
            return NOT_FLOAT
        scores.append((score, pairs[j + 1]))
    if b"INCR" in flags and len(scores) != 1:
        return error(b"ERR INCR option supports a single increment-element pair")
    zset = _of(store, args[1], ZSet)
    if zset is None:
        if b"XX" in flags:
            return NIL if b"INCR" in flags else ZERO
        zset = ZSet()
        store.set(args[1], zset)
    else:
        store.modified(args[1])
    added = changed = 0
    result: float | None = None
    for score, member in scores:
        old = zset.get(member)
        if b"INCR" in flags:
            score = (old or 0.0) + score
        if (old is None and b"XX" in flags) or (old is not None and b"NX" in flags):
            continue
        if old is not None and ((b"GT" in flags and score <= old) or (b"LT" in flags and score >= old)):
            continue
        zset[member] = score
        result = score
        if old is None:
            added += 1
        elif old != score:
            changed += 1
    if not zset:
        store.delete(args[1])
    if b"INCR" in flags:
        return NIL if result is None else bulk(format_float(result))
    return integer(added + changed if b"CH" in flags else added)


@_typed
def _zcard(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(len(_of(store, args[1], ZSet) or ()))


@_typed
def _zscore(store: KeyValueStore, args: list[bytes]) -> Reply:
    score = (_of(store, args[1], ZSet) or {}).get(args[2])
    return NIL if score is None else bulk(format_float(score))


@_typed
def _zscore3(store: KeyValueStore, args: list[bytes]) -> Reply:
    score = (_of(store, args[1], ZSet) or {}).get(args[2])
    return NIL if score is None else b",%b\r\n" % format_float(score)  # a RESP3 double


@_typed
def _zrem(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(_pop_entries(store, args[1], ZSet, args[2:]))


@_typed
def _zrange(store: KeyValueStore, args: list[bytes]) -> Reply:
    start, end = parse_int64(args[2]), parse_int64(args[3])
    if start is None or end is None:
        return NOT_INTEGER
    scores = len(args) > 4 and args[4].upper() == b"WITHSCORES"
    if len(args) > 5 or (len(args) == 5 and not scores):
        return SYNTAX
    ordered = (_of(store, args[1], ZSet) or ZSet()).ordered()
    start, end = _range(start, end, len(ordered))
    items = ordered[start : end + 1] if start <= end else []
    flat: list[bytes | None] = []
    for member, score in items:
        flat.append(member)
        if scores:
            flat.append(format_float(score))
    return array(flat)


def _stream_id(text: bytes, last: tuple[int, int] | None = None) -> tuple[int, int] | None:
    if text == b"*" and last is not None:
        now = int(__import__("time").time() * 1000)
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


def _entry(entry_id: tuple[int, int], fields: list[bytes]) -> bytes:
    return b"*2\r\n" + bulk(_id_text(entry_id)) + array(fields)  # type: ignore[operator]


@_typed
def _xreadgroup(store: KeyValueStore, args: list[bytes]) -> Reply:
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
    results = []
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
        results.append(b"*2\r\n" + bulk(key) + b"*%d\r\n" % len(fresh) + b"".join(_entry(e, f) for e, f in fresh))  # type: ignore[operator]
    if not results:
        return NIL_ARRAY
    return b"*%d\r\n" % len(results) + b"".join(results)


@_typed
def _xinfo(store: KeyValueStore, args: list[bytes]) -> Reply:
    if len(args) < 3 or args[1].upper() != b"STREAM":
        return error(b"ERR unknown subcommand or wrong number of arguments for '%b'. Try XINFO HELP." % args[1])
    stream = _of(store, args[2], Stream)
    if stream is None:
        return NO_SUCH_KEY
    entries = sorted(stream.entries.items())
    parts = [b"length", b"%d" % len(entries), b"last-generated-id", _id_text(stream.last)]
    body = array(parts)
    listing = b"*%d\r\n" % len(entries) + b"".join(_entry(e, f) for e, f in entries)
    groups = []
    for name, group in sorted(stream.groups.items()):
        pending = sorted(group["pending"].items())
        groups.append(
            b"*3\r\n"
            + array([name, _id_text(group["last"]), b"%d" % len(pending)])  # type: ignore[operator]
            + b"*%d\r\n" % len(pending)
            + b"".join(array([_id_text(e), c]) for e, c in pending)  # type: ignore[misc]
            + array(sorted(group["consumers"]))  # type: ignore[operator]
        )
    return b"*3\r\n" + body + listing + b"*%d\r\n" % len(groups) + b"".join(groups)  # type: ignore[operator]


@_typed
def _sort(store: KeyValueStore, args: list[bytes]) -> Reply:
    """SORT key [LIMIT offset count] [ASC|DESC] [ALPHA] [STORE destination] (no BY/GET patterns)."""
    value = store.get(args[1])
    if value is not None and not isinstance(value, (deque, set, ZSet)):
        raise _Wrong
    alpha = desc = False
    limit: tuple[int, int] | None = None
    target: bytes | None = None
    i = 2
    while i < len(args):
        option = args[i].upper()
        if option == b"ALPHA":
            alpha = True
        elif option in (b"ASC", b"DESC"):
            desc = option == b"DESC"
        elif option == b"LIMIT" and i + 2 < len(args):
            offset, count = parse_int64(args[i + 1]), parse_int64(args[i + 2])
            if offset is None or count is None:
                return NOT_INTEGER
            limit = (offset, count)
            i += 2
        elif option == b"STORE" and i + 1 < len(args):
            target = args[i + 1]
            i += 1
        else:
            return SYNTAX
        i += 1
    items = list(value or ())
    if alpha:
        items.sort(reverse=desc)
    else:
        numbers = []
        for item in items:
            number = parse_float(item)
            if number is None:
                return error(b"ERR One or more scores can't be converted into double")
            numbers.append((number, item))
        items = [item for _, item in sorted(numbers, reverse=desc)]
    if limit is not None:
        start = max(limit[0], 0)
        items = items[start : start + limit[1]] if limit[1] >= 0 else items[start:]
    if target is None:
        return array(items)
    store.delete(target)
    if items:
        store.set(target, deque(items))
    else:
        store.modified(target)
    return integer(len(items))


def _memory(store: KeyValueStore, args: list[bytes]) -> Reply:
    """MEMORY USAGE key [SAMPLES n]: this process's estimate of the bytes the key and its value take."""
    if args[1].upper() != b"USAGE" or len(args) not in (3, 5):
        return error(b"ERR unknown subcommand or wrong number of arguments for '%b'. Try MEMORY HELP." % args[1])
    value = store.get(args[2])
    if value is None:
        return NIL
    size = sys.getsizeof(args[2]) + sys.getsizeof(value)
    if not isinstance(value, bytes):
        items = value.items() if isinstance(value, dict) else getattr(value, "entries", {}).items() or value
        size += sum(sys.getsizeof(x) for item in items for x in (item if isinstance(item, tuple) else (item,)))
    return integer(size)


SORTED: dict[bytes, tuple[Command, int, int]] = {
    b"MEMORY": (_memory, 2, _ANY),
    b"ZADD": (_zadd, 4, _ANY),
    b"ZCARD": (_zcard, 2, 2),
    b"ZSCORE": (_zscore, 3, 3),
    b"ZREM": (_zrem, 3, _ANY),
    b"ZRANGE": (_zrange, 4, 5),
    b"XADD": (_xadd, 5, _ANY),
    b"XLEN": (_xlen, 2, 2),
    b"XDEL": (_xdel, 3, _ANY),
    b"XGROUP": (_xgroup, 2, _ANY),
    b"XREADGROUP": (_xreadgroup, 7, _ANY),
    b"XINFO": (_xinfo, 2, _ANY),
    b"SORT": (_sort, 2, _ANY),
}
SORTED_RESP3: dict[bytes, Command] = {b"ZSCORE": _zscore3}
