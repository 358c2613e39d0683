"""Strings as bitmaps: BITCOUNT and BITPOS (byte or bit ranges), BITOP and BITFIELD, with Redis 7.0's range rules
(a range is clamped into the string, a negative end counts from its end) and errors."""

from __future__ import annotations

from resp_server.replies import MANY, Encoder, Entry, Reply, error, parse_int64, per_protocol
from resp_server.store import KeyValueStore
from resp_server.values import NOT_INTEGER, SYNTAX, ZERO, _of, _typed, _Wrong, integer


def _clamped(start: int, end: int, total: int) -> tuple[int, int]:
    """A range's ends as Redis clamps them into ``0..total-1`` (start > end when it selects nothing)."""
    if start < 0:
        start += total
    if end < 0:
        end += total
    return max(start, 0), min(max(end, 0), total - 1)


def _segment(value: bytes, start: int, end: int) -> int:
    """Bits ``start``..``end`` (inclusive) of ``value`` as an integer of ``end - start + 1`` bits."""
    number = int.from_bytes(value[start >> 3 : (end >> 3) + 1], "big") >> (7 - (end & 7))
    return number & ((1 << (end - start + 1)) - 1)


def _first(number: int, width: int) -> int:
    """The position of the highest set bit of a ``width``-bit number counted from its top, -1 when none is set."""
    return width - number.bit_length() if number else -1


def _range_args(args: list[bytes], at: int, size: int, unit_first: bool = False) -> tuple[int, int, bool] | bytes:
    """``start end [BYTE|BIT]`` from ``args[at]``: (first bit, last bit, end given) or an error reply. Redis checks
    the start, then the end, then the unit; BITPOS (``unit_first``) the unit before the end."""
    start = parse_int64(args[at])
    if start is None:
        return NOT_INTEGER
    unit = args[at + 2].upper() if len(args) > at + 2 else b"BYTE"
    if unit_first and unit not in (b"BIT", b"BYTE"):
        return SYNTAX
    end = parse_int64(args[at + 1]) if len(args) > at + 1 else None
    if len(args) > at + 1 and end is None:
        return NOT_INTEGER
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
    return integer(_segment(value, first, last).bit_count() if first <= last else 0)


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
        bounds = _range_args(args, 3, len(value), unit_first=True)
        if isinstance(bounds, bytes):
            return bounds
        first, last, given = bounds
    if first > last:
        return integer(-1)
    width = last - first + 1
    number = _segment(value, first, last)
    found = _first(number if bit else ~number & ((1 << width) - 1), width)
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


_BAD_TYPE = error(b"ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.")
_BAD_OFFSET = error(b"ERR bit offset is not an integer or out of range")
_MAX_BITS = 512 * 1024 * 1024 * 8


def _field(kind: bytes, where: bytes) -> tuple[bool, int, int] | bytes:
    """A BITFIELD type (``i8``, ``u16``...) and offset (``#n`` counts in fields): (signed, bits, offset)."""
    bits = parse_int64(kind[1:]) if kind[:1] in (b"i", b"I", b"u", b"U") else None
    signed = kind[:1] in (b"i", b"I")
    if bits is None or not 1 <= bits <= (64 if signed else 63):
        return _BAD_TYPE
    offset = parse_int64(where[1:] if where.startswith(b"#") else where)
    if offset is None or offset < 0:
        return _BAD_OFFSET
    if where.startswith(b"#"):
        offset *= bits
    if offset >= _MAX_BITS:
        return _BAD_OFFSET
    return signed, bits, offset


def _fit(value: int, signed: bool, bits: int, overflow: bytes) -> int | None:
    """``value`` in a field of ``bits``: wrapped, saturated, or None (FAIL) when it does not fit."""
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if low <= value <= high:
        return value
    if overflow == b"FAIL":
        return None
    if overflow == b"SAT":
        return high if value > high else low
    value &= (1 << bits) - 1
    return value - (1 << bits) if signed and value > high else value


