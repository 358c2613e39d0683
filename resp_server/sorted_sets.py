"""The core of sorted sets (what Redis's keyspace tests touch), SORT and MEMORY USAGE."""

from __future__ import annotations

import functools
import math
import sys
from collections import deque

from resp_server.replies import (
    MANY,
    RESP2,
    RESP3,
    Command,
    Encoder,
    Entry,
    Reply,
    array,
    c_string,
    error,
    parse_int64,
    per_protocol,
)
from resp_server.store import KeyValueStore
from resp_server.values import (
    NOT_FLOAT,
    NOT_INTEGER,
    ONE,
    SYNTAX,
    WRONGTYPE,
    ZERO,
    ZSet,
    _of,
    _pop_entries,
    _typed,
    _Wrong,
    integer,
    parse_float,
    parse_sort_float,
)

# -- sorted sets: the core that the keyspace tests touch -------- ----------------------------------------------


def _zadder(encoder: Encoder) -> Command:
    """ZADD for one protocol, a closure as GET's is: one score and member and no option (what clients send most)
    takes a short way; anything else :func:`_zadd`'s."""
    general = functools.partial(_zadd, encoder)

    def zadd(store: KeyValueStore, args: list[bytes]) -> Reply:
        if len(args) == 4:
            score = parse_float(args[2])  # no option (NX, CH...) reads as a number
            if score is not None:
                zset = store.container(args[1], ZSet)
                if zset is None:
                    return WRONGTYPE
                member = args[3]
                old = zset.get(member)
                zset[member] = score
                # An unchanged score touches nothing, as in Redis (the test: what modified() looks at, without a call).
                if old != score and (store.watchers or store.blocked or store.notifying):
                    store.modified(args[1])
                return ONE if old is None else ZERO
        return general(store, args)

    return zadd


@_typed
def _zadd(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    flags = set()
    i = 2
    while i < len(args) and args[i].upper() in (b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"):
        flags.add(args[i].upper())
        i += 1
    pairs = args[i:]
    if not pairs or len(pairs) % 2:
        return SYNTAX
    # Redis's order of checks: the options, the INCR pair, the scores, then the key's type.
    if b"NX" in flags and b"XX" in flags:
        return error(b"ERR XX and NX options at the same time are not compatible")
    if (b"NX" in flags and (b"GT" in flags or b"LT" in flags)) or (b"GT" in flags and b"LT" in flags):
        return error(b"ERR GT, LT, and/or NX options at the same time are not compatible")
    if b"INCR" in flags and len(pairs) != 2:
        return error(b"ERR INCR option supports a single increment-element pair")
    scores = []
    for j in range(0, len(pairs), 2):
        score = parse_float(pairs[j])
        if score is None:
            return NOT_FLOAT
        scores.append((score, pairs[j + 1]))
    zset = _of(store, args[1], ZSet)
    if zset is None:
        if b"XX" in flags:
            return encoder.nil if b"INCR" in flags else ZERO
        zset = ZSet()
        store.set(args[1], zset)
    added = changed = 0
    result: float | None = None
    for score, member in scores:
        old = zset.get(member)
        if b"INCR" in flags:
            score = score if old is None else old + score  # a new member's is the increment: -0 stays -0
            if math.isnan(score):
                return error(b"ERR resulting score is not a number (NaN)")
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
    elif added or changed:  # an unchanged score touches nothing, as in Redis
        store.modified(args[1])
    if b"INCR" in flags:
        return encoder.nil if result is None else encoder.double(result)
    return integer(added + changed if b"CH" in flags else added)


@_typed
def _zcard(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(len(_of(store, args[1], ZSet) or ()))


@per_protocol
@_typed
def _zscore(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    score = (_of(store, args[1], ZSet) or {}).get(args[2])
    return encoder.nil if score is None else encoder.double(score)


@_typed
def _zrem(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(_pop_entries(store, args[1], ZSet, args[2:]))


@_typed
def _sort(store: KeyValueStore, args: list[bytes]) -> Reply:
    """SORT key [LIMIT offset count] [ASC|DESC] [ALPHA] [STORE destination] (no BY/GET patterns)."""
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
    # Redis reads the options before it looks the key up.
    value = store.get(args[1])
    if value is not None and not isinstance(value, (deque, set, ZSet)):
        raise _Wrong
    items = list(value or ())
    if alpha:
        items.sort(key=c_string, reverse=desc)  # strcoll on C strings: up to the first NUL, in a stable sort
    else:
        numbers = []
        for item in items:
            number = parse_sort_float(item)
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


@per_protocol
def _memory(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    """MEMORY USAGE key [SAMPLES n]: this process's estimate of the bytes the key and its value take."""
    if args[1].upper() != b"USAGE" or len(args) < 3:
        return error(b"ERR unknown subcommand or wrong number of arguments for '%b'. Try MEMORY HELP." % args[1])
    # Redis checks the options before it looks the key up.
    for i in range(3, len(args), 2):
        if args[i].upper() != b"SAMPLES" or i + 1 >= len(args):
            return SYNTAX
        samples = parse_int64(args[i + 1])
        if samples is None:
            return NOT_INTEGER
        if samples < 0:
            return SYNTAX
    value = store.get(args[2])
    if value is None:
        return encoder.nil
    size = sys.getsizeof(args[2]) + sys.getsizeof(value)
    if not isinstance(value, bytes):
        items = value.items() if isinstance(value, dict) else getattr(value, "entries", {}).items() or value
        size += sum(sys.getsizeof(x) for item in items for x in (item if isinstance(item, tuple) else (item,)))
    return integer(size)


ZADD3 = _zadder(RESP3)
"""ZADD in a RESP3 session (the session's table lists it in place of RESP2's)."""

SORTED: dict[bytes, Entry] = {
    b"MEMORY": (_memory, 2, MANY),
    b"ZADD": (_zadder(RESP2), 4, MANY),
    b"ZCARD": (_zcard, 2, 2),
    b"ZSCORE": (_zscore, 3, 3),
    b"ZREM": (_zrem, 3, MANY),
    b"SORT": (_sort, 2, MANY),
}
