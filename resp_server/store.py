"""An in-memory keyspace of byte strings with per-key expiry, the storage behind the RESP example server.

Expiry follows Redis: a key is gone once the clock is past its deadline. Expired keys are removed lazily
when touched and actively by :meth:`KeyValueStore.active_expire`, which samples keys that carry a deadline.
The store does no locking; callers that share it between threads serialise access themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

SAMPLE_SIZE = 20
"""Keys with a deadline examined per active-expiry round (Redis's ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP)."""

MAX_REPLY_ITEMS = 1 << 20
"""The most items a reply the server builds beyond what the keyspace holds may have by default (SRANDMEMBER with a
negative count, LRANGE...): a request of a few bytes cannot make the server build an unbounded reply."""

STALE_PERCENT = 25
"""Another round runs while more than this share of a sample had expired."""


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch, the default clock (absolute deadlines such as EXAT need it)."""
    return time.time_ns() // 1_000_000


class KeyValueStore:
    """Byte-string keys to byte-string values, each optionally carrying an absolute deadline in milliseconds.

    ``clock`` returns the current time in milliseconds; tests pass a fake one to move time without waiting.
    Every read hides keys whose deadline has passed (``now > deadline``) and deletes them on the way.
    ``max_reply_items`` caps the items of one reply that the commands build (see :data:`MAX_REPLY_ITEMS`).
    """

    def __init__(self, clock: Callable[[], int] = wall_clock_ms, *, max_reply_items: int = MAX_REPLY_ITEMS) -> None:
        self.clock = clock
        self.max_reply_items = max_reply_items
        self._data: dict[bytes, Any] = {}  # bytes (a string), or a deque, dict or set (list, hash, set)
        # WATCH: the sessions watching each key; each gets ``watch_dirty`` set when its key is modified.
        self.watchers: dict[bytes, set[Any]] = {}
        # Blocking pops: the sessions waiting on each key, oldest first, and the keys written since they were
        # last retried (resp_server.blocking.serve_blocked).
        self.blocked: dict[bytes, list[Any]] = {}
        self.ready: list[bytes] = []
        # Keyspace notifications (notify-keyspace-events): while on, what each command did to which key, as
        # (b"changed" | b"new" | b"deleted" | b"expired", key), for resp_server.notifications to publish.
        self.notifying = False
        self.events: list[tuple[bytes, bytes]] = []
        self._deadlines: dict[bytes, int] = {}
        # Keys with a deadline, in a list so active expiry can walk them in O(1) per key without copying.
        self._volatile: list[bytes] = []
        self._slot: dict[bytes, int] = {}
        self._cursor = 0

    def __len__(self) -> int:
        """Number of keys held, counting expired keys not yet removed (what Redis's DBSIZE reports)."""
        return len(self._data)

    def get(self, key: bytes) -> Any:
        """The live value of ``key``, or None if it is missing or expired."""
        if self._deadlines and key in self._deadlines and self.clock() > self._deadlines[key]:
            self._remove(key)
            if self.notifying:
                self.events.append((b"expired", key))
            if self.watchers:
                self.modified(key)  # an expired watched key counts as touched, as in Redis
            return None
        return self._data.get(key)

    def exists(self, key: bytes) -> bool:
        """Whether ``key`` holds a live value."""
        return self.get(key) is not None

    def set(self, key: bytes, value: Any, deadline: int | None = None, keep_ttl: bool = False) -> None:
        """Store ``value``; the key gets ``deadline`` if given, else keeps its deadline only if ``keep_ttl``."""
        if self.notifying and key not in self._data:
            self.events.append((b"new", key))
        self._data[key] = value
        if self.watchers or self.blocked or self.notifying:
            self.modified(key)
        if deadline is not None:
            self.set_deadline(key, deadline)
        elif self._deadlines and key in self._deadlines and not (keep_ttl and self.clock() <= self._deadlines[key]):
            # An expired key counts as absent, so its old deadline must not carry over to the new value.
            self._forget_deadline(key)

    def put_quietly(self, key: bytes, value: Any) -> None:
        """Store ``value`` under a live or absent ``key`` (its deadline kept) without telling watchers or sending an
        event: how Redis's bit commands create or zero-extend a string before writes that may all fail."""
        self._data[key] = value

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if a live value was removed."""
        if not self.exists(key):
            return False
        self._remove(key)
        if self.notifying:
            self.events.append((b"deleted", key))
        if self.watchers:
            self.modified(key)
        elif key in self.blocked and key not in self.ready:  # a blocked XREADGROUP learns its stream is gone
            self.ready.append(key)
        return True

    def volatile_count(self) -> int:
        """Keys that carry a deadline (INFO keyspace's ``expires``)."""
        return len(self._deadlines)

    def container(self, key: bytes, kind: type) -> Any:
        """The ``kind`` value at ``key``, for a write command to change in place: a new empty one, stored (as
        :meth:`set` stores), when the key is missing; None when the key holds another type. The caller reports
        what it changed with :meth:`modified`: Redis's SADD or ZADD that changes nothing touches nothing."""
        value = self.get(key) if self._deadlines else self._data.get(key)  # no deadline, nothing to expire
        if value is None:
            value = kind()
            self.set(key, value)
        elif type(value) is not kind:
            return None
        return value

    def modified(self, key: bytes) -> None:
        """``key``'s value changed (a container changed in place calls this too): its watchers' EXEC will fail."""
        watching = self.watchers.get(key)
        if watching:
            for session in watching:
                session.watch_dirty = True
        if key in self.blocked and key not in self.ready:
            self.ready.append(key)
        if self.notifying:
            self.events.append((b"changed", key))

    def persist(self, key: bytes) -> bool:
        """Remove ``key``'s deadline; True if it had one."""
        if not self.exists(key) or key not in self._deadlines:
            return False
        self._forget_deadline(key)
        if self.watchers or self.notifying:
            self.modified(key)
        return True

    def deadline(self, key: bytes) -> int | None:
        """The deadline (ms) of ``key``, or None when it has none or is missing or expired."""
        return self._deadlines.get(key) if self.exists(key) else None

    def set_deadline(self, key: bytes, deadline: int) -> None:
        """Give an existing ``key`` the absolute ``deadline`` in milliseconds."""
        if key not in self._deadlines:
            self._slot[key] = len(self._volatile)
            self._volatile.append(key)
        self._deadlines[key] = deadline
        if self.watchers or self.notifying:
            self.modified(key)

    def keys(self) -> list[bytes]:
        """The live keys, removing expired ones met on the way."""
        now = self.clock()
        for key in [key for key, when in self._deadlines.items() if now > when]:
            self._remove(key)
        return list(self._data)

    def clear(self) -> None:
        """Remove every key."""
        for key in list(self.watchers):
            if key in self._data:
                self.modified(key)
        self.ready += [key for key in self.blocked if key in self._data and key not in self.ready]
        self._data.clear()
        self._deadlines.clear()
        self._volatile.clear()
        self._slot.clear()
        self._cursor = 0

    def active_expire(self, budget: float = 0.001) -> int:
        """Delete expired keys by sampling, as Redis's active expiry cycle does; return how many were deleted.

        Each round examines up to ``SAMPLE_SIZE`` keys that carry a deadline, continuing from where the
        previous round stopped, and deletes the expired ones. Rounds repeat while more than
        ``STALE_PERCENT`` percent of a sample had expired and ``budget`` seconds of real time are left.
        """
        give_up = time.perf_counter() + budget
        now = self.clock()
        deleted = 0
        while self._volatile:
            sampled, expired = self._expire_round(now)
            deleted += expired
            if expired * 100 <= sampled * STALE_PERCENT or time.perf_counter() >= give_up:
                break
        return deleted

    def _expire_round(self, now: int) -> tuple[int, int]:
        volatile = self._volatile
        deadlines = self._deadlines
        sampled = expired = 0
        i = self._cursor
        while sampled < SAMPLE_SIZE and volatile:
            if i >= len(volatile):
                i = 0
            key = volatile[i]
            sampled += 1
            if now > deadlines[key]:
                # The last key moves into slot i, so i is examined again rather than advanced.
                self._remove(key)
                if self.notifying:
                    self.events.append((b"expired", key))
                if self.watchers:
                    self.modified(key)
                expired += 1
            else:
                i += 1
        self._cursor = i
        return sampled, expired

    def _remove(self, key: bytes) -> None:
        del self._data[key]
        if key in self._deadlines:
            self._forget_deadline(key)

    def _forget_deadline(self, key: bytes) -> None:
        del self._deadlines[key]
        i = self._slot.pop(key)
        last = self._volatile.pop()
        if i < len(self._volatile):
            self._volatile[i] = last
            self._slot[last] = i


def glob_match(pattern: bytes, string: bytes) -> bool:
    """Whether ``string`` matches the Redis glob ``pattern`` (``*``, ``?``, ``[abc]``, ``[^a-z]``, ``\\x``).

    This reproduces Redis's ``stringmatchlen`` byte for byte, including its corner cases: an unterminated
    ``[set`` ends at the end of the pattern, a reversed range ``[z-a]`` means ``[a-z]``, and an empty string
    matches only the empty pattern.
    """
    if not string:
        return not pattern
    plen = len(pattern)
    slen = len(string)
    p = s = 0
    # Where to resume after the most recent '*': trying ever longer matches for it is the only backtracking
    # needed, since every other element consumes exactly one byte.
    star_p = -1
    star_s = 0
    while s < slen:
        if p < plen:
            c = pattern[p]
            if c == 42:  # '*'
                while p < plen and pattern[p] == 42:
                    p += 1
                if p == plen:
                    return True
                star_p, star_s = p, s
                continue
            after = _match_one(pattern, p, string[s])
            if after >= 0:
                p = after
                s += 1
                continue
        if star_p < 0:
            return False
        star_s += 1
        p, s = star_p, star_s
    while p < plen and pattern[p] == 42:
        p += 1
    return p == plen


def _match_one(pattern: bytes, p: int, ch: int) -> int:
    """Match the single-byte element at ``pattern[p]`` against ``ch``: the index after it, or -1."""
    plen = len(pattern)
    c = pattern[p]
    if c == 63:  # '?'
        return p + 1
    if c == 91:  # '['
        p += 1
        negate = p < plen and pattern[p] == 94  # '^'
        if negate:
            p += 1
        matched = False
        while True:
            if p + 1 < plen and pattern[p] == 92:  # '\\' escapes the next byte
                p += 1
                matched = matched or pattern[p] == ch
            elif p < plen and pattern[p] == 93:  # ']'
                break
            elif p >= plen:
                # Unterminated set: Redis treats the end of the pattern as its close.
                p -= 1
                break
            elif p + 2 < plen and pattern[p + 1] == 45:  # '-' makes a range
                low, high = pattern[p], pattern[p + 2]
                if low > high:
                    low, high = high, low
                matched = matched or low <= ch <= high
                p += 2
            else:
                matched = matched or pattern[p] == ch
            p += 1
        return p + 1 if matched != negate else -1
    if c == 92 and p + 1 < plen:  # '\\' makes the next byte literal
        p += 1
    return p + 1 if pattern[p] == ch else -1
