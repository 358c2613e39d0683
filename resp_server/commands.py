"""The RESP example's commands: what each one does to a :class:`~resp_server.store.KeyValueStore` and replies.

A command is a function ``(store, args) -> Reply``, where ``args`` is the request with the command name first
(or ``(encoder, store, args)`` for one listed as :class:`~resp_server.replies.PerProtocol`); :data:`COMMANDS` maps
upper-case names to them with their arity. Replies and error messages are Redis 7.0's, byte for byte. Reply encoding
lives in :mod:`resp_server.replies`; framing and the session (MULTI/EXEC, QUIT) in :mod:`resp_server.session`.
"""

from __future__ import annotations

from resp_server.replies import (
    BIG_VALUE,
    INT64_MAX,
    INT64_MIN,
    MANY,
    OK,
    RESP2,
    RESP3,
    WRONGTYPE,
    Command,
    Encoder,
    Entry,
    Reply,
    arity_error,
    array,
    bulk,
    c_string,
    error,
    parse_int64,
    per_protocol,
)
from resp_server.store import KeyValueStore, glob_match

_ZERO = b":0\r\n"
_ONE = b":1\r\n"
_NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"
_SYNTAX = b"-ERR syntax error\r\n"
_OVERFLOW = b"-ERR increment or decrement would overflow\r\n"


def _expire_time_error(name: bytes) -> bytes:
    return error(b"ERR invalid expire time in '%b' command" % name)


def _subcommand_error(name: bytes, sub: bytes) -> bytes:
    return error(b"ERR unknown subcommand '%b'. Try %b HELP." % (c_string(sub)[:128], name))


def _ping(store: KeyValueStore, args: list[bytes]) -> Reply:
    return b"+PONG\r\n" if len(args) == 1 else bulk(args[1])


def _echo(store: KeyValueStore, args: list[bytes]) -> Reply:
    return bulk(args[1])


def _getter(encoder: Encoder) -> Command:
    """GET for one protocol: its null bound in a closure, as GET is the busiest command (a bound partial would add
    to its cost what bulk() spelled out below saves)."""
    nil = encoder.nil

    def _get(store: KeyValueStore, args: list[bytes]) -> Reply:
        value = store.get(args[1])
        if value is None:
            return nil
        size = len(value)
        if size < BIG_VALUE:
            try:
                return b"$%d\r\n%b\r\n" % (size, value)
            except TypeError:  # a list, hash or set: no type check on the common path
                return WRONGTYPE
        if type(value) is not bytes:
            return WRONGTYPE
        return [b"$%d\r\n" % size, value, b"\r\n"]

    return _get


_get = _getter(RESP2)
GET3 = _getter(RESP3)
"""GET in a RESP3 session (the session's table lists it in place of RESP2's)."""


# SET's expiry options: milliseconds per unit, and whether the amount is relative to now.
_SET_EXPIRY = {b"EX": (1000, True), b"PX": (1, True), b"EXAT": (1000, False), b"PXAT": (1, False)}


def _setter(encoder: Encoder) -> Command:
    """SET for one protocol, a closure as GET's is: a plain SET (the busy case) pays no protocol's binding."""

    def _set(store: KeyValueStore, args: list[bytes]) -> Reply:
        if len(args) == 3:
            store.set(args[1], args[2])
            return OK
        return _set_with_options(encoder, store, args)

    return _set


