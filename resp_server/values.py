"""What the RESP example's typed commands share: WRONGTYPE, the type checks, numbers as Redis prints them, ranges,
and the value types beyond strings (a ``deque`` list, a ``dict`` hash, a ``set``, and :class:`ZSet`, :class:`Stream`).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import re
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any, ParamSpec

from resp_server.replies import (
    INT64_MAX,
    Reply,
    error,
    parse_int64,
    reply_too_long,
)
from resp_server.store import KeyValueStore

WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"
NOT_FLOAT = b"-ERR value is not a valid float\r\n"
SYNTAX = b"-ERR syntax error\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"
EMPTY = b"*0\r\n"
NO_SUCH_KEY = b"-ERR no such key\r\n"
MAX_STRING = 512 * 1024 * 1024
P = ParamSpec("P")
TYPES: dict[type, bytes] = {bytes: b"string", deque: b"list", dict: b"hash", set: b"set"}


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


def _typed(fn: Callable[P, Reply]) -> Callable[P, Reply]:
    """``fn`` answering WRONGTYPE where it meets a key of another type (:func:`_of` raises _Wrong)."""

    def run(*args: P.args, **kwargs: P.kwargs) -> Reply:
        try:
            return fn(*args, **kwargs)
        except _Wrong:
            return WRONGTYPE

    run.__name__ = fn.__name__
    return run


def format_float(value: float) -> bytes:
    """A double as Redis prints it for INCRBYFLOAT (``%.17Lg``, trailing zeros trimmed)."""
    if value == int(value) and abs(value) < 1e17:
        return b"%d" % int(value)
    text = b"%.17g" % value
    if text.find(b"e") == -1 and text.find(b".") != -1:  # not ``in``: bytes ``in`` raises a TypeError first
        text = text.rstrip(b"0").rstrip(b".")
    return text


# strtold's decimal and hexadecimal syntax ("nan" aside, which INCRBYFLOAT never keeps), and its infinities.
_DECIMAL = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INFINITY = re.compile(rb"[+-]?inf(?:inity)?", re.IGNORECASE)
_HEX = re.compile(rb"([+-]?)0x([0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p([+-]?[0-9]+))?", re.IGNORECASE)
_LD_DIGITS = 64  # the x87 long double's significand: the precision of Redis's INCRBYFLOAT on x86-64
_LD_MAX_EXP = 16384


def _round_long_double(value: Fraction) -> Fraction | float:
    """``value`` rounded to the nearest long double (ties to even); an infinity when it overflows."""
    if value == 0:
        return value
    sign = -1 if value < 0 else 1
    value = abs(value)
    exp = value.numerator.bit_length() - value.denominator.bit_length()
    if Fraction(2) ** exp > value:
        exp -= 1
    if exp >= _LD_MAX_EXP:
        return sign * math.inf
    scale = Fraction(2) ** (_LD_DIGITS - 1 - exp)
    scaled = value * scale
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest > scaled.denominator or (2 * rest == scaled.denominator and whole % 2):
        whole += 1
    rounded = Fraction(whole) / scale
    return sign * math.inf if rounded >= Fraction(2) ** _LD_MAX_EXP else sign * rounded


def parse_long_double(text: bytes) -> Fraction | float | None:
    """``text`` as Redis's ``string2ld`` reads it (``strtold``, all of it, no leading space, no NaN, no overflow), or
    None."""
    if not text or len(text) >= 5 * 1024 or text[:1].isspace():
        return None
    if _INFINITY.fullmatch(text):
        return -math.inf if text[:1] == b"-" else math.inf
    hexadecimal = _HEX.fullmatch(text)
    if hexadecimal is not None:
        digits = hexadecimal[2].replace(b".", b"")
        fraction = len(hexadecimal[2]) - 1 - hexadecimal[2].index(b".") if b"." in hexadecimal[2] else 0
        exact = Fraction(int(digits, 16), 16**fraction) * Fraction(2) ** int(hexadecimal[3] or b"0")
        exact = -exact if hexadecimal[1] == b"-" else exact
    elif _DECIMAL.fullmatch(text):
        exact = Fraction(text.decode())
    else:
        return None
    value = _round_long_double(exact)
    if isinstance(value, float) or (value == 0 and exact != 0):
        return None  # strtold's ERANGE: Redis refuses an overflow and an underflow to zero
    return value


def format_long_double(value: Fraction) -> bytes:
    """``value`` as Redis's ``ld2string`` prints it for INCRBYFLOAT (``%.17Lf``, trailing zeros trimmed)."""
    scaled = abs(value) * 10**17
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest > scaled.denominator or (2 * rest == scaled.denominator and whole % 2):
        whole += 1
    digits = b"%018d" % whole
    text = (digits[:-17] + b"." + digits[-17:]).rstrip(b"0").rstrip(b".")
    return text if value >= 0 or text == b"0" else b"-" + text


