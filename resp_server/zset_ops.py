"""Sorted sets beyond ranges: ZINCRBY, ZMSCORE, ZPOPMIN/ZPOPMAX, ZMPOP, ZRANDMEMBER, and the algebra of sets
ZUNION/ZINTER/ZDIFF (with STORE variants) and ZINTERCARD, whose inputs may be plain sets (every member scoring 1).
Errors and reply shapes are Redis 7.0's (``genericZpopCommand``, ``zunionInterDiffGenericCommand``)."""

from __future__ import annotations

import math
import random

from resp_server.replies import (
    MANY,
    Encoder,
    Entry,
    Reply,
    bulk,
    error,
    join_replies,
    parse_int64,
    per_protocol,
)
from resp_server.store import KeyValueStore
from resp_server.values import (
    EMPTY,
    NOT_FLOAT,
    NOT_INTEGER,
    SYNTAX,
    ZSet,
    _kept,
    _of,
    _typed,
    _Wrong,
    integer,
    parse_float,
    random_pick,
)
from resp_server.zset_ranges import scored

_NOT_POSITIVE = error(b"ERR value is out of range, must be positive")


@per_protocol
@_typed
def _zincrby(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    by = parse_float(args[2])
    if by is None:
        return NOT_FLOAT
    zset = _of(store, args[1], ZSet)
    old = None if zset is None else zset.get(args[3])
    score = by if old is None else old + by  # a new member's score is the increment itself: -0 stays -0
    if math.isnan(score):
        return error(b"ERR resulting score is not a number (NaN)")
    if zset is None:
        store.set(args[1], ZSet({args[3]: score + 0.0}))
    else:
        zset[args[3]] = score
        store.modified(args[1])
    return encoder.double(score)


@per_protocol
@_typed
def _zmscore(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    zset = _of(store, args[1], ZSet) or {}
    parts: list[Reply] = [b"*%d\r\n" % (len(args) - 2)]
    for member in args[2:]:
        score = zset.get(member)
        parts.append(encoder.nil if score is None else encoder.double(score))
    return join_replies(parts)


# -- popping -----------------------------------------------------------------------------------------------------


def _pop(store: KeyValueStore, key: bytes, zset: ZSet, count: int, highest: bool) -> list[tuple[bytes, float]]:
    ordered = zset.ordered()
    taken = list(ordered[::-1][:count] if highest else ordered[:count])
    for member, _ in taken:
        zset.pop(member, None)
    _kept(store, key, zset)
    return taken


def _zpop(highest: bool) -> Entry:
    @per_protocol
    @_typed
    def run(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
        if len(args) > 3:
            return SYNTAX
        count = -1
        if len(args) == 3:
            parsed = parse_int64(args[2])
            if parsed is None or parsed < 0:
                return _NOT_POSITIVE
            count = parsed
        zset = _of(store, args[1], ZSet)
        if zset is None or count == 0:
            return EMPTY
        taken = _pop(store, args[1], zset, max(count, 1), highest)
        if encoder.proto == 3 and count != -1:
            return scored(encoder, taken, True)
        parts: list[Reply] = [b"*%d\r\n" % (2 * len(taken))]
        for member, score in taken:
            parts.append(bulk(member))
            parts.append(encoder.double(score))
        return join_replies(parts)

    return (run, 2, MANY)


def mpop_reply(encoder: Encoder, key: bytes, taken: list[tuple[bytes, float]]) -> Reply:
    """ZMPOP's reply: the key, then ``[member, score]`` pairs (nested in both protocols)."""
    parts: list[Reply] = [b"*2\r\n", bulk(key), b"*%d\r\n" % len(taken)]
    for member, score in taken:
        parts.append(b"*2\r\n")
        parts.append(bulk(member))
        parts.append(encoder.double(score))
    return join_replies(parts)


def parse_mpop(args: list[bytes], at: int) -> tuple[list[bytes], bool, int] | bytes:
    """ZMPOP's ``numkeys key... MIN|MAX [COUNT n]`` from ``args[at]``: (keys, highest, count) or an error reply."""
    numkeys = parse_int64(args[at])
    if numkeys is None or numkeys < 1:
        return error(b"ERR numkeys should be greater than 0")
    where = at + numkeys + 1
    if where >= len(args) or args[where].upper() not in (b"MIN", b"MAX"):
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
    return args[at + 1 : where], args[where].upper() == b"MAX", max(count, 1)


def mpop_first(store: KeyValueStore, keys: list[bytes]) -> tuple[bytes, ZSet] | None:
    """The first of ``keys`` holding a sorted set (WRONGTYPE at the first key of another type before it)."""
    for key in keys:
        zset = _of(store, key, ZSet)
        if zset is not None:
            return key, zset
    return None


@per_protocol
@_typed
def _zmpop(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    parsed = parse_mpop(args, 1)
    if isinstance(parsed, bytes):
        return parsed
    keys, highest, count = parsed
    found = mpop_first(store, keys)
    if found is None:
        return encoder.nil_array
    key, zset = found
    return mpop_reply(encoder, key, _pop(store, key, zset, count, highest))


@per_protocol
@_typed
def _zrandmember(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    if len(args) == 2:
        zset = _of(store, args[1], ZSet)
        return encoder.nil if not zset else bulk(random.choice(list(zset)))
    chosen = random_pick(store, args, ZSet, b"WITHSCORES")
    if not isinstance(chosen, tuple):
        return chosen
    picked, withscores = chosen
    return scored(encoder, picked, withscores)


# -- union, intersection, difference -----------------------------------------------------------------------------

_AGGREGATES = {b"SUM": lambda a, b: a + b, b"MIN": min, b"MAX": max}


def _operation(encoder: Encoder, store: KeyValueStore, args: list[bytes], at: int, how: str, dest: bytes | None,
               card_only: bool = False) -> Reply:  # fmt: skip
    """``zunionInterDiffGenericCommand``: ``args[at]`` is numkeys."""
    name = args[0].lower()
    numkeys = parse_int64(args[at])
    if numkeys is None:
        return NOT_INTEGER
    if numkeys < 1:
        return error(b"ERR at least 1 input key is needed for '%b' command" % name)
    if numkeys > len(args) - at - 1:
        return SYNTAX
    keys = args[at + 1 : at + 1 + numkeys]
    sources: list[dict[bytes, float]] = []
    for key in keys:
        value = store.get(key)
        if value is None:
            sources.append({})
        elif isinstance(value, ZSet):
            sources.append(value)
        elif type(value) is set:
            sources.append(dict.fromkeys(value, 1.0))
        else:
            raise _Wrong
    weights = [1.0] * numkeys
    aggregate = _AGGREGATES[b"SUM"]
    withscores = False
    limit = 0
    i = at + 1 + numkeys
    while i < len(args):
        left = len(args) - i
        option = args[i].upper()
        if how != "diff" and not card_only and left >= numkeys + 1 and option == b"WEIGHTS":
            for j in range(numkeys):
                weight = parse_float(args[i + 1 + j])
                if weight is None:
                    return error(b"ERR weight value is not a float")
                weights[j] = weight
            i += numkeys + 1
        elif how != "diff" and not card_only and left >= 2 and option == b"AGGREGATE":
            if args[i + 1].upper() not in _AGGREGATES:
                return SYNTAX
            aggregate = _AGGREGATES[args[i + 1].upper()]
            i += 2
        elif dest is None and not card_only and option == b"WITHSCORES":
            withscores = True
            i += 1
        elif card_only and left >= 2 and option == b"LIMIT":
            parsed = parse_int64(args[i + 1])
            if parsed is None or parsed < 0:
                return error(b"ERR LIMIT can't be negative")
            limit = parsed
            i += 2
        else:
            return SYNTAX
    result = _combine(sources, weights, aggregate, how)
    if card_only:
        return integer(min(len(result), limit) if limit else len(result))
    if dest is not None:
        store.delete(dest)
        if result:
            store.set(dest, ZSet({m: score + 0.0 for m, score in result.items()}))  # stored: -0 is 0
        return integer(len(result))
    return scored(encoder, ZSet(result).ordered(), withscores)


def _weighted(score: float, weight: float) -> float:
    value = score * weight
    return 0.0 if math.isnan(value) else value


def _combine(
    sources: list[dict[bytes, float]], weights: list[float], aggregate: object, how: str
) -> dict[bytes, float]:
    add = aggregate  # a function of two scores
    result: dict[bytes, float] = {}
    if how == "diff":
        first = sources[0]
        return {m: s for m, s in first.items() if not any(m in other for other in sources[1:])}
    if how == "inter":
        smallest = min(range(len(sources)), key=lambda i: len(sources[i]))
        for member in sources[smallest]:
            if all(member in source for source in sources):
                scores = [_weighted(source[member], w) for source, w in zip(sources, weights, strict=True)]
                total = scores[0]
                for score in scores[1:]:
                    total = add(total, score)  # type: ignore[operator]
                    if math.isnan(total):
                        total = 0.0
                result[member] = total
        return result
    for source, weight in zip(sources, weights, strict=True):
        for member, score in source.items():
            value = _weighted(score, weight)
            if member in result:
                value = add(result[member], value)  # type: ignore[operator]
                if math.isnan(value):
                    value = 0.0
            result[member] = value
    return result


def _set_command(how: str, stored: bool = False, card_only: bool = False) -> Entry:
    @per_protocol
    @_typed
    def run(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
        if stored:
            return _operation(encoder, store, args, 2, how, args[1])
        return _operation(encoder, store, args, 1, how, None, card_only)

    return (run, 4 if stored else 3, MANY)


ZSET_OPS: dict[bytes, Entry] = {
    b"ZINCRBY": (_zincrby, 4, 4),
    b"ZMSCORE": (_zmscore, 3, MANY),
    b"ZPOPMIN": _zpop(False),
    b"ZPOPMAX": _zpop(True),
    b"ZMPOP": (_zmpop, 4, MANY),
    b"ZRANDMEMBER": (_zrandmember, 2, MANY),
    b"ZUNION": _set_command("union"),
    b"ZINTER": _set_command("inter"),
    b"ZDIFF": _set_command("diff"),
    b"ZUNIONSTORE": _set_command("union", stored=True),
    b"ZINTERSTORE": _set_command("inter", stored=True),
    b"ZDIFFSTORE": _set_command("diff", stored=True),
    b"ZINTERCARD": _set_command("inter", card_only=True),
}
"""Sorted-set commands beyond ranges, by upper-case name, with their arity (name included)."""
