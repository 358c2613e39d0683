"""The rest of the list, hash and set families: LPOS, LMOVE, RPOPLPUSH, LMPOP, HRANDFIELD, SINTERCARD, and the
SCAN family's per-key members (SSCAN, HSCAN, ZSCAN). Errors and reply shapes are Redis 7.0's.

A container's scan answers all its matching members at once with cursor 0, as Redis does for its small
encodings: a member present for the whole scan is always returned, whatever changes meanwhile."""

from __future__ import annotations

import random
from collections import deque

from resp_server.replies import (
    INT64_MIN,
    MANY,
    Encoder,
    Entry,
    Reply,
    array,
    bulk,
    error,
    format_double,
    join_replies,
    parse_int64,
    per_protocol,
)
from resp_server.store import KeyValueStore, glob_match
from resp_server.values import EMPTY, NOT_INTEGER, SYNTAX, ZSet, _kept, _of, _typed, integer, parse_cursor, random_pick

_NUMKEYS = error(b"ERR numkeys should be greater than 0")

# -- lists -------------------------------------------------------------------------------------------------------


@per_protocol
@_typed
def _lpos(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    rank, count, maxlen = 1, -1, 0
    wrapped = False
    i = 3
    while i < len(args):
        option = args[i].upper()
        value = parse_int64(args[i + 1]) if i + 1 < len(args) else None
        if i + 1 >= len(args) or option not in (b"RANK", b"COUNT", b"MAXLEN"):
            return SYNTAX
        if option == b"RANK":
            if value is None:
                return NOT_INTEGER
            if value == 0:
                return error(
                    b"ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
                    b"or use negative to start from the end of the list"
                )
            # Redis negates a negative rank in a long: LONG_MIN stays itself, so every match from the tail is at
            # or past it, and its COUNT check overflows and never stops the search.
            wrapped = value == INT64_MIN
            rank = -1 if wrapped else value
        elif value is None or value < 0:
            return error(b"ERR %b can't be negative" % option)
        elif option == b"COUNT":
            count = value
        else:
            maxlen = value
        i += 2
    items = _of(store, args[1], deque)
    if items is None:
        return EMPTY if count != -1 else encoder.nil
    size = len(items)
    order = range(size) if rank > 0 else range(size - 1, -1, -1)
    if maxlen:
        order = order[:maxlen]
    found: list[int] = []
    matches = 0
    target = args[2]
    for index in order:
        if items[index] == target:
            matches += 1
            if matches >= abs(rank):
                found.append(index)
                if count != -1 and (not count or wrapped or len(found) < count):
                    continue
                break
    if count != -1:
        return b"*%d\r\n" % len(found) + b"".join(integer(i) for i in found)
    return integer(found[0]) if found else encoder.nil


def _side(text: bytes) -> bool | None:
    """LEFT is True, RIGHT False, anything else None."""
    word = text.upper()
    return True if word == b"LEFT" else False if word == b"RIGHT" else None


def _move(
    encoder: Encoder, store: KeyValueStore, source: bytes, target: bytes, left_from: bool, left_to: bool
) -> Reply:
    items = _of(store, source, deque)
    if not items:
        return encoder.nil
    dest = _of(store, target, deque)
    value = items.popleft() if left_from else items.pop()
    if dest is None:
        dest = deque()
        store.set(target, dest)
    else:
        store.modified(target)
    if left_to:
        dest.appendleft(value)
    else:
        dest.append(value)
    _kept(store, source, items)  # after the push: the source may be the destination
    return bulk(value)


@per_protocol
@_typed
def _lmove(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    left_from, left_to = _side(args[3]), _side(args[4])
    if left_from is None or left_to is None:
        return SYNTAX
    return _move(encoder, store, args[1], args[2], left_from, left_to)


@per_protocol
@_typed
def _rpoplpush(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    return _move(encoder, store, args[1], args[2], False, True)


def parse_lmpop(args: list[bytes], at: int) -> tuple[list[bytes], bool, int] | bytes:
    """LMPOP's ``numkeys key... LEFT|RIGHT [COUNT n]`` from ``args[at]``: (keys, left, count) or an error reply."""
    numkeys = parse_int64(args[at])
    if numkeys is None or numkeys < 1:
        return _NUMKEYS
    where = at + numkeys + 1
    if where >= len(args) or _side(args[where]) is None:
        return SYNTAX
    count = -1
    i = where + 1
    while i < len(args):
        if count == -1 and args[i].upper() == b"COUNT" and i + 1 < len(args):
            parsed = parse_int64(args[i + 1])
            if parsed is None or parsed < 1:
                return error(b"ERR count should be greater than 0")
            count = parsed
            i += 2
        else:
            return SYNTAX
    return args[at + 1 : where], bool(_side(args[where])), max(count, 1)


def lmpop_from(encoder: Encoder, store: KeyValueStore, keys: list[bytes], left: bool, count: int) -> Reply | None:
    """Pop from the first of ``keys`` holding a list: the reply ``[key, [items]]``, None when no list is there."""
    for key in keys:
        items = _of(store, key, deque)
        if items:
            take = items.popleft if left else items.pop
            popped = [take() for _ in range(min(count, len(items)))]
            _kept(store, key, items)
            return join_replies([b"*2\r\n", bulk(key), array(popped)])
    return None


@per_protocol
@_typed
def _lmpop(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    parsed = parse_lmpop(args, 1)
    if isinstance(parsed, bytes):
        return parsed
    reply = lmpop_from(encoder, store, *parsed)
    return encoder.nil_array if reply is None else reply


# -- hashes and sets ---------------------------------------------------------------------------------------------


@per_protocol
@_typed
def _hrandfield(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    if len(args) == 2:
        fields = _of(store, args[1], dict)
        return encoder.nil if not fields else bulk(random.choice(list(fields)))
    chosen = random_pick(store, args, dict, b"WITHVALUES")
    if not isinstance(chosen, tuple):
        return chosen
    picked, withvalues = chosen
    if not withvalues:
        return array([name for name, _ in picked])
    if encoder.proto == 2:
        return array([x for pair in picked for x in pair])
    parts: list[Reply] = [b"*%d\r\n" % len(picked)]
    for name, value in picked:
        parts.extend((b"*2\r\n", bulk(name), bulk(value)))
    return join_replies(parts)


@_typed
def _sintercard(store: KeyValueStore, args: list[bytes]) -> Reply:
    numkeys = parse_int64(args[1])
    if numkeys is None or numkeys < 1:
        return _NUMKEYS
    if numkeys > len(args) - 2:
        return error(b"ERR Number of keys can't be greater than number of args")
    limit = 0
    i = 2 + numkeys
    while i < len(args):
        if args[i].upper() == b"LIMIT" and i + 1 < len(args):
            parsed = parse_int64(args[i + 1])
            if parsed is None or parsed < 0:
                return error(b"ERR LIMIT can't be negative")
            limit = parsed
            i += 2
        else:
            return SYNTAX
    sets = [_of(store, key, set) or set() for key in args[2 : 2 + numkeys]]
    sets.sort(key=len)
    found = 0
    for member in sets[0]:
        if all(member in other for other in sets[1:]):
            found += 1
            if found == limit:
                break
    return integer(found)


# -- SSCAN, HSCAN, ZSCAN -----------------------------------------------------------------------------------------


def _scanner(kind: type) -> Entry:
    @_typed
    def run(store: KeyValueStore, args: list[bytes]) -> Reply:
        if parse_cursor(args[2]) is None:
            return error(b"ERR invalid cursor")
        value = _of(store, args[1], kind)
        if value is None:
            return b"*2\r\n$1\r\n0\r\n*0\r\n"
        pattern: bytes | None = None
        i = 3
        while i < len(args):
            option = args[i].upper()
            if i + 1 >= len(args) or option not in (b"MATCH", b"COUNT"):
                return SYNTAX
            if option == b"COUNT":
                count = parse_int64(args[i + 1])
                if count is None:
                    return NOT_INTEGER
                if count < 1:
                    return SYNTAX
            else:
                pattern = None if args[i + 1] == b"*" else args[i + 1]  # Redis: "*" filters nothing, not even ""
            i += 2
        if kind is set:
            found = [m for m in value if pattern is None or glob_match(pattern, m)]
        elif kind is dict:
            found = [x for k, v in value.items() if pattern is None or glob_match(pattern, k) for x in (k, v)]
        else:
            found = [
                x for k, v in value.items() if pattern is None or glob_match(pattern, k) for x in (k, format_double(v))
            ]
        return join_replies([b"*2\r\n$1\r\n0\r\n", array(found)])

    return (run, 3, MANY)


CONTAINER_OPS: dict[bytes, Entry] = {
    b"LPOS": (_lpos, 3, MANY),
    b"LMOVE": (_lmove, 5, 5),
    b"RPOPLPUSH": (_rpoplpush, 3, 3),
    b"LMPOP": (_lmpop, 4, MANY),
    b"HRANDFIELD": (_hrandfield, 2, MANY),
    b"SINTERCARD": (_sintercard, 3, MANY),
    b"SSCAN": _scanner(set),
    b"HSCAN": _scanner(dict),
    b"ZSCAN": _scanner(ZSet),
}
"""The rest of the container families, by upper-case name, with their arity (name included)."""
