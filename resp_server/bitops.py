"""Strings as bitmaps: BITCOUNT and BITPOS (byte or bit ranges) and BITOP, with Redis 7.0's range rules (a range
is clamped into the string, a negative end counts from its end) and errors."""

from __future__ import annotations

from resp_server.replies import MANY, Entry, Reply, error, parse_int64
from resp_server.store import KeyValueStore
from resp_server.values import NOT_INTEGER, SYNTAX, ZERO, _of, _typed, _Wrong, integer


def _clamped(start: int, end: int, total: int) -> tuple[int, int]:
    """A range's ends as Redis clamps them into ``0..total-1`` (start > end when it selects nothing)."""
    if start < 0:
        start += total
    if end < 0:
        end += total
    return max(start, 0), min(max(end, 0), total - 1)


def _bits(value: bytes, start: int, end: int) -> str:
    """Bits ``start``..``end`` (inclusive) of ``value``, as a string of 0s and 1s."""
    first, last = start >> 3, end >> 3
    text = "".join(format(byte, "08b") for byte in value[first : last + 1])
    return text[start - 8 * first : end - 8 * first + 1]


def _range_args(args: list[bytes], at: int, size: int) -> tuple[int, int, bool] | bytes:
    """``start end [BYTE|BIT]`` from ``args[at]``: (first bit, last bit, end given) or an error reply."""
    start = parse_int64(args[at])
    end = parse_int64(args[at + 1]) if len(args) > at + 1 else None
    if start is None or (len(args) > at + 1 and end is None):
        return NOT_INTEGER
    in_bits = False
    if len(args) > at + 2:
        unit = args[at + 2].upper()
        if unit not in (b"BIT", b"BYTE"):
            return SYNTAX
        in_bits = unit == b"BIT"
    total = size * 8 if in_bits else size
    given = end is not None
    start, last = _clamped(start, total - 1 if end is None else end, total)
    if start > last:
        return 1, 0, given
    if in_bits:
        return start, last, given
    return start * 8, last * 8 + 7, given


@_typed
def _bitcount(store: KeyValueStore, args: list[bytes]) -> Reply:
    value = _of(store, args[1], bytes)
    if value is None:
        return ZERO
    if len(args) == 2:
        return integer(int.from_bytes(value, "big").bit_count())
    if len(args) not in (4, 5):
        return SYNTAX
    start, end = parse_int64(args[2]), parse_int64(args[3])
    if start is None or end is None:
        return NOT_INTEGER
    if start < 0 and end < 0 and start > end:
        return ZERO
    bounds = _range_args(args, 2, len(value))
    if isinstance(bounds, bytes):
        return bounds
    first, last, _ = bounds
    return integer(_bits(value, first, last).count("1") if first <= last else 0)


@_typed
def _bitpos(store: KeyValueStore, args: list[bytes]) -> Reply:
    bit = parse_int64(args[2])
    if bit is None:
        return NOT_INTEGER
    if bit not in (0, 1):
        return error(b"ERR The bit argument must be 1 or 0.")
    value = _of(store, args[1], bytes)
    if value is None:
        return integer(-1 if bit else 0)
    if len(args) > 6:
        return SYNTAX
    if len(args) == 3:
        first, last, given = 0, len(value) * 8 - 1, False
    else:
        bounds = _range_args(args, 3, len(value))
        if isinstance(bounds, bytes):
            return bounds
        first, last, given = bounds
    if first > last:
        return integer(-1)
    found = _bits(value, first, last).find("1" if bit else "0")
    if found >= 0:
        return integer(first + found)
    # No clear bit in range: past the string's end every bit is clear, unless the caller gave the end.
    return integer(last + 1 if bit == 0 and not given else -1)


@_typed
def _bitop(store: KeyValueStore, args: list[bytes]) -> Reply:
    op = args[1].upper()
    if op not in (b"AND", b"OR", b"XOR", b"NOT"):
        return SYNTAX
    if op == b"NOT" and len(args) != 4:
        return error(b"ERR BITOP NOT must be called with a single source key.")
    sources = []
    for key in args[3:]:
        value = store.get(key)
        if value is not None and type(value) is not bytes:
            raise _Wrong
        sources.append(value or b"")
    size = max(len(s) for s in sources)
    if size == 0:
        store.delete(args[2])
        return ZERO
    numbers = [int.from_bytes(s.ljust(size, b"\0"), "big") for s in sources]
    result = numbers[0]
    if op == b"NOT":
        result = ~result & ((1 << (8 * size)) - 1)
    for number in numbers[1:]:
        if op == b"AND":
            result &= number
        elif op == b"OR":
            result |= number
        else:
            result ^= number
    store.set(args[2], result.to_bytes(size, "big"))
    return integer(size)


BITOPS: dict[bytes, Entry] = {
    b"BITCOUNT": (_bitcount, 2, MANY),
    b"BITPOS": (_bitpos, 3, MANY),
    b"BITOP": (_bitop, 4, MANY),
}
"""The bitmap commands, by upper-case name, with their arity (name included)."""