def add_long_double(old: bytes, by: bytes, *, old_error: bytes = b"value is not a valid float") -> bytes | Exception:
    """INCRBYFLOAT's and HINCRBYFLOAT's sum of ``old`` and ``by`` as Redis 7.0 computes and prints it (in long
    double precision), or the error to reply (an Exception holding its text)."""
    base = parse_long_double(old)
    if base is None:
        return ValueError("ERR " + old_error.decode())
    increment = parse_long_double(by)
    if increment is None:
        return ValueError("ERR value is not a valid float")
    if isinstance(base, float) or isinstance(increment, float):
        return ValueError("ERR increment would produce NaN or Infinity")
    result = _round_long_double(base + increment)
    if isinstance(result, float):
        return ValueError("ERR increment would produce NaN or Infinity")
    return format_long_double(result)


# C's strtod syntax (glibc): leading space, a sign, then a hexadecimal or decimal number, an infinity or a NaN.
_STRTOD = re.compile(
    rb"[ \t\n\v\f\r]*([+-]?)(?:(0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?[0-9]+)?)"
    rb"|((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)|(inf(?:inity)?)|(nan(?:\([0-9a-z_]*\))?))",
    re.IGNORECASE,
)


def strtod(text: bytes) -> tuple[float, int, bool]:
    """C's ``strtod`` on ``text``: the value, how many bytes it read (0 where it read no number) and whether it set
    ERANGE (an overflow to infinity or an underflow to zero or a denormal)."""
    match = _STRTOD.match(text)
    if match is None:
        return 0.0, 0, False
    sign, hexadecimal, decimal, infinity, _ = match.groups()
    negative = sign == b"-"
    if infinity is not None or (hexadecimal is None and decimal is None):
        value = math.inf if infinity is not None else math.nan
        return (-value if negative else value), match.end(), False
    try:
        value = float.fromhex(hexadecimal.decode()) if hexadecimal is not None else float(decimal)
    except OverflowError:
        value = math.inf
    mantissa = (hexadecimal or decimal).lower().lstrip(b"0x").split(b"p" if hexadecimal else b"e")[0]
    erange = (
        math.isinf(value) or (0 < abs(value) < 2.2250738585072014e-308) or (value == 0 and mantissa.strip(b"0.") != b"")
    )
    return (-value if negative else value), match.end(), erange


def parse_float(text: bytes) -> float | None:
    """``text`` as Redis's ``string2d`` reads a double (ZADD's scores, WEIGHTS): all of it a number, no leading
    space, no NaN, no overflow or underflow to zero; None otherwise."""
    if text.isdigit() and len(text) < 300:  # a plain integer (what clients send most) reads the same, and sooner
        return float(text)
    if not text or text[:1] in b" \t\n\v\f\r":
        return None
    value, end, erange = strtod(text)
    if end != len(text) or math.isnan(value) or (erange and (math.isinf(value) or value == 0)):
        return None
    return value


def parse_range_float(text: bytes) -> float | None:
    """A score range's bound as Redis's ``zslParseRange`` reads it: ``strtod`` up to the first NUL, the rest all
    read (so the empty string is 0, and an overflow an infinity), and no NaN; None otherwise."""
    text = text.split(b"\0", 1)[0]
    value, end, _ = strtod(text)
    return None if end != len(text) or math.isnan(value) else value


def parse_sort_float(text: bytes) -> float | None:
    """An item as SORT reads it for its score: ``strtod`` up to the first NUL, all of it read (so the empty string is
    0), no ERANGE, no NaN; None where Redis refuses the sort."""
    text = text.split(b"\0", 1)[0]
    value, end, erange = strtod(text)
    return None if end != len(text) or erange or math.isnan(value) else value