def _set_with_options(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    nx = xx = get = keep_ttl = False
    expiry: bytes | None = None
    amount = b""
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option == b"NX" and not xx:
            nx = True
        elif option == b"XX" and not nx:
            xx = True
        elif option == b"GET":
            get = True
        elif option == b"KEEPTTL" and expiry is None:
            keep_ttl = True
        elif option in _SET_EXPIRY and not keep_ttl and expiry in (None, option) and i + 1 < len(args):
            expiry = option
            i += 1
            amount = args[i]
        else:
            return _SYNTAX
        i += 1
    deadline = None
    if expiry is not None:
        value = parse_int64(amount)
        if value is None:
            return _NOT_INTEGER
        scale, relative = _SET_EXPIRY[expiry]
        if value <= 0 or value > INT64_MAX // scale:
            return _expire_time_error(b"set")
        deadline = value * scale + (store.clock() if relative else 0)
        if deadline > INT64_MAX:
            return _expire_time_error(b"set")
    old = store.get(args[1])
    if get and old is not None and type(old) is not bytes:
        return WRONGTYPE
    reply = encoder.bulk(old) if get else OK
    if (nx and old is not None) or (xx and old is None):
        return reply if get else encoder.nil
    store.set(args[1], args[2], deadline, keep_ttl)
    return reply


_set = _setter(RESP2)
SET3 = _setter(RESP3)
"""SET in a RESP3 session."""


def _delete(store: KeyValueStore, args: list[bytes]) -> bytes:
    return b":%d\r\n" % sum(store.delete(key) for key in args[1:])


def _exists(store: KeyValueStore, args: list[bytes]) -> bytes:
    return b":%d\r\n" % sum(store.exists(key) for key in args[1:])


def _add(store: KeyValueStore, key: bytes, by: int) -> bytes:
    old = store.get(key)
    if old is not None and type(old) is not bytes:
        return WRONGTYPE
    value = 0 if old is None else parse_int64(old)
    if value is None:
        return _NOT_INTEGER
    result = value + by
    if not INT64_MIN <= result <= INT64_MAX:
        return _OVERFLOW
    store.set(key, b"%d" % result, keep_ttl=True)
    return b":%d\r\n" % result


def _incr(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _add(store, args[1], 1)


def _decr(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _add(store, args[1], -1)


def _incrby(store: KeyValueStore, args: list[bytes]) -> bytes:
    by = parse_int64(args[2])
    return _NOT_INTEGER if by is None else _add(store, args[1], by)


def _decrby(store: KeyValueStore, args: list[bytes]) -> bytes:
    by = parse_int64(args[2])
    if by is None:
        return _NOT_INTEGER
    if by == INT64_MIN:
        return error(b"ERR decrement would overflow")
    return _add(store, args[1], -by)


@per_protocol
def _mget(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    values = [store.get(key) for key in args[1:]]
    return encoder.array([v if type(v) is bytes else None for v in values])


def _mset(store: KeyValueStore, args: list[bytes]) -> bytes:
    if len(args) % 2 == 0:
        return arity_error(b"mset")
    for i in range(1, len(args), 2):
        store.set(args[i], args[i + 1])
    return OK


_EXPIRE_CONDITIONS = frozenset((b"NX", b"XX", b"GT", b"LT"))


def _set_expiry(store: KeyValueStore, args: list[bytes], scale: int, absolute: bool = False) -> bytes:
    conditions = set()
    for option in args[3:]:
        condition = option.upper()
        if condition not in _EXPIRE_CONDITIONS:
            return error(b"ERR Unsupported option %b" % c_string(option))
        conditions.add(condition)
    if b"NX" in conditions and len(conditions) > 1:
        return error(b"ERR NX and XX, GT or LT options at the same time are not compatible")
    if b"GT" in conditions and b"LT" in conditions:
        return error(b"ERR GT and LT options at the same time are not compatible")
    amount = parse_int64(args[2])
    if amount is None:
        return _NOT_INTEGER
    now = store.clock()
    base = 0 if absolute else now
    # Redis bounds the seconds before converting them (C division truncates, hence the symmetric range).
    if (scale > 1 and abs(amount) > INT64_MAX // scale) or amount * scale > INT64_MAX - base:
        return _expire_time_error(args[0].lower())
    deadline = amount * scale + base
    key = args[1]
    if not store.exists(key):
        return _ZERO
    current = store.deadline(key)
    if (
        (b"NX" in conditions and current is not None)
        or (b"XX" in conditions and current is None)
        or (b"GT" in conditions and (current is None or deadline <= current))
        or (b"LT" in conditions and current is not None and deadline >= current)
    ):
        return _ZERO
    if deadline <= now:
        store.delete(key)
    else:
        store.set_deadline(key, deadline)
    return _ONE


def _expire(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _set_expiry(store, args, 1000)


def _pexpire(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _set_expiry(store, args, 1)


def _time_to_live(store: KeyValueStore, key: bytes, scale: int) -> bytes:
    if not store.exists(key):
        return b":-2\r\n"
    deadline = store.deadline(key)
    if deadline is None:
        return b":-1\r\n"
    left = max(deadline - store.clock(), 0)
    # TTL rounds to the nearest second, as Redis does.
    return b":%d\r\n" % ((left + scale // 2) // scale)


def _ttl(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _time_to_live(store, args[1], 1000)


def _pttl(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _time_to_live(store, args[1], 1)


def _keys(store: KeyValueStore, args: list[bytes]) -> Reply:
    pattern = args[1]
    keys = store.keys()
    # Redis lists every key for a lone '*' without matching, which is how it returns the empty key too.
    return array(keys if pattern == b"*" else [key for key in keys if glob_match(pattern, key)])


def _dbsize(store: KeyValueStore, args: list[bytes]) -> bytes:
    return b":%d\r\n" % len(store)


def _flush(store: KeyValueStore, args: list[bytes]) -> bytes:
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        return _SYNTAX
    store.clear()
    return OK


def _select(store: KeyValueStore, args: list[bytes]) -> bytes:
    index = parse_int64(args[1])
    if index is None:
        return _NOT_INTEGER
    if not -(2**31) <= index < 2**31:
        return error(b"ERR value is out of range, value must between -2147483648 and 2147483647")
    return OK if index == 0 else error(b"ERR DB index is out of range")


# What CONFIG GET reports: enough for redis-benchmark and redis-cli, which ask for these at start.
_CONFIG = {b"save": b"", b"appendonly": b"no", b"databases": b"1", b"maxmemory": b"0", b"timeout": b"0"}


def _config(store: KeyValueStore, args: list[bytes]) -> Reply:
    if args[1].upper() != b"GET":
        return _subcommand_error(b"CONFIG", args[1])
    if len(args) < 3:
        return arity_error(b"config|get")
    found: dict[bytes, bytes] = {}
    for pattern in args[2:]:
        lowered = pattern.lower()
        found.update((name, value) for name, value in _CONFIG.items() if glob_match(lowered, name))
    return array([item for pair in found.items() for item in pair])


@per_protocol
def _command(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    if len(args) == 1:
        return b"*0\r\n"
    sub = args[1].upper()
    if sub == b"COUNT":
        return b":%d\r\n" % (len(COMMANDS) + len(SESSION_ARITY)) if len(args) == 2 else arity_error(b"command|count")
    if sub == b"DOCS":
        return b"*0\r\n"
    if sub == b"INFO":
        return encoder.array([None] * (len(args) - 2))
    return _subcommand_error(b"COMMAND", args[1])


# HELLO's answer in RESP2, where a map is a flat array of names and values. Clients look at "proto"; the
# name and version are Redis's so that clients gating features on them treat this server as a Redis 7.
_HELLO = (
    b"*12\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n$5\r\nproto\r\n:2\r\n"
    b"$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
)


def _hello(store: KeyValueStore, args: list[bytes]) -> bytes:
    if len(args) == 1:
        return _HELLO
    version = parse_int64(args[1])
    if version is None:
        return error(b"ERR Protocol version is not an integer or out of range")
    if version != 2:
        return error(b"NOPROTO unsupported protocol version")
    if len(args) > 2:
        return error(b"ERR Syntax error in HELLO option '%b'" % c_string(args[2]))
    return _HELLO


COMMANDS: dict[bytes, Entry] = {
    b"PING": (_ping, 1, 2),
    b"ECHO": (_echo, 2, 2),
    b"GET": (_get, 2, 2),
    b"SET": (_set, 3, MANY),
    b"DEL": (_delete, 2, MANY),
    b"EXISTS": (_exists, 2, MANY),
    b"INCR": (_incr, 2, 2),
    b"DECR": (_decr, 2, 2),
    b"INCRBY": (_incrby, 3, 3),
    b"DECRBY": (_decrby, 3, 3),
    b"MGET": (_mget, 2, MANY),
    b"MSET": (_mset, 3, MANY),
    b"EXPIRE": (_expire, 3, MANY),
    b"PEXPIRE": (_pexpire, 3, MANY),
    b"TTL": (_ttl, 2, 2),
    b"PTTL": (_pttl, 2, 2),
    b"KEYS": (_keys, 2, 2),
    b"DBSIZE": (_dbsize, 1, 1),
    b"FLUSHDB": (_flush, 1, MANY),
    b"FLUSHALL": (_flush, 1, MANY),
    b"SELECT": (_select, 2, 2),
    b"CONFIG": (_config, 2, MANY),
    b"COMMAND": (_command, 1, MANY),
    b"HELLO": (_hello, 1, MANY),
}
"""Keyspace commands by upper-case name: the function and the allowed argument count, name included."""

SESSION_ARITY = {b"QUIT": (1, MANY), b"MULTI": (1, 1), b"EXEC": (1, 1), b"DISCARD": (1, 1)}
"""Commands that act on the session itself (run by :class:`~resp_server.session.RespSession`), with their arity."""