def _bitfield_ops(args: list[bytes]) -> list[tuple[bytes, bool, int, int, int, bytes]] | bytes:
    ops = []
    overflow = b"WRAP"
    i = 2
    while i < len(args):
        op, left = args[i].upper(), len(args) - i - 1
        if op == b"OVERFLOW" and left >= 1:
            overflow = args[i + 1].upper()
            if overflow not in (b"WRAP", b"SAT", b"FAIL"):
                return error(b"ERR Invalid OVERFLOW type specified")
            i += 2
            continue
        if not ((op == b"GET" and left >= 2) or (op in (b"SET", b"INCRBY") and left >= 3)):
            return SYNTAX
        field = _field(args[i + 1], args[i + 2])
        if isinstance(field, bytes):
            return field
        number = 0
        if op != b"GET":
            parsed = parse_int64(args[i + 3])
            if parsed is None:
                return NOT_INTEGER
            number = parsed
        ops.append((op, *field, number, overflow))
        i += 3 if op == b"GET" else 4
    return ops


@per_protocol
@_typed
def _bitfield(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    ops = _bitfield_ops(args)
    if isinstance(ops, bytes):
        return ops
    writes = any(op != b"GET" for op, *_ in ops)
    if writes and args[0].upper() == b"BITFIELD_RO":
        return error(b"ERR BITFIELD_RO only supports the GET subcommand")
    value = _of(store, args[1], bytes)
    data = bytearray(value or b"")
    if writes:
        end = max((offset + bits + 7) // 8 for op, _, bits, offset, *_ in ops if op != b"GET")
        data.extend(bytes(max(0, end - len(data))))
    results: list[bytes] = []
    changes = 0
    for op, signed, bits, offset, number, overflow in ops:
        padded = bytes(data) + bytes((offset + bits + 7) // 8)
        raw = _segment(padded, offset, offset + bits - 1)
        old = raw - (1 << bits) if signed and raw >> (bits - 1) else raw
        if op == b"GET":
            results.append(integer(old))
            continue
        # Redis sets an unsigned field from the number as a uint64: a negative one is huge (SAT makes it the maximum).
        new = _fit(old + number if op == b"INCRBY" else number if signed else number % 2**64, signed, bits, overflow)
        if op == b"SET" and signed and overflow == b"SAT" and bits < 64 and number < (1 << (bits - 1)) - 2**63:
            new = (1 << (bits - 1)) - 1  # Redis checks a SET by max - value in an int64, which wraps: "too large"
        if new is None:
            results.append(encoder.nil)
            continue
        _write_field(data, offset, bits, new)
        changes += 1
        results.append(integer(old if op == b"SET" else new))
    if writes and (value is None or bytes(data) != value):
        # Redis creates or zero-extends the string first; only a write that succeeded touches watchers and notifies.
        if changes:
            store.set(args[1], bytes(data), keep_ttl=True)
        else:
            store.put_quietly(args[1], bytes(data))
    return b"*%d\r\n%b" % (len(results), b"".join(results))


def _write_field(data: bytearray, offset: int, bits: int, value: int) -> None:
    first, last = offset >> 3, (offset + bits - 1) >> 3
    shift = 7 - ((offset + bits - 1) & 7)
    window = int.from_bytes(data[first : last + 1], "big")
    mask = ((1 << bits) - 1) << shift
    window = (window & ~mask) | ((value & ((1 << bits) - 1)) << shift)
    data[first : last + 1] = window.to_bytes(last - first + 1, "big")


BITOPS: dict[bytes, Entry] = {
    b"BITCOUNT": (_bitcount, 2, MANY),
    b"BITPOS": (_bitpos, 3, MANY),
    b"BITOP": (_bitop, 4, MANY),
    b"BITFIELD": (_bitfield, 2, MANY),
    b"BITFIELD_RO": (_bitfield, 2, MANY),
}
"""The bitmap commands, by upper-case name, with their arity (name included)."""