def parse_cursor(text: bytes) -> int | None:
    """A SCAN cursor as Redis reads it (``strtoul`` up to the first NUL: a sign allowed, ``-1`` the largest cursor,
    the empty string 0), or None where Redis answers "invalid cursor"."""
    text = text.split(b"\0", 1)[0]
    digits = text[1:] if text[:1] in (b"+", b"-") else text
    if not text:
        return 0
    if not digits.isdigit() or int(digits) >= 2**64:
        return None
    return -int(digits) % 2**64 if text[:1] == b"-" else int(digits)


def _range(start: int, end: int, size: int) -> tuple[int, int]:
    if start < 0:
        start = max(size + start, 0)
    if end < 0:
        end = size + end
    return start, min(end, size - 1)


def _kept(store: KeyValueStore, key: bytes, container: Any) -> None:
    """A container changed in place: deleted when empty (as Redis does), else marked modified."""
    if not container:
        store.delete(key)
    else:
        store.modified(key)


def _pop_entries(store: KeyValueStore, key: bytes, kind: type, names: list[bytes]) -> int:
    """HDEL, ZREM: remove ``names`` from the mapping of ``kind`` at ``key``; how many were there (_Wrong otherwise)."""
    entries = _of(store, key, kind)
    if entries is None:
        return 0
    removed = sum(entries.pop(name, None) is not None for name in names)
    if removed:
        _kept(store, key, entries)
    return removed


class ZSet(dict):  # type: ignore[type-arg]
    """A sorted set: member -> score, ordered by score, then member, when read. The order is kept until the next
    change, so reads in a row (ranges, ranks, pops) sort once."""

    _order: list[tuple[bytes, float]] | None = None

    def ordered(self) -> list[tuple[bytes, float]]:
        """``(member, score)`` pairs in the set's order; the caller must not change the list."""
        if self._order is None:
            self._order = sorted(self.items(), key=_by_score)
        return self._order

    def __setitem__(self, member: bytes, score: float) -> None:
        self._order = None
        # + 0.0 makes -0 a 0: Redis's small sorted sets (listpacks) keep "-0" as the integer 0. Not super(): ZADD's
        # every write comes here.
        dict.__setitem__(self, member, score + 0.0)

    def __delitem__(self, member: bytes) -> None:
        self._order = None
        super().__delitem__(member)

    def pop(self, member: bytes, *default: Any) -> Any:
        self._order = None
        return super().pop(member, *default)

    def clear(self) -> None:
        self._order = None
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._order = None
        super().update(*args, **kwargs)


def _by_score(item: tuple[bytes, float]) -> tuple[float, bytes]:
    return item[1], item[0]


TYPES[ZSet] = b"zset"


StreamId = tuple[int, int]
"""A stream entry's id: (milliseconds, sequence)."""


class PendingEntry:
    """An entry delivered to a consumer of a group and not acknowledged yet (a NACK in Redis's words): who holds it,
    when it was last delivered (ms) and how many times."""

    __slots__ = ("consumer", "count", "delivered")

    def __init__(self, consumer: Consumer | None, delivered: int, count: int = 1) -> None:
        self.consumer = consumer
        self.delivered = delivered
        self.count = count


class Consumer:
    """A consumer of a group: when it was last seen (ms) and the entries it holds, by id (shared with its group's)."""

    __slots__ = ("name", "pending", "seen")

    def __init__(self, name: bytes, seen: int) -> None:
        self.name = name
        self.seen = seen
        self.pending: dict[StreamId, PendingEntry] = {}


NO_ENTRIES_READ = -1
"""A group's ``entries_read`` when it is not known (Redis's SCG_INVALID_ENTRIES_READ)."""


class ConsumerGroup:
    """A consumer group: the last id delivered, the logical count of entries read (or NO_ENTRIES_READ), the
    pending entries of all its consumers by id, and its consumers by name."""

    __slots__ = ("consumers", "entries_read", "last", "pending")

    def __init__(self, last: StreamId, entries_read: int = NO_ENTRIES_READ) -> None:
        self.last = last
        self.entries_read = entries_read
        self.pending: dict[StreamId, PendingEntry] = {}
        self.consumers: dict[bytes, Consumer] = {}

    def copy(self) -> ConsumerGroup:
        other = ConsumerGroup(self.last, self.entries_read)
        for name, consumer in self.consumers.items():
            twin = other.consumers[name] = Consumer(name, consumer.seen)
            for entry_id, entry in consumer.pending.items():
                twin.pending[entry_id] = other.pending[entry_id] = PendingEntry(twin, entry.delivered, entry.count)
        return other


