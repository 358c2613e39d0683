"""Sorted sets read and trimmed by range: ZRANGE in all its forms (by rank, BYSCORE, BYLEX, REV, LIMIT, WITHSCORES),
ZRANGESTORE, the older ZRANGEBYSCORE/ZRANGEBYLEX/ZREVRANGE* spellings, ZCOUNT, ZLEXCOUNT, ZRANK, ZREVRANK and
ZREMRANGEBY{RANK,SCORE,LEX}. Errors and reply shapes are Redis 7.0's (``zrangeGenericCommand``): WITHSCORES answers
a flat array in RESP2 and ``[member, double]`` pairs in RESP3."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from resp_server.replies import (
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
from resp_server.store import KeyValueStore
from resp_server.values import (
    EMPTY,
    NOT_INTEGER,
    SYNTAX,
    ZERO,
    ZSet,
    _kept,
    _of,
    _range,
    _typed,
    integer,
    parse_range_float,
)

NOT_FLOAT_RANGE = error(b"ERR min or max is not a float")
NOT_LEX_RANGE = error(b"ERR min or max not valid string range item")

Items = Sequence[tuple[bytes, float]]
Selector = Callable[[ZSet], list[tuple[bytes, float]]]


def scored(encoder: Encoder, items: Items, withscores: bool) -> Reply:
    """Members, or with their scores: a flat array in RESP2, an array of ``[member, double]`` pairs in RESP3."""
    if not withscores:
        return array([member for member, _ in items])
    if encoder.proto == 2:
        return array([text for member, score in items for text in (member, format_double(score))])
    parts: list[Reply] = [b"*%d\r\n" % len(items)]
    for member, score in items:
        parts.append(b"*2\r\n")
        parts.append(bulk(member))
        parts.append(encoder.double(score))
    return join_replies(parts)


# -- ranges ------------------------------------------------------------------------------------------------------


def score_range(low: bytes, high: bytes) -> Callable[[float], bool] | None:
    """A test of a score against ``low``..``high`` (``(`` makes a bound exclusive), or None if one is no float."""
    bounds = []
    for text in (low, high):
        exclusive = text.startswith(b"(")
        value = parse_range_float(text[1:] if exclusive else text)
        if value is None:
            return None
        bounds.append((value, exclusive))
    (lo, lo_open), (hi, hi_open) = bounds
    return lambda s: (lo < s if lo_open else lo <= s) and (s < hi if hi_open else s <= hi)


def _lex_bound(text: bytes) -> tuple[int, bytes, bool] | None:
    """(-1 for ``-``, 1 for ``+``, else 0; the string; exclusive), or None when ``text`` is no range item."""
    if text == b"-":
        return -1, b"", False
    if text == b"+":
        return 1, b"", False
    if text[:1] in (b"[", b"("):
        return 0, text[1:], text[:1] == b"("
    return None


def lex_range(low: bytes, high: bytes) -> Callable[[bytes], bool] | None:
    """A test of a member against a lex range (``[a``, ``(a``, ``-``, ``+``), or None if a bound is malformed."""
    lo, hi = _lex_bound(low), _lex_bound(high)
    if lo is None or hi is None:
        return None

    def above(member: bytes) -> bool:
        inf, text, exclusive = lo
        return inf < 0 or (inf == 0 and (member > text if exclusive else member >= text))

    def below(member: bytes) -> bool:
        inf, text, exclusive = hi
        return inf > 0 or (inf == 0 and (member < text if exclusive else member <= text))

    return lambda member: above(member) and below(member)


def _limited(items: list[tuple[bytes, float]], offset: int, limit: int) -> list[tuple[bytes, float]]:
    """LIMIT offset count as Redis applies it: a negative offset selects nothing, a negative count everything left."""
    if offset < 0:
        return []
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _by_rank(zset: ZSet, start: int, end: int, reverse: bool) -> list[tuple[bytes, float]]:
    ordered = zset.ordered()
    start, end = _range(start, end, len(ordered))
    if start > end:
        return []
    if reverse:
        n = len(ordered)
        return ordered[n - 1 - end : n - start][::-1]
    return ordered[start : end + 1]


def _generic(encoder: Encoder, store: KeyValueStore, args: list[bytes], first: int, dest: bytes | None, kind: bytes,
             reverse: bool | None) -> Reply:  # fmt: skip
    """``zrangeGenericCommand``: ``args[first]`` is the source key; ``kind`` is b"" (any of rank, BYSCORE, BYLEX
    may follow), b"RANK", b"BYSCORE" or b"BYLEX"; ``reverse`` None lets REV follow. ``dest`` stores the result."""
    withscores = False
    offset, limit = 0, -1
    i = first + 3
    while i < len(args):
        option = args[i].upper()
        if dest is None and option == b"WITHSCORES":
            withscores = True
        elif option == b"LIMIT" and len(args) - i - 1 >= 2:
            parsed = parse_int64(args[i + 1]), parse_int64(args[i + 2])
            if parsed[0] is None or parsed[1] is None:
                return NOT_INTEGER
            offset, limit = parsed[0], parsed[1]
            i += 2
        elif reverse is None and option == b"REV":
            reverse = True
        elif not kind and option in (b"BYSCORE", b"BYLEX"):
            kind = option
        else:
            return SYNTAX
        i += 1
    reverse = bool(reverse)
    kind = kind or b"RANK"
    if limit != -1 and kind == b"RANK":
        return error(b"ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX")
    if withscores and kind == b"BYLEX":
        return error(b"ERR syntax error, WITHSCORES not supported in combination with BYLEX")
    low, high = args[first + 1], args[first + 2]
    if reverse and kind != b"RANK":
        low, high = high, low
    select: Selector
    if kind == b"RANK":
        start, end = parse_int64(low), parse_int64(high)
        if start is None or end is None:
            return NOT_INTEGER
        select = lambda z: _by_rank(z, start, end, reverse)  # noqa: E731
    else:
        test = score_range(low, high) if kind == b"BYSCORE" else lex_range(low, high)
        if test is None:
            return NOT_FLOAT_RANGE if kind == b"BYSCORE" else NOT_LEX_RANGE
        at = 1 if kind == b"BYSCORE" else 0
        select = lambda z: _limited(  # noqa: E731
            [item for item in (z.ordered()[::-1] if reverse else z.ordered()) if test(item[at])],  # type: ignore[arg-type]
            offset,
            limit,
        )
    zset = _of(store, args[first], ZSet)
    items = [] if zset is None else select(zset)
    if dest is None:
        return EMPTY if zset is None else scored(encoder, items, withscores)
    store.delete(dest)
    if items:
        store.set(dest, ZSet(items))
    return integer(len(items))


def _zrange_command(kind: bytes, reverse: bool | None, store_result: bool = False) -> Entry:
    @per_protocol
    @_typed
    def run(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
        if store_result:
            return _generic(encoder, store, args, 2, args[1], kind, reverse)
        return _generic(encoder, store, args, 1, None, kind, reverse)

    return (run, 5 if store_result else 4, MANY)


# -- counting, ranks, removing by range --------------------------------------------------------------------------


@_typed
def _zcount(store: KeyValueStore, args: list[bytes]) -> Reply:
    test = score_range(args[2], args[3])
    if test is None:
        return NOT_FLOAT_RANGE
    zset = _of(store, args[1], ZSet) or {}
    return integer(sum(1 for score in zset.values() if test(score)))


@_typed
def _zlexcount(store: KeyValueStore, args: list[bytes]) -> Reply:
    test = lex_range(args[2], args[3])
    if test is None:
        return NOT_LEX_RANGE
    zset = _of(store, args[1], ZSet) or {}
    return integer(sum(1 for member in zset if test(member)))


def _rank(reverse: bool) -> Entry:
    @per_protocol
    @_typed
    def run(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
        zset = _of(store, args[1], ZSet)
        if zset is None or args[2] not in zset:
            return encoder.nil
        score = zset[args[2]]
        ordered = zset.ordered()
        lo, hi = 0, len(ordered)
        while lo < hi:  # the first entry not before (score, member)
            mid = (lo + hi) // 2
            if (ordered[mid][1], ordered[mid][0]) < (score, args[2]):
                lo = mid + 1
            else:
                hi = mid
        return integer(len(ordered) - 1 - lo if reverse else lo)

    return (run, 3, 3)


def _remove_range(kind: bytes) -> Entry:
    @_typed
    def run(store: KeyValueStore, args: list[bytes]) -> Reply:
        doomed: list[tuple[bytes, float]]
        if kind == b"RANK":
            start, end = parse_int64(args[2]), parse_int64(args[3])
            if start is None or end is None:
                return NOT_INTEGER
            zset = _of(store, args[1], ZSet)
            doomed = [] if zset is None else _by_rank(zset, start, end, False)
        elif kind == b"SCORE":
            by_score = score_range(args[2], args[3])
            if by_score is None:
                return NOT_FLOAT_RANGE
            zset = _of(store, args[1], ZSet)
            doomed = [item for item in (zset or {}).items() if by_score(item[1])]
        else:
            by_lex = lex_range(args[2], args[3])
            if by_lex is None:
                return NOT_LEX_RANGE
            zset = _of(store, args[1], ZSet)
            doomed = [item for item in (zset or {}).items() if by_lex(item[0])]
        if zset is None or not doomed:
            return ZERO
        for member, _ in list(doomed):
            zset.pop(member, None)
        _kept(store, args[1], zset)
        return integer(len(doomed))

    return (run, 4, 4)


ZSET_RANGES: dict[bytes, Entry] = {
    b"ZRANGE": _zrange_command(b"", None),
    b"ZRANGESTORE": _zrange_command(b"", None, store_result=True),
    b"ZREVRANGE": _zrange_command(b"RANK", True),
    b"ZRANGEBYSCORE": _zrange_command(b"BYSCORE", False),
    b"ZREVRANGEBYSCORE": _zrange_command(b"BYSCORE", True),
    b"ZRANGEBYLEX": _zrange_command(b"BYLEX", False),
    b"ZREVRANGEBYLEX": _zrange_command(b"BYLEX", True),
    b"ZCOUNT": (_zcount, 4, 4),
    b"ZLEXCOUNT": (_zlexcount, 4, 4),
    b"ZRANK": _rank(False),
    b"ZREVRANK": _rank(True),
    b"ZREMRANGEBYRANK": _remove_range(b"RANK"),
    b"ZREMRANGEBYSCORE": _remove_range(b"SCORE"),
    b"ZREMRANGEBYLEX": _remove_range(b"LEX"),
}
"""Sorted-set range commands, by upper-case name, with their arity (name included)."""
