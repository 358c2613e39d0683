"""Lists, hashes and sets as real types for the RESP server, and :data:`CONTAINERS`, their commands' table. Every
command is a ``(store, args) -> Reply`` function (or ``(encoder, store, args)``, listed as ``PerProtocol``); replies
and error texts are Redis 7.0's.

A command against a key of another type answers WRONGTYPE; a container left empty is deleted, as in Redis; commands
that change a value in place tell the store (``store.modified``) so that WATCH sees it. :data:`RESP3_VARIANTS` holds the
variants whose reply is a map, a set or a double in RESP3.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from typing import Any

from resp_server.replies import (
    INT64_MAX,
    INT64_MIN,
    MANY,
    OK,
    Command,
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
    reply_too_long,
)
from resp_server.store import KeyValueStore
from resp_server.values import (
    EMPTY,
    NO_SUCH_KEY,
    NOT_FLOAT,
    NOT_INTEGER,
    ONE,
    SYNTAX,
    WRONGTYPE,
    ZERO,
    _kept,
    _of,
    _pop_entries,
    _range,
    _typed,
    add_long_double,
    integer,
    parse_long_double,
)

# -- lists -------------------------------------------------------------------------------------------------------


def _push(store: KeyValueStore, args: list[bytes], left: bool, only_existing: bool = False) -> Reply:
    items = _of(store, args[1], deque)
    if items is None:
        if only_existing:
            return ZERO
        items = deque()
        store.set(args[1], items)
    else:
        store.modified(args[1])
    if left:
        items.extendleft(args[2:])
    else:
        items.extend(args[2:])
    return integer(len(items))


@_typed
def _lpush(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _push(store, args, True)


@_typed
def _rpush(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _push(store, args, False)


@_typed
def _lpushx(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _push(store, args, True, only_existing=True)


@_typed
def _rpushx(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _push(store, args, False, only_existing=True)


def _pop(encoder: Encoder, store: KeyValueStore, args: list[bytes], left: bool) -> Reply:
    if len(args) > 3:
        return arity_error(args[0])
    count: int | None = None
    if len(args) == 3:
        count = parse_int64(args[2])
        if count is None or count < 0:
            return error(b"ERR value is out of range, must be positive")
    items = _of(store, args[1], deque)
    if items is None:
        return encoder.nil if count is None else encoder.nil_array
    take = items.popleft if left else items.pop
    popped = [take() for _ in range(min(len(items), 1 if count is None else count))]
    _kept(store, args[1], items)
    return bulk(popped[0]) if count is None else array(popped)


@per_protocol
@_typed
def _lpop(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    return _pop(encoder, store, args, True)


@per_protocol
@_typed
def _rpop(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    return _pop(encoder, store, args, False)


@_typed
def _llen(store: KeyValueStore, args: list[bytes]) -> Reply:
    items = _of(store, args[1], deque)
    return integer(0 if items is None else len(items))


@_typed
def _lrange(store: KeyValueStore, args: list[bytes]) -> Reply:
    start, end = parse_int64(args[2]), parse_int64(args[3])
    if start is None or end is None:
        return NOT_INTEGER
    items = _of(store, args[1], deque)
    if items is None:
        return EMPTY
    start, end = _range(start, end, len(items))
    if start > end:
        return EMPTY
    if end - start >= store.max_reply_items:
        return reply_too_long(store)
    # islice walks the deque once; indexing it walks from the nearer end for every item (quadratic).
    return array(list(itertools.islice(items, start, end + 1)))


@per_protocol
@_typed
def _lindex(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    items = _of(store, args[1], deque)
    if items is None:
        return encoder.nil
    index = parse_int64(args[2])
    if index is None:
        return NOT_INTEGER
    if index < 0:
        index += len(items)
    return bulk(items[index]) if 0 <= index < len(items) else encoder.nil


@_typed
def _lset(store: KeyValueStore, args: list[bytes]) -> Reply:
    items = _of(store, args[1], deque)
    if items is None:
        return NO_SUCH_KEY
    index = parse_int64(args[2])
    if index is None:
        return NOT_INTEGER
    if index < 0:
        index += len(items)
    if not 0 <= index < len(items):
        return error(b"ERR index out of range")
    items[index] = args[3]
    store.modified(args[1])
    return OK


@_typed
def _lrem(store: KeyValueStore, args: list[bytes]) -> Reply:
    count = parse_int64(args[2])
    if count is None:
        return NOT_INTEGER
    items = _of(store, args[1], deque)
    if items is None:
        return ZERO
    target = args[3]
    values = list(items)
    limit = abs(count) or len(values)
    removed = 0
    order = range(len(values)) if count >= 0 else range(len(values) - 1, -1, -1)
    drop = set()
    for i in order:
        if removed >= limit:
            break
        if values[i] == target:
            drop.add(i)
            removed += 1
    if removed:
        items.clear()
        items.extend(v for i, v in enumerate(values) if i not in drop)
        _kept(store, args[1], items)
    return integer(removed)


@_typed
def _ltrim(store: KeyValueStore, args: list[bytes]) -> Reply:
    start, end = parse_int64(args[2]), parse_int64(args[3])
    if start is None or end is None:
        return NOT_INTEGER
    items = _of(store, args[1], deque)
    if items is None:
        return OK
    start, end = _range(start, end, len(items))
    kept = [items[i] for i in range(start, end + 1)] if start <= end else []
    items.clear()
    items.extend(kept)
    _kept(store, args[1], items)
    return OK


@_typed
def _linsert(store: KeyValueStore, args: list[bytes]) -> Reply:
    where = args[2].upper()
    if where not in (b"BEFORE", b"AFTER"):
        return SYNTAX
    items = _of(store, args[1], deque)
    if items is None:
        return ZERO
    try:
        index = items.index(args[3])
    except ValueError:
        return b":-1\r\n"
    items.insert(index if where == b"BEFORE" else index + 1, args[4])
    store.modified(args[1])
    return integer(len(items))


# -- hashes ------------------------------------------------------------------------------------------------------


def _hset(store: KeyValueStore, args: list[bytes]) -> bytes:
    size = len(args)
    if size == 4 and not (store._deadlines or store.watchers or store.blocked or store.notifying):
        # One field into a hash that exists, with nothing to expire or tell: what store.container and
        # store.modified would do comes down to one dict read, so it is done here without their calls.
        fields = store._data.get(args[1])
        if type(fields) is dict:
            field = args[2]
            added = field not in fields
            fields[field] = args[3]
            return ONE if added else ZERO
    if size % 2:
        return arity_error(args[0])
    fields = store.container(args[1], dict)
    if fields is None:
        return WRONGTYPE
    if store.watchers or store.blocked or store.notifying:  # what modified() looks at, without its call
        store.modified(args[1])  # even when no value changes, as in Redis
    if size == 4:  # one field, the common case
        field = args[2]
        added = field not in fields
        fields[field] = args[3]
        return ONE if added else ZERO
    count = 0
    for i in range(2, size, 2):
        count += args[i] not in fields
        fields[args[i]] = args[i + 1]
    return integer(count)


def _hmset(store: KeyValueStore, args: list[bytes]) -> Reply:
    reply = _hset(store, args)
    return OK if reply[:1] == b":" else reply


@_typed
def _hsetnx(store: KeyValueStore, args: list[bytes]) -> Reply:
    fields = _of(store, args[1], dict)
    if fields is not None and args[2] in fields:
        return ZERO
    if fields is None:
        store.set(args[1], {args[2]: args[3]})
    else:
        fields[args[2]] = args[3]
        store.modified(args[1])
    return ONE


@per_protocol
@_typed
def _hget(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    fields = _of(store, args[1], dict)
    return encoder.bulk(None if fields is None else fields.get(args[2]))


@per_protocol
@_typed
def _hmget(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    fields = _of(store, args[1], dict) or {}
    return encoder.array([fields.get(name) for name in args[2:]])


def _pairs(items: Any, resp3: bool) -> Reply:
    """Field-value pairs: a flat array in RESP2, a map in RESP3."""
    flat = [x for pair in items for x in pair]
    if not resp3:
        return array(flat)
    parts: list[Reply] = [bulk(x) for x in flat]
    parts.insert(0, b"%%%d\r\n" % (len(flat) // 2))
    return join_replies(parts)


@_typed
def _hgetall(store: KeyValueStore, args: list[bytes]) -> Reply:
    fields = _of(store, args[1], dict) or {}
    return _pairs(fields.items(), False)


@_typed
def _hgetall3(store: KeyValueStore, args: list[bytes]) -> Reply:
    fields = _of(store, args[1], dict) or {}
    return _pairs(fields.items(), True)


@_typed
def _hdel(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(_pop_entries(store, args[1], dict, args[2:]))


@_typed
def _hlen(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(len(_of(store, args[1], dict) or {}))


@_typed
def _hexists(store: KeyValueStore, args: list[bytes]) -> Reply:
    return ONE if args[2] in (_of(store, args[1], dict) or {}) else ZERO


@_typed
def _hkeys(store: KeyValueStore, args: list[bytes]) -> Reply:
    return array(list(_of(store, args[1], dict) or {}))


@_typed
def _hvals(store: KeyValueStore, args: list[bytes]) -> Reply:
    return array(list((_of(store, args[1], dict) or {}).values()))


@_typed
def _hstrlen(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(len((_of(store, args[1], dict) or {}).get(args[2], b"")))


@_typed
def _hincrby(store: KeyValueStore, args: list[bytes]) -> Reply:
    by = parse_int64(args[3])
    if by is None:
        return NOT_INTEGER
    fields = _of(store, args[1], dict)
    old = b"0" if fields is None else fields.get(args[2], b"0")
    value = parse_int64(old)
    if value is None:
        return error(b"ERR hash value is not an integer")
    result = value + by
    if not INT64_MIN <= result <= INT64_MAX:
        return error(b"ERR increment or decrement would overflow")
    if fields is None:
        store.set(args[1], {args[2]: b"%d" % result})
    else:
        fields[args[2]] = b"%d" % result
        store.modified(args[1])
    return integer(result)


@_typed
def _hincrbyfloat(store: KeyValueStore, args: list[bytes]) -> Reply:
    increment = parse_long_double(args[3])
    if increment is None:
        return NOT_FLOAT
    if isinstance(increment, float):  # an infinity
        return error(b"ERR value is NaN or Infinity")
    fields = _of(store, args[1], dict)
    old = b"0" if fields is None else fields.get(args[2], b"0")
    text = add_long_double(old, args[3], old_error=b"hash value is not a float")
    if isinstance(text, Exception):
        return error(str(text).encode())
    if fields is None:
        store.set(args[1], {args[2]: text})
    else:
        fields[args[2]] = text
        store.modified(args[1])
    return bulk(text)


# -- sets --------------------------------------------------------------------------------------------------------


def _members(items: Any, resp3: bool) -> Reply:
    """Set members: an array in RESP2, a set in RESP3."""
    if not resp3:
        return array(list(items))
    parts: list[Reply] = [bulk(x) for x in items]
    parts.insert(0, b"~%d\r\n" % len(parts))
    return join_replies(parts)


def _sadd(store: KeyValueStore, args: list[bytes]) -> Reply:
    members = store.container(args[1], set)
    if members is None:
        return WRONGTYPE
    if len(args) == 3:  # one member, the common case
        if args[2] in members:
            return ZERO
        members.add(args[2])
        if store.watchers or store.blocked or store.notifying:  # what modified() looks at, without its call
            store.modified(args[1])
        return ONE
    before = len(members)
    members.update(args[2:])
    added = len(members) - before
    if added:
        store.modified(args[1])
    return integer(added)


@_typed
def _srem(store: KeyValueStore, args: list[bytes]) -> Reply:
    members = _of(store, args[1], set)
    if members is None:
        return ZERO
    before = len(members)
    members.difference_update(args[2:])
    removed = before - len(members)
    if removed:
        _kept(store, args[1], members)
    return integer(removed)


@_typed
def _smembers(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _members(_of(store, args[1], set) or (), False)


@_typed
def _smembers3(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _members(_of(store, args[1], set) or (), True)


@_typed
def _scard(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(len(_of(store, args[1], set) or ()))


@_typed
def _sismember(store: KeyValueStore, args: list[bytes]) -> Reply:
    return ONE if args[2] in (_of(store, args[1], set) or ()) else ZERO


@_typed
def _smismember(store: KeyValueStore, args: list[bytes]) -> Reply:
    members = _of(store, args[1], set) or ()
    return b"*%d\r\n" % (len(args) - 2) + b"".join(ONE if m in members else ZERO for m in args[2:])


@per_protocol
@_typed
def _srandmember(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    if len(args) > 3:
        return SYNTAX
    if len(args) == 2:
        members = _of(store, args[1], set)
        return encoder.bulk(random.choice(sorted(members)) if members else None)
    count = parse_int64(args[2])  # Redis reads the count before it looks the key up
    if count is None:
        return NOT_INTEGER
    if count < -INT64_MAX:  # Redis negates the count as a C long
        return error(b"ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")
    members = _of(store, args[1], set)
    pool = sorted(members or ())
    if not pool:
        return EMPTY
    if -count > store.max_reply_items:
        return reply_too_long(store)
    if count >= 0:
        return array(random.sample(pool, min(count, len(pool))))
    return array([random.choice(pool) for _ in range(-count)])


@per_protocol
@_typed
def _spop(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    if len(args) > 3:
        return SYNTAX
    count: int | None = None
    if len(args) == 3:
        count = parse_int64(args[2])
        if count is None or count < 0:
            return error(b"ERR value is out of range, must be positive")
    members = _of(store, args[1], set)
    if not members:
        return encoder.nil if count is None else encoder.empty_set
    picked = random.sample(sorted(members), min(1 if count is None else count, len(members)))
    members.difference_update(picked)
    _kept(store, args[1], members)
    if count is None:
        return bulk(picked[0])
    return join_replies([encoder.set_header(len(picked)), *map(bulk, picked)])


def _combine(store: KeyValueStore, keys: list[bytes], how: str) -> set[bytes]:
    sets = [_of(store, key, set) or set() for key in keys]
    result = set(sets[0])
    for other in sets[1:]:
        if how == "inter":
            result &= other
        elif how == "union":
            result |= other
        else:
            result -= other
    return result


def _set_op(how: str, resp3: bool = False) -> Command:
    @_typed
    def run(store: KeyValueStore, args: list[bytes]) -> Reply:
        return _members(sorted(_combine(store, args[1:], how)), resp3)

    return run


def _set_store(how: str) -> Command:
    @_typed
    def run(store: KeyValueStore, args: list[bytes]) -> Reply:
        result = _combine(store, args[2:], how)
        store.delete(args[1])
        if result:
            store.set(args[1], result)
        return integer(len(result))

    return run


@_typed
def _smove(store: KeyValueStore, args: list[bytes]) -> Reply:
    # Redis's order: a missing source is 0 whatever the target holds; then both types; then the member.
    if store.get(args[1]) is None:
        return ZERO
    source = _of(store, args[1], set)
    target = _of(store, args[2], set)
    if args[3] not in source:
        return ZERO
    if source is target:
        return ONE  # Redis: moving within one set changes nothing
    source.discard(args[3])
    _kept(store, args[1], source)
    if target is None:
        store.set(args[2], {args[3]})
    elif args[3] not in target:  # a member already there leaves the target unchanged (its watchers too)
        target.add(args[3])
        store.modified(args[2])
    return ONE


CONTAINERS: dict[bytes, Entry] = {
    b"LPUSH": (_lpush, 3, MANY),
    b"RPUSH": (_rpush, 3, MANY),
    b"LPUSHX": (_lpushx, 3, MANY),
    b"RPUSHX": (_rpushx, 3, MANY),
    b"LPOP": (_lpop, 2, MANY),
    b"RPOP": (_rpop, 2, MANY),
    b"LLEN": (_llen, 2, 2),
    b"LRANGE": (_lrange, 4, 4),
    b"LINDEX": (_lindex, 3, 3),
    b"LSET": (_lset, 4, 4),
    b"LREM": (_lrem, 4, 4),
    b"LTRIM": (_ltrim, 4, 4),
    b"LINSERT": (_linsert, 5, 5),
    b"HSET": (_hset, 4, MANY),
    b"HMSET": (_hmset, 4, MANY),
    b"HSETNX": (_hsetnx, 4, 4),
    b"HGET": (_hget, 3, 3),
    b"HMGET": (_hmget, 3, MANY),
    b"HGETALL": (_hgetall, 2, 2),
    b"HDEL": (_hdel, 3, MANY),
    b"HLEN": (_hlen, 2, 2),
    b"HEXISTS": (_hexists, 3, 3),
    b"HKEYS": (_hkeys, 2, 2),
    b"HVALS": (_hvals, 2, 2),
    b"HSTRLEN": (_hstrlen, 3, 3),
    b"HINCRBY": (_hincrby, 4, 4),
    b"HINCRBYFLOAT": (_hincrbyfloat, 4, 4),
    b"SADD": (_sadd, 3, MANY),
    b"SREM": (_srem, 3, MANY),
    b"SMEMBERS": (_smembers, 2, 2),
    b"SCARD": (_scard, 2, 2),
    b"SISMEMBER": (_sismember, 3, 3),
    b"SMISMEMBER": (_smismember, 3, MANY),
    b"SRANDMEMBER": (_srandmember, 2, MANY),
    b"SPOP": (_spop, 2, MANY),
    b"SINTER": (_set_op("inter"), 2, MANY),
    b"SUNION": (_set_op("union"), 2, MANY),
    b"SDIFF": (_set_op("diff"), 2, MANY),
    b"SINTERSTORE": (_set_store("inter"), 3, MANY),
    b"SUNIONSTORE": (_set_store("union"), 3, MANY),
    b"SDIFFSTORE": (_set_store("diff"), 3, MANY),
    b"SMOVE": (_smove, 4, 4),
}
"""Lists, hashes and sets, by upper-case name, with their arity (name included)."""

RESP3_VARIANTS: dict[bytes, Command] = {
    b"HGETALL": _hgetall3,
    b"SMEMBERS": _smembers3,
    b"SINTER": _set_op("inter", True),
    b"SUNION": _set_op("union", True),
    b"SDIFF": _set_op("diff", True),
}
"""Commands whose RESP3 reply differs (a map or a set where RESP2 has an array)."""
