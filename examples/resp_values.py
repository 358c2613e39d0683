"""What the RESP example's typed commands share: WRONGTYPE, the type checks, numbers as Redis prints them, ranges,
and the value types beyond strings (a ``deque`` list, a ``dict`` hash, a ``set``, and :class:`ZSet`, :class:`Stream`).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from examples.kvstore import KeyValueStore
from examples.resp_commands import (
    Command,
    Reply,
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
    """A sorted set: member -> score (ordered by score, then member, when read)."""

    def ordered(self) -> list[tuple[bytes, float]]:
        return sorted(self.items(), key=lambda item: (item[1], item[0]))


TYPES[ZSet] = b"zset"


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
