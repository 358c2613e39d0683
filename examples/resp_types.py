"""More of Redis for the RESP example: lists, hashes and sets as real types, and the rest of the string and keyspace
families. Every command is a ``(store, args) -> Reply`` function like those of :mod:`examples.resp_commands`, into
whose table :data:`MORE` is merged; replies and error texts are Redis 7.0's.

A key holds ``bytes`` (a string), a ``deque`` (a list), a ``dict`` (a hash) or a ``set``; a command against a key of
another type answers WRONGTYPE. A container left empty is deleted, as in Redis. Commands that change a value in place
tell the store (``store.modified``) so that WATCH sees it. :data:`RESP3` holds the variants whose reply is a map or
a set in RESP3.
"""

from __future__ import annotations

import math
import random
import sys
from collections import deque
from typing import Any

from examples.kvstore import KeyValueStore, glob_match
from examples.resp_commands import (
    _ANY,
    INT64_MAX,
    INT64_MIN,
    NIL,
    NIL_ARRAY,
    OK,
    Command,
    Reply,
    arity_error,
    array,
    bulk,
    error,
    join_replies,
    parse_int64,
)

WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"
NOT_FLOAT = b"-ERR value is not a valid float\r\n"
SYNTAX = b"-ERR syntax error\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
EMPTY = b"*0\r\n"
NO_SUCH_KEY = b"-ERR no such key\r\n"
MAX_STRING = 512 * 1024 * 1024
TYPES = {bytes: b"string", deque: b"list", dict: b"hash", set: b"set"}


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def _of(store: KeyValueStore, key: bytes, kind: type) -> Any:
    """The value at ``key`` if it is a ``kind`` (None when missing); raises _Wrong otherwise."""
    value = store.get(key)
    if value is not None and type(value) is not kind:
        raise _Wrong
    return value


class _Wrong(Exception):
    """A key holds another type: the command answers WRONGTYPE."""


def _typed(fn: Command) -> Command:
    def run(store: KeyValueStore, args: list[bytes]) -> Reply:
        try:
            return fn(store, args)
        except _Wrong:
            return WRONGTYPE

    run.__name__ = fn.__name__
    return run


def format_float(value: float) -> bytes:
    """A double as Redis prints it for INCRBYFLOAT (``%.17Lg``, trailing zeros trimmed)."""
    if value == int(value) and abs(value) < 1e17:
        return b"%d" % int(value)
    text = b"%.17g" % value
    if b"e" not in text and b"." in text:
        text = text.rstrip(b"0").rstrip(b".")
    return text


def parse_float(text: bytes) -> float | None:
    if not text or text != text.strip() or len(text) > 5000:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


# -- strings -----------------------------------------------------------------------------------------------------


def _set_with_ttl(store: KeyValueStore, args: list[bytes], scale: int) -> Reply:
    amount = parse_int64(args[2])
    if amount is None:
        return NOT_INTEGER
    if amount <= 0 or amount > INT64_MAX // scale:
        return error(b"ERR invalid expire time in '%b' command" % args[0].lower())
    store.set(args[1], args[3], store.clock() + amount * scale)
    return OK


