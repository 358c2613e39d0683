"""The RESP example's string and keyspace families beyond the core of :mod:`resp_server.commands`."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from resp_server.replies import (
    INT64_MAX,
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
from resp_server.store import KeyValueStore, glob_match
from resp_server.values import (
    MAX_STRING,
    NO_SUCH_KEY,
    NOT_INTEGER,
    ONE,
    SYNTAX,
    TYPES,
    ZERO,
    Stream,
    ZSet,
    _of,
    _typed,
    add_long_double,
    integer,
    parse_cursor,
)

# -- strings -----------------------------------------------------------------------------------------------------


def _set_with_ttl(store: KeyValueStore, args: list[bytes], scale: int) -> Reply:
    amount = parse_int64(args[2])
    if amount is None:
        return NOT_INTEGER
    deadline = store.clock() + amount * scale
    if amount <= 0 or amount > INT64_MAX // scale or deadline > INT64_MAX:  # Redis checks the sum for overflow
        return error(b"ERR invalid expire time in '%b' command" % args[0].lower())
    store.set(args[1], args[3], deadline)
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


@per_protocol
@_typed
def _getex(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    # Redis's order: the options' syntax, the key (nil when missing), its type, then the expiry's number.
    scales = {b"EX": (1000, True), b"PX": (1, True), b"EXAT": (1000, False), b"PXAT": (1, False)}
    option = args[2].upper() if len(args) > 2 else None
    if option is not None and not ((option == b"PERSIST" and len(args) == 3) or (option in scales and len(args) == 4)):
        return SYNTAX
    value = _of(store, args[1], bytes)
    if value is None:
        return encoder.nil
    if option in scales:
        amount = parse_int64(args[3])
        if amount is None:
            return NOT_INTEGER
        scale, relative = scales[option]
        deadline = amount * scale + (store.clock() if relative else 0)
        if amount <= 0 or amount > INT64_MAX // scale or deadline > INT64_MAX:
            return error(b"ERR invalid expire time in 'getex' command")
        if deadline <= store.clock():
            store.delete(args[1])
        else:
            store.set_deadline(args[1], deadline)
    elif option == b"PERSIST":
        store.persist(args[1])
    return bulk(value)


@per_protocol
@_typed
def _getdel(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    value = _of(store, args[1], bytes)
    if value is not None:
        store.delete(args[1])
    return encoder.bulk(value)


@per_protocol
@_typed
def _getset(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    value = _of(store, args[1], bytes)
    store.set(args[1], args[2])
    return encoder.bulk(value)


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


@_typed
def _getrange(store: KeyValueStore, args: list[bytes]) -> Reply:
    start, end = parse_int64(args[2]), parse_int64(args[3])
    if start is None or end is None:
        return NOT_INTEGER
    value = _of(store, args[1], bytes) or b""
    if start < 0 and end < 0 and start > end:
        return b"$0\r\n\r\n"
    # Redis clamps a negative end to 0 (where LRANGE's ranges leave it empty).
    size = len(value)
    start, end = max(start + size if start < 0 else start, 0), max(end + size if end < 0 else end, 0)
    end = min(end, size - 1)
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
    text = add_long_double(b"0" if old is None else old, args[2])
    if isinstance(text, Exception):
        return error(str(text).encode())
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


@per_protocol
@_typed
def _lcs(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    values = [store.get(key) for key in args[1:3]]
    if any(value is not None and type(value) is not bytes for value in values):
        return error(b"ERR The specified keys must contain string values")
    a, b = (value or b"" for value in values)
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
    if want_len and want_idx:  # Redis 7.0 checks this after reading both keys
        return error(b"ERR If you want both the length and indexes, please just use IDX.")
    n, m = len(a), len(b)
    if (n + 1) * (m + 1) * 4 > MAX_STRING:  # Redis's table of uint32 may not outgrow proto-max-bulk-len
        return error(b"ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
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
    parts = [encoder.map_header(2) + b"$7\r\nmatches\r\n*%d\r\n" % len(matches)]
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
    if args[1] == args[2]:  # before the lookup, as Redis
        return error(b"ERR source and destination objects are the same")
    value = store.get(args[1])
    if value is None:
        return ZERO
    if store.get(args[2]) is not None and not replace:
        return ZERO
    store.set(args[2], _copy_of(value), store.deadline(args[1]))
    return ONE


@per_protocol
def _randomkey(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    keys = store.keys()
    return bulk(random.choice(keys)) if keys else encoder.nil


def _persist(store: KeyValueStore, args: list[bytes]) -> Reply:
    return ONE if store.persist(args[1]) else ZERO


def _expire_at(store: KeyValueStore, args: list[bytes], scale: int) -> Reply:
    from resp_server.commands import _set_expiry

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
    cursor = parse_cursor(args[1])
    if cursor is None:
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
            pattern = None if args[i + 1] == b"*" else args[i + 1]  # Redis: "*" filters nothing, not even ""
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
    # join_replies: a long listing is chunks, not one bytes object.
    return join_replies([b"*2\r\n", bulk(b"%d" % following), array(found)])


@per_protocol
def _object(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    sub = args[1].upper()
    if sub == b"HELP":
        return array([b"OBJECT <subcommand>", b"ENCODING <key>", b"FREQ <key>", b"IDLETIME <key>", b"REFCOUNT <key>"])
    if len(args) != 3 or sub not in (b"ENCODING", b"REFCOUNT", b"IDLETIME", b"FREQ"):
        return error(b"ERR unknown subcommand or wrong number of arguments for '%b'. Try OBJECT HELP." % args[1])
    value = store.get(args[2])
    if value is None:
        return encoder.nil
    if sub == b"ENCODING":
        return bulk(encoding(value))
    if sub == b"FREQ":  # this server has no LFU policy, which Redis needs for FREQ
        return _NO_LFU
    if sub == b"REFCOUNT":
        # Redis shares the objects of the integers 0 to 9999, with a refcount it pins at INT_MAX.
        number = parse_int64(value) if type(value) is bytes else None
        return b":2147483647\r\n" if number is not None and 0 <= number < 10_000 else ONE
    return ZERO


_NO_LFU = error(
    b"ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching"
    b" between policies at runtime LRU and LFU data will take some time to adjust."
)


def encoding(value: Any) -> bytes:
    """The encoding name Redis 7.0 would report for ``value`` (what OBJECT ENCODING answers)."""
    if isinstance(value, bytes):
        if parse_int64(value) is not None:
            return b"int"
        return b"embstr" if len(value) <= 44 else b"raw"
    if isinstance(value, deque):
        return b"quicklist"
    if isinstance(value, Stream):
        return b"stream"
    if isinstance(value, ZSet):
        small = len(value) <= 128 and all(len(member) <= 64 for member in value)
        return b"listpack" if small else b"skiplist"
    if isinstance(value, dict):
        small = len(value) <= 128 and all(len(k) <= 64 and len(v) <= 64 for k, v in value.items())
        return b"listpack" if small else b"hashtable"
    # Redis 7.0 has no listpack sets: an intset or a hash table.
    if len(value) <= 512 and all(parse_int64(m) is not None for m in value):
        return b"intset"
    return b"hashtable"


def _unlink(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(sum(store.delete(key) for key in args[1:]))


STRINGS: dict[bytes, Entry] = {
    b"SETEX": (_setex, 4, 4),
    b"PSETEX": (_psetex, 4, 4),
    b"SETNX": (_setnx, 3, 3),
    b"GETEX": (_getex, 2, MANY),
    b"GETDEL": (_getdel, 2, 2),
    b"GETSET": (_getset, 3, 3),
    b"STRLEN": (_strlen, 2, 2),
    b"APPEND": (_append, 3, 3),
    b"GETRANGE": (_getrange, 4, 4),
    b"SUBSTR": (_getrange, 4, 4),
    b"SETRANGE": (_setrange, 4, 4),
    b"INCRBYFLOAT": (_incrbyfloat, 3, 3),
    b"MSETNX": (_msetnx, 3, MANY),
    b"LCS": (_lcs, 3, MANY),
    b"SETBIT": (_setbit, 4, 4),
    b"GETBIT": (_getbit, 3, 3),
    b"TYPE": (_type, 2, 2),
    b"RENAME": (_rename, 3, 3),
    b"RENAMENX": (_renamenx, 3, 3),
    b"COPY": (_copy, 3, MANY),
    b"RANDOMKEY": (_randomkey, 1, 1),
    b"PERSIST": (_persist, 2, 2),
    b"EXPIREAT": (_expireat, 3, MANY),
    b"PEXPIREAT": (_pexpireat, 3, MANY),
    b"EXPIRETIME": (_expiretime, 2, 2),
    b"PEXPIRETIME": (_pexpiretime, 2, 2),
    b"TOUCH": (_touch, 2, MANY),
    b"UNLINK": (_unlink, 2, MANY),
    b"SCAN": (_scan, 2, MANY),
    b"OBJECT": (_object, 2, MANY),
}
"""The string and keyspace commands beyond the core, by upper-case name, with their arity (name included)."""