class Stream:
    """A stream: entries by id, their ids in order (to seek by bisection, as Redis seeks its radix tree), and
    consumer groups by name. Entries change only through :meth:`append`, :meth:`delete` and :meth:`trim`."""

    def __init__(self) -> None:
        self.entries: dict[StreamId, list[bytes]] = {}
        self.ids: list[StreamId] = []
        self.last = (0, 0)
        self.added = 0  # entries ever added (XINFO's entries-added)
        self.max_deleted = (0, 0)  # the highest id XDEL removed (XINFO's max-deleted-entry-id)
        self.groups: dict[bytes, ConsumerGroup] = {}

    def copy(self) -> Stream:
        other = Stream()
        other.entries = {k: list(v) for k, v in self.entries.items()}
        other.ids = list(self.ids)
        other.last = self.last
        other.added = self.added
        other.max_deleted = self.max_deleted
        other.groups = {name: group.copy() for name, group in self.groups.items()}
        return other

    def append(self, entry_id: StreamId, fields: list[bytes]) -> None:
        """Add an entry whose id is greater than every other's."""
        self.entries[entry_id] = fields
        self.ids.append(entry_id)

    def delete(self, entry_id: StreamId) -> bool:
        """Remove an entry; True if it was there."""
        if self.entries.pop(entry_id, None) is None:
            return False
        del self.ids[bisect.bisect_left(self.ids, entry_id)]
        return True

    def trim(self, count: int) -> None:
        """Remove the first ``count`` entries."""
        for entry_id in self.ids[:count]:
            del self.entries[entry_id]
        del self.ids[:count]

    def between(self, first: StreamId, last: StreamId) -> list[StreamId]:
        """The ids from ``first`` to ``last`` (both included), in order."""
        return self.ids[bisect.bisect_left(self.ids, first) : bisect.bisect_right(self.ids, last)]

    def since(self, start: StreamId) -> Iterator[tuple[StreamId, list[bytes]]]:
        """The entries from ``start`` on, in id order."""
        entries = self.entries
        for entry_id in itertools.islice(self.ids, bisect.bisect_left(self.ids, start), None):
            yield entry_id, entries[entry_id]

    def first(self) -> StreamId:
        """The first entry's id, (0, 0) when empty (Redis's ``first_id``)."""
        return self.ids[0] if self.ids else (0, 0)

    def newest(self) -> StreamId | None:
        """The last entry's id, None when empty (Redis's ``streamLastValidID``)."""
        return self.ids[-1] if self.ids else None

    def __len__(self) -> int:
        return len(self.entries)


TYPES[Stream] = b"stream"


def random_pick(
    store: KeyValueStore, args: list[bytes], kind: type, flag: bytes
) -> Reply | tuple[list[tuple[Any, Any]], bool]:
    """The count forms of HRANDFIELD and ZRANDMEMBER (``key count [flag]``), checked as Redis checks them.

    Returns the reply at once for an error or nothing to pick; else the picked (member, value) pairs, distinct for a
    positive count and with repeats for a negative one, and whether ``flag`` (WITHVALUES, WITHSCORES) was given.
    """
    count = parse_int64(args[2])
    if count is None:
        return NOT_INTEGER
    if count < -INT64_MAX:
        return error(b"ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")
    if len(args) > 4 or (len(args) == 4 and args[3].upper() != flag):
        return SYNTAX
    with_flag = len(args) == 4
    if with_flag and not -INT64_MAX // 2 <= count <= INT64_MAX // 2:
        return error(b"ERR value is out of range")
    container = _of(store, args[1], kind)
    if container is None or count == 0:
        return EMPTY
    if -count > store.max_reply_items:
        return reply_too_long(store)
    pairs = list(container.items())
    picked = random.sample(pairs, min(count, len(pairs))) if count > 0 else random.choices(pairs, k=-count)
    return picked, with_flag