def _setex(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _set_with_ttl(store, args, 1000)


def _psetex(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _set_with_ttl(store, args, 1)


def _setnx(store: KeyValueStore, args: list[bytes]) -> Reply:
    if store.get(args[1]) is not None:
        return ZERO
    store.set(args[1], args[2])
    return ONE


@_typed
def _getex(store: KeyValueStore, args: list[bytes]) -> Reply:
    value = _of(store, args[1], bytes)
    deadline: int | None = None
    persist = False
    if len(args) > 2:
        option = args[2].upper()
        scales = {b"EX": (1000, True), b"PX": (1, True), b"EXAT": (1000, False), b"PXAT": (1, False)}
        if option == b"PERSIST" and len(args) == 3:
            persist = True
        elif option in scales and len(args) == 4:
            amount = parse_int64(args[3])
            if amount is None:
                return NOT_INTEGER
            scale, relative = scales[option]
            if amount <= 0 or amount > INT64_MAX // scale:
                return error(b"ERR invalid expire time in 'getex' command")
            deadline = amount * scale + (store.clock() if relative else 0)
        else:
            return SYNTAX
    if value is None:
        return NIL
    if deadline is not None:
        if deadline <= store.clock():
            store.delete(args[1])
        else:
            store.set_deadline(args[1], deadline)
    elif persist:
        store.persist(args[1])
    return bulk(value)


@_typed
def _getdel(store: KeyValueStore, args: list[bytes]) -> Reply:
    value = _of(store, args[1], bytes)
    if value is not None:
        store.delete(args[1])
    return bulk(value)


@_typed
def _getset(store: KeyValueStore, args: list[bytes]) -> Reply:
    value = _of(store, args[1], bytes)
    store.set(args[1], args[2])
    return bulk(value)


@_typed
def _strlen(store: KeyValueStore, args: list[bytes]) -> Reply:
    value = _of(store, args[1], bytes)
    return integer(0 if value is None else len(value))


@_typed
def _append(store: KeyValueStore, args: list[bytes]) -> Reply:
    value = _of(store, args[1], bytes) or b""
    if len(value) + len(args[2]) > MAX_STRING:
        return error(b"ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    value += args[2]
    store.set(args[1], value, keep_ttl=True)
    return integer(len(value))


def _range(start: int, end: int, size: int) -> tuple[int, int]:
    if start < 0:
        start = max(size + start, 0)
    if end < 0:
        end = size + end
    return start, min(end, size - 1)


@_typed
def _getrange(store: KeyValueStore, args: list[bytes]) -> Reply:
    start, end = parse_int64(args[2]), parse_int64(args[3])
    if start is None or end is None:
        return NOT_INTEGER
    value = _of(store, args[1], bytes) or b""
    if start < 0 and end < 0 and start > end:
        return b"$0\r\n\r\n"
    start, end = _range(start, end, len(value))
    return bulk(value[start : end + 1] if start <= end else b"")


@_typed
def _setrange(store: KeyValueStore, args: list[bytes]) -> Reply:
    offset = parse_int64(args[2])
    if offset is None:
        return NOT_INTEGER
    if offset < 0:
        return error(b"ERR offset is out of range")
    value = _of(store, args[1], bytes)
    piece = args[3]
    if not piece:
        return integer(0 if value is None else len(value))
    if offset + len(piece) > MAX_STRING:
        return error(b"ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    value = value or b""
    if len(value) < offset:
        value += b"\x00" * (offset - len(value))
    value = value[:offset] + piece + value[offset + len(piece) :]
    store.set(args[1], value, keep_ttl=True)
    return integer(len(value))


@_typed
def _incrbyfloat(store: KeyValueStore, args: list[bytes]) -> Reply:
    old = _of(store, args[1], bytes)
    base = 0.0 if old is None else parse_float(old)
    by = parse_float(args[2])
    if base is None or by is None:
        return NOT_FLOAT
    result = base + by
    if math.isinf(result) or math.isnan(result):
        return error(b"ERR increment would produce NaN or Infinity")
    text = format_float(result)
    store.set(args[1], text, keep_ttl=True)
    return bulk(text)


def _msetnx(store: KeyValueStore, args: list[bytes]) -> Reply:
    if len(args) % 2 == 0:
        return arity_error(b"msetnx")
    if any(store.get(args[i]) is not None for i in range(1, len(args), 2)):
        return ZERO
    for i in range(1, len(args), 2):
        store.set(args[i], args[i + 1])
    return ONE


@_typed
def _lcs(store: KeyValueStore, args: list[bytes]) -> Reply:
    a = _of(store, args[1], bytes) or b""
    b = _of(store, args[2], bytes) or b""
    want_len = want_idx = with_len = False
    min_len = 0
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option == b"LEN":
            want_len = True
        elif option == b"IDX":
            want_idx = True
        elif option == b"WITHMATCHLEN":
            with_len = True
        elif option == b"MINMATCHLEN" and i + 1 < len(args):
            value = parse_int64(args[i + 1])
            if value is None:
                return NOT_INTEGER
            min_len = max(0, value)
            i += 1
        else:
            return SYNTAX
        i += 1
    if want_len and want_idx:
        return error(b"ERR If you want both the length and indexes, please just use IDX.")
    n, m = len(a), len(b)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for x in range(1, n + 1):
        row, prev = table[x], table[x - 1]
        ax = a[x - 1]
        for y in range(1, m + 1):
            row[y] = prev[y - 1] + 1 if ax == b[y - 1] else max(prev[y], row[y - 1])
    if want_len:
        return integer(table[n][m])
    # Walk back from the end, collecting the common string and (for IDX) the matching ranges, as Redis does.
    out = bytearray()
    matches: list[tuple[tuple[int, int], tuple[int, int], int]] = []
    x, y = n, m
    current: list[int] | None = None  # [a_start, a_end, b_start, b_end]
    while x > 0 and y > 0:
        if a[x - 1] == b[y - 1]:
            out.append(a[x - 1])
            if current is not None and current[0] == x and current[2] == y:
                current[0] -= 1
                current[2] -= 1
            else:
                if current is not None:
                    _emit(matches, current, min_len)
                current = [x - 1, x - 1, y - 1, y - 1]
            x -= 1
            y -= 1
        elif table[x - 1][y] > table[x][y - 1]:
            x -= 1
        else:
            y -= 1
    if current is not None:
        _emit(matches, current, min_len)
    if not want_idx:
        return bulk(bytes(reversed(out)))
    parts = [b"*4\r\n$7\r\nmatches\r\n*%d\r\n" % len(matches)]
    for (a0, a1), (b0, b1), length in matches:
        item = b"*%d\r\n*2\r\n:%d\r\n:%d\r\n*2\r\n:%d\r\n:%d\r\n" % (3 if with_len else 2, a0, a1, b0, b1)
        parts.append(item + (b":%d\r\n" % length if with_len else b""))
    parts.append(b"$3\r\nlen\r\n:%d\r\n" % table[n][m])
    return b"".join(parts)


def _emit(matches: list[tuple[tuple[int, int], tuple[int, int], int]], span: list[int], min_len: int) -> None:
    length = span[1] - span[0] + 1
    if length >= min_len:
        matches.append(((span[0], span[1]), (span[2], span[3]), length))


def _bit_offset(text: bytes) -> int | None:
    value = parse_int64(text)
    if value is None or value < 0 or value >= 4 * 1024 * 1024 * 1024:
        return None
    return value


@_typed
def _setbit(store: KeyValueStore, args: list[bytes]) -> Reply:
    offset = _bit_offset(args[2])
    if offset is None:
        return error(b"ERR bit offset is not an integer or out of range")
    if args[3] not in (b"0", b"1"):
        return error(b"ERR bit is not an integer or out of range")
    value = bytearray(_of(store, args[1], bytes) or b"")
    byte = offset >> 3
    if len(value) <= byte:
        value.extend(b"\x00" * (byte + 1 - len(value)))
    mask = 1 << (7 - (offset & 7))
    old = 1 if value[byte] & mask else 0
    value[byte] = value[byte] | mask if args[3] == b"1" else value[byte] & ~mask
    store.set(args[1], bytes(value), keep_ttl=True)
    return integer(old)


@_typed
def _getbit(store: KeyValueStore, args: list[bytes]) -> Reply:
    offset = _bit_offset(args[2])
    if offset is None:
        return error(b"ERR bit offset is not an integer or out of range")
    value = _of(store, args[1], bytes) or b""
    byte = offset >> 3
    if byte >= len(value):
        return ZERO
    return ONE if value[byte] & (1 << (7 - (offset & 7))) else ZERO


@_typed
def _bitcount(store: KeyValueStore, args: list[bytes]) -> Reply:
    value = _of(store, args[1], bytes) or b""
    if len(args) == 2:
        return integer(sum(bin(c).count("1") for c in value))
    if len(args) not in (4, 5):
        return SYNTAX
    start, end = parse_int64(args[2]), parse_int64(args[3])
    if start is None or end is None:
        return NOT_INTEGER
    bits = len(args) == 5 and args[4].upper() == b"BIT"
    if len(args) == 5 and not bits and args[4].upper() != b"BYTE":
        return SYNTAX
    size = len(value) * 8 if bits else len(value)
    start, end = _range(start, end, size)
    if start > end:
        return ZERO
    if bits:
        return integer(sum(1 for i in range(start, end + 1) if value[i >> 3] & (1 << (7 - (i & 7)))))
    return integer(sum(bin(c).count("1") for c in value[start : end + 1]))


# -- keyspace ----------------------------------------------------------------------------------------------------


def _type(store: KeyValueStore, args: list[bytes]) -> Reply:
    value = store.get(args[1])
    return b"+none\r\n" if value is None else b"+%b\r\n" % TYPES[type(value)]


def _rename(store: KeyValueStore, args: list[bytes], only_new: bool = False) -> Reply:
    source, target = args[1], args[2]
    value = store.get(source)
    if value is None:
        return NO_SUCH_KEY
    if source == target:
        return ZERO if only_new else OK
    if only_new and store.get(target) is not None:
        return ZERO
    deadline = store.deadline(source)
    store.delete(source)
    store.set(target, value, deadline)
    return ONE if only_new else OK


def _renamenx(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _rename(store, args, only_new=True)


def _copy_of(value: Any) -> Any:
    if isinstance(value, bytes):
        return value
    copied = value.copy()
    return ZSet(copied) if isinstance(value, ZSet) else copied


def _copy(store: KeyValueStore, args: list[bytes]) -> Reply:
    replace = False
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option == b"REPLACE":
            replace = True
        elif option == b"DB" and i + 1 < len(args):
            db = parse_int64(args[i + 1])
            if db is None:
                return NOT_INTEGER
            if db != 0:
                return error(b"ERR DB index is out of range")
            i += 1
        else:
            return SYNTAX
        i += 1
    value = store.get(args[1])
    if value is None:
        return ZERO
    if args[1] == args[2]:
        return error(b"ERR source and destination objects are the same")
    if store.get(args[2]) is not None and not replace:
        return ZERO
    store.set(args[2], _copy_of(value), store.deadline(args[1]))
    return ONE


def _randomkey(store: KeyValueStore, args: list[bytes]) -> Reply:
    keys = store.keys()
    return bulk(random.choice(keys)) if keys else NIL


def _persist(store: KeyValueStore, args: list[bytes]) -> Reply:
    return ONE if store.persist(args[1]) else ZERO


def _expire_at(store: KeyValueStore, args: list[bytes], scale: int) -> Reply:
    from examples.resp_commands import _set_expiry

    return _set_expiry(store, args, scale, absolute=True)


def _expireat(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _expire_at(store, args, 1000)


def _pexpireat(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _expire_at(store, args, 1)


def _expire_time(store: KeyValueStore, key: bytes, scale: int) -> Reply:
    if store.get(key) is None:
        return b":-2\r\n"
    deadline = store.deadline(key)
    return b":-1\r\n" if deadline is None else integer(deadline // scale)


def _expiretime(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _expire_time(store, args[1], 1000)


def _pexpiretime(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _expire_time(store, args[1], 1)


def _touch(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(sum(store.get(key) is not None for key in args[1:]))


def _scan(store: KeyValueStore, args: list[bytes]) -> Reply:
    cursor = parse_int64(args[1])
    if cursor is None or cursor < 0:
        return error(b"ERR invalid cursor")
    pattern: bytes | None = None
    count = 10
    kind: bytes | None = None
    i = 2
    while i < len(args):
        option = args[i].upper()
        if i + 1 >= len(args):
            return SYNTAX
        if option == b"MATCH":
            pattern = args[i + 1]
        elif option == b"COUNT":
            value = parse_int64(args[i + 1])
            if value is None:
                return NOT_INTEGER
            if value < 1:
                return SYNTAX
            count = value
        elif option == b"TYPE":
            kind = args[i + 1].lower()
        else:
            return SYNTAX
        i += 2
    keys = sorted(store.keys())
    chunk = keys[cursor : cursor + count]
    following = cursor + count if cursor + count < len(keys) else 0
    found = [
        key
        for key in chunk
        if (pattern is None or glob_match(pattern, key)) and (kind is None or TYPES[type(store.get(key))] == kind)
    ]
    return b"*2\r\n" + bulk(b"%d" % following) + array(found)  # type: ignore[operator]


def _object(store: KeyValueStore, args: list[bytes]) -> Reply:
    sub = args[1].upper()
    if sub == b"HELP":
        return array([b"OBJECT <subcommand>", b"ENCODING <key>", b"FREQ <key>", b"IDLETIME <key>", b"REFCOUNT <key>"])
    if len(args) != 3 or sub not in (b"ENCODING", b"REFCOUNT", b"IDLETIME", b"FREQ"):
        return error(b"ERR unknown subcommand or wrong number of arguments for '%b'. Try OBJECT HELP." % args[1])
    value = store.get(args[2])
    if value is None:
        return NIL
    if sub == b"ENCODING":
        return bulk(encoding(value))
    return ONE if sub == b"REFCOUNT" else ZERO


def encoding(value: Any) -> bytes:
    """The encoding name Redis 7.0 would report for ``value`` (what OBJECT ENCODING answers)."""
    if isinstance(value, bytes):
        if parse_int64(value) is not None:
            return b"int"
        return b"embstr" if len(value) <= 44 else b"raw"
    if isinstance(value, deque):
        return b"quicklist"
    if isinstance(value, dict):
        return b"listpack" if len(value) <= 128 else b"hashtable"
    if all(parse_int64(m) is not None for m in value) and len(value) <= 512:
        return b"intset"
    return b"listpack" if len(value) <= 128 else b"hashtable"


def _unlink(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(sum(store.delete(key) for key in args[1:]))


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


def _pop(store: KeyValueStore, args: list[bytes], left: bool) -> Reply:
    if len(args) > 3:
        return arity_error(args[0])
    count: int | None = None
    if len(args) == 3:
        count = parse_int64(args[2])
        if count is None or count < 0:
            return error(b"ERR value is out of range, must be positive")
    items = _of(store, args[1], deque)
    if items is None:
        return NIL if count is None else NIL_ARRAY
    take = items.popleft if left else items.pop
    popped = [take() for _ in range(min(len(items), 1 if count is None else count))]
    _kept(store, args[1], items)
    return bulk(popped[0]) if count is None else array(popped)


def _kept(store: KeyValueStore, key: bytes, container: Any) -> None:
    """A container changed in place: deleted when empty (as Redis does), else marked modified."""
    if not container:
        store.delete(key)
    else:
        store.modified(key)


@_typed
def _lpop(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _pop(store, args, True)


@_typed
def _rpop(store: KeyValueStore, args: list[bytes]) -> Reply:
    return _pop(store, args, False)


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
    return array([items[i] for i in range(start, end + 1)])


@_typed
def _lindex(store: KeyValueStore, args: list[bytes]) -> Reply:
    index = parse_int64(args[2])
    if index is None:
        return NOT_INTEGER
    items = _of(store, args[1], deque)
    if items is None:
        return NIL
    if index < 0:
        index += len(items)
    return bulk(items[index]) if 0 <= index < len(items) else NIL


@_typed
def _lset(store: KeyValueStore, args: list[bytes]) -> Reply:
    index = parse_int64(args[2])
    if index is None:
        return NOT_INTEGER
    items = _of(store, args[1], deque)
    if items is None:
        return NO_SUCH_KEY
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


@_typed
def _hset(store: KeyValueStore, args: list[bytes]) -> Reply:
    if len(args) % 2 or len(args) < 4:
        return arity_error(args[0])
    fields = _of(store, args[1], dict)
    if fields is None:
        fields = {}
        store.set(args[1], fields)
    else:
        store.modified(args[1])
    added = 0
    for i in range(2, len(args), 2):
        added += args[i] not in fields
        fields[args[i]] = args[i + 1]
    return OK if args[0].upper() == b"HMSET" else integer(added)


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


@_typed
def _hget(store: KeyValueStore, args: list[bytes]) -> Reply:
    fields = _of(store, args[1], dict)
    return bulk(None if fields is None else fields.get(args[2]))


@_typed
def _hmget(store: KeyValueStore, args: list[bytes]) -> Reply:
    fields = _of(store, args[1], dict) or {}
    return array([fields.get(name) for name in args[2:]])


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
    fields = _of(store, args[1], dict)
    if fields is None:
        return ZERO
    removed = sum(fields.pop(name, None) is not None for name in args[2:])
    if removed:
        _kept(store, args[1], fields)
    return integer(removed)


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
    by = parse_float(args[3])
    if by is None:
        return NOT_FLOAT
    fields = _of(store, args[1], dict)
    old = b"0" if fields is None else fields.get(args[2], b"0")
    value = parse_float(old)
    if value is None:
        return error(b"ERR hash value is not a float")
    result = value + by
    if math.isinf(result):
        return error(b"ERR increment would produce NaN or Infinity")
    text = format_float(result)
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


@_typed
def _sadd(store: KeyValueStore, args: list[bytes]) -> Reply:
    members = _of(store, args[1], set)
    if members is None:
        members = set()
        store.set(args[1], members)
    else:
        store.modified(args[1])
    before = len(members)
    members.update(args[2:])
    return integer(len(members) - before)


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


@_typed
def _srandmember(store: KeyValueStore, args: list[bytes]) -> Reply:
    members = _of(store, args[1], set)
    if len(args) == 2:
        return bulk(random.choice(sorted(members)) if members else None)
    count = parse_int64(args[2])
    if count is None:
        return NOT_INTEGER
    pool = sorted(members or ())
    if not pool:
        return EMPTY
    if count >= 0:
        return array(random.sample(pool, min(count, len(pool))))
    return array([random.choice(pool) for _ in range(-count)])


@_typed
def _spop(store: KeyValueStore, args: list[bytes]) -> Reply:
    members = _of(store, args[1], set)
    count: int | None = None
    if len(args) == 3:
        count = parse_int64(args[2])
        if count is None or count < 0:
            return error(b"ERR value is out of range, must be positive")
    if not members:
        return NIL if count is None else EMPTY
    picked = random.sample(sorted(members), min(1 if count is None else count, len(members)))
    members.difference_update(picked)
    _kept(store, args[1], members)
    return bulk(picked[0]) if count is None else array(picked)


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
    source = _of(store, args[1], set)
    target = _of(store, args[2], set)
    if source is None or args[3] not in source:
        return ZERO
    source.discard(args[3])
    _kept(store, args[1], source)
    if target is None:
        store.set(args[2], {args[3]})
    else:
        target.add(args[3])
        store.modified(args[2])
    return ONE


MORE: dict[bytes, tuple[Command, int, int]] = {
    b"SETEX": (_setex, 4, 4),
    b"PSETEX": (_psetex, 4, 4),
    b"SETNX": (_setnx, 3, 3),
    b"GETEX": (_getex, 2, _ANY),
    b"GETDEL": (_getdel, 2, 2),
    b"GETSET": (_getset, 3, 3),
    b"STRLEN": (_strlen, 2, 2),
    b"APPEND": (_append, 3, 3),
    b"GETRANGE": (_getrange, 4, 4),
    b"SUBSTR": (_getrange, 4, 4),
    b"SETRANGE": (_setrange, 4, 4),
    b"INCRBYFLOAT": (_incrbyfloat, 3, 3),
    b"MSETNX": (_msetnx, 3, _ANY),
    b"LCS": (_lcs, 3, _ANY),
    b"SETBIT": (_setbit, 4, 4),
    b"GETBIT": (_getbit, 3, 3),
    b"BITCOUNT": (_bitcount, 2, 5),
    b"TYPE": (_type, 2, 2),
    b"RENAME": (_rename, 3, 3),
    b"RENAMENX": (_renamenx, 3, 3),
    b"COPY": (_copy, 3, _ANY),
    b"RANDOMKEY": (_randomkey, 1, 1),
    b"PERSIST": (_persist, 2, 2),
    b"EXPIREAT": (_expireat, 3, _ANY),
    b"PEXPIREAT": (_pexpireat, 3, _ANY),
    b"EXPIRETIME": (_expiretime, 2, 2),
    b"PEXPIRETIME": (_pexpiretime, 2, 2),
    b"TOUCH": (_touch, 2, _ANY),
    b"UNLINK": (_unlink, 2, _ANY),
    b"SCAN": (_scan, 2, _ANY),
    b"OBJECT": (_object, 2, _ANY),
    b"LPUSH": (_lpush, 3, _ANY),
    b"RPUSH": (_rpush, 3, _ANY),
    b"LPUSHX": (_lpushx, 3, _ANY),
    b"RPUSHX": (_rpushx, 3, _ANY),
    b"LPOP": (_lpop, 2, 3),
    b"RPOP": (_rpop, 2, 3),
    b"LLEN": (_llen, 2, 2),
    b"LRANGE": (_lrange, 4, 4),
    b"LINDEX": (_lindex, 3, 3),
    b"LSET": (_lset, 4, 4),
    b"LREM": (_lrem, 4, 4),
    b"LTRIM": (_ltrim, 4, 4),
    b"LINSERT": (_linsert, 5, 5),
    b"HSET": (_hset, 4, _ANY),
    b"HMSET": (_hset, 4, _ANY),
    b"HSETNX": (_hsetnx, 4, 4),
    b"HGET": (_hget, 3, 3),
    b"HMGET": (_hmget, 3, _ANY),
    b"HGETALL": (_hgetall, 2, 2),
    b"HDEL": (_hdel, 3, _ANY),
    b"HLEN": (_hlen, 2, 2),
    b"HEXISTS": (_hexists, 3, 3),
    b"HKEYS": (_hkeys, 2, 2),
    b"HVALS": (_hvals, 2, 2),
    b"HSTRLEN": (_hstrlen, 3, 3),
    b"HINCRBY": (_hincrby, 4, 4),
    b"HINCRBYFLOAT": (_hincrbyfloat, 4, 4),
    b"SADD": (_sadd, 3, _ANY),
    b"SREM": (_srem, 3, _ANY),
    b"SMEMBERS": (_smembers, 2, 2),
    b"SCARD": (_scard, 2, 2),
    b"SISMEMBER": (_sismember, 3, 3),
    b"SMISMEMBER": (_smismember, 3, _ANY),
    b"SRANDMEMBER": (_srandmember, 2, 3),
    b"SPOP": (_spop, 2, 3),
    b"SINTER": (_set_op("inter"), 2, _ANY),
    b"SUNION": (_set_op("union"), 2, _ANY),
    b"SDIFF": (_set_op("diff"), 2, _ANY),
    b"SINTERSTORE": (_set_store("inter"), 3, _ANY),
    b"SUNIONSTORE": (_set_store("union"), 3, _ANY),
    b"SDIFFSTORE": (_set_store("diff"), 3, _ANY),
    b"SMOVE": (_smove, 4, 4),
}
"""The commands this module adds, by upper-case name, with their arity (name included)."""

RESP3: dict[bytes, Command] = {
    b"HGETALL": _hgetall3,
    b"SMEMBERS": _smembers3,
    b"SINTER": _set_op("inter", True),
    b"SUNION": _set_op("union", True),
    b"SDIFF": _set_op("diff", True),
}
"""Commands whose RESP3 reply differs (a map or a set where RESP2 has an array)."""


# -- sorted sets and streams: the core that the keyspace tests touch ----------------------------------------------


class ZSet(dict):  # type: ignore[type-arg]
    """A sorted set: member -> score (ordered by score, then member, when read)."""

    def ordered(self) -> list[tuple[bytes, float]]:
        return sorted(self.items(), key=lambda item: (item[1], item[0]))


TYPES[ZSet] = b"zset"


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
    zset = _of(store, args[1], ZSet)
    if zset is None:
        return ZERO
    removed = sum(zset.pop(member, None) is not None for member in args[2:])
    if removed:
        _kept(store, args[1], zset)
    return integer(removed)


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


class Stream:
    """A stream: entries by id, and consumer groups with their pending entries (the core the tests touch)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, int], list[bytes]] = {}
        self.last = (0, 0)
        self.groups: dict[bytes, dict[str, Any]] = {}

    def copy(self) -> Stream:
        other = Stream()
        other.entries = {k: list(v) for k, v in self.entries.items()}
        other.last = self.last
        other.groups = {
            name: {"last": g["last"], "pending": dict(g["pending"]), "consumers": set(g["consumers"])}
            for name, g in self.groups.items()
        }
        return other

    def __len__(self) -> int:
        return len(self.entries)


TYPES[Stream] = b"stream"


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


MORE.update(
    {
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
)
RESP3[b"ZSCORE"] = _zscore3
