"""Blocking pops: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP.

XREAD and XREADGROUP with BLOCK wait the same way (resp_server.stream_reads.read_streams).

Each command parses into a :class:`Blocker`: its keys, its deadline and an ``attempt`` that pops if it can. A
session runs the attempt at once; when there is nothing to pop (and the session is not in MULTI, where a blocking
command answers a null at once, as in Redis) the session waits: it is listed under its keys in
``store.blocked``, a write to one of them lists the key in ``store.ready``, and :func:`serve_blocked` retries the
waiting sessions in the order they came, after the command that wrote. The ticker answers a null to those whose
timeout passed. Replies and errors are Redis 7.0's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from resp_server.container_ops import lmpop_from, parse_lmpop
from resp_server.notifications import publish_events
from resp_server.replies import MANY, Encoder, Reply, array, bulk, error, join_replies
from resp_server.store import KeyValueStore
from resp_server.stream_reads import read_streams
from resp_server.values import SYNTAX, WRONGTYPE, ZSet, _kept, _Wrong
from resp_server.zset_ops import mpop_reply, parse_mpop

if TYPE_CHECKING:
    from resp_server.session import RespSession

Attempt = Callable[[bool], "Reply | None"]
"""Pop if something is there: the reply, or None. With ``True`` a key of another type raises ``_Wrong`` (the
first try); a retry passes ``False`` and skips such keys, as Redis keeps a client waiting then."""


class Blocker:
    """A blocking command waiting: its keys, the absolute deadline in ms (None: forever) and its attempt; and its
    name, that the keyspace events of a later attempt carry."""

    __slots__ = ("attempt", "command", "deadline", "keys")

    def __init__(self, keys: list[bytes], deadline: int | None, attempt: Attempt) -> None:
        self.keys = keys
        self.deadline = deadline
        self.attempt = attempt
        self.command = b""


def _deadline(store: KeyValueStore, text: bytes) -> int | bytes | None:
    """A timeout in seconds (a float; 0 is forever) as an absolute deadline in ms, or Redis's error reply."""
    try:
        seconds = Decimal(text.decode("ascii"))
    except (InvalidOperation, UnicodeDecodeError, ValueError):
        return error(b"ERR timeout is not a float or out of range")
    if not seconds.is_finite():
        return error(b"ERR timeout is not a float or out of range")
    ms = int(seconds * 1000)
    if ms < 0:
        return error(b"ERR timeout is negative")
    if ms >= 2**63 - store.clock():
        return error(b"ERR timeout is out of range")
    return store.clock() + ms if ms else None


def _of_kind(store: KeyValueStore, key: bytes, kind: type, strict: bool) -> Any:
    value = store.get(key)
    if value is None or type(value) is kind:
        return value
    if strict:
        raise _Wrong
    return None


def _pop_list(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Blocker | bytes:
    deadline = _deadline(store, args[-1])
    if isinstance(deadline, bytes):
        return deadline
    keys, left = args[1:-1], args[0].upper() == b"BLPOP"

    def attempt(strict: bool) -> Reply | None:
        for key in keys:
            items = _of_kind(store, key, deque, strict)
            if items:
                value = items.popleft() if left else items.pop()
                _kept(store, key, items)
                return array([key, value])
        return None

    return Blocker(keys, deadline, attempt)


def _move(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Blocker | bytes:
    if args[0].upper() == b"BRPOPLPUSH":
        left_from, left_to = False, True
    else:
        sides = [args[3].upper(), args[4].upper()]
        if any(side not in (b"LEFT", b"RIGHT") for side in sides):
            return SYNTAX
        left_from, left_to = sides[0] == b"LEFT", sides[1] == b"LEFT"
    deadline = _deadline(store, args[-1])
    if isinstance(deadline, bytes):
        return deadline
    source, target = args[1], args[2]

    def attempt(strict: bool) -> Reply | None:
        items = _of_kind(store, source, deque, strict)
        if not items:
            return None
        dest = _of_kind(store, target, deque, True)
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

    return Blocker([source], deadline, attempt)


def _lmpop(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Blocker | bytes:
    parsed = parse_lmpop(args, 2)
    if isinstance(parsed, bytes):
        return parsed
    deadline = _deadline(store, args[1])
    if isinstance(deadline, bytes):
        return deadline
    keys, left, count = parsed

    def attempt(strict: bool) -> Reply | None:
        if strict:
            return lmpop_from(encoder, store, keys, left, count)
        lists = [key for key in keys if type(store.get(key)) is deque]
        return lmpop_from(encoder, store, lists, left, count)

    return Blocker(keys, deadline, attempt)


def _first_zset(store: KeyValueStore, keys: list[bytes], strict: bool) -> tuple[bytes, ZSet] | None:
    for key in keys:
        zset = _of_kind(store, key, ZSet, strict)
        if zset:
            return key, zset
    return None


def _zpop(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Blocker | bytes:
    deadline = _deadline(store, args[-1])
    if isinstance(deadline, bytes):
        return deadline
    keys, highest = args[1:-1], args[0].upper() == b"BZPOPMAX"

    def attempt(strict: bool) -> Reply | None:
        found = _first_zset(store, keys, strict)
        if found is None:
            return None
        key, zset = found
        member, score = zset.ordered()[-1 if highest else 0]
        zset.pop(member)
        _kept(store, key, zset)
        return join_replies([b"*3\r\n", bulk(key), bulk(member), encoder.double(score)])

    return Blocker(keys, deadline, attempt)


def _zmpop(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Blocker | bytes:
    parsed = parse_mpop(args, 2)
    if isinstance(parsed, bytes):
        return parsed
    deadline = _deadline(store, args[1])
    if isinstance(deadline, bytes):
        return deadline
    keys, highest, count = parsed

    def attempt(strict: bool) -> Reply | None:
        found = _first_zset(store, keys, strict)
        if found is None:
            return None
        key, zset = found
        ordered = zset.ordered()
        taken = list(ordered[::-1][:count] if highest else ordered[:count])
        for member, _ in taken:
            zset.pop(member)
        _kept(store, key, zset)
        return mpop_reply(encoder, key, taken)

    return Blocker(keys, deadline, attempt)


def _xread(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Blocker | bytes:
    try:
        parsed = read_streams(encoder, store, args)
    except _Wrong:
        return WRONGTYPE
    if isinstance(parsed, tuple):
        return Blocker(*parsed)
    return parsed if isinstance(parsed, bytes) else b"".join(parsed)


Parser = Callable[[Encoder, KeyValueStore, list[bytes]], "Blocker | bytes"]

BLOCKING: dict[bytes, tuple[Parser, int, int]] = {
    b"BLPOP": (_pop_list, 3, MANY),
    b"BRPOP": (_pop_list, 3, MANY),
    b"BLMOVE": (_move, 6, 6),
    b"BRPOPLPUSH": (_move, 4, 4),
    b"BLMPOP": (_lmpop, 5, MANY),
    b"BZPOPMIN": (_zpop, 3, MANY),
    b"BZPOPMAX": (_zpop, 3, MANY),
    b"BZMPOP": (_zmpop, 5, MANY),
    b"XREAD": (_xread, 4, MANY),
    b"XREADGROUP": (_xread, 7, MANY),
}
"""The blocking commands, by upper-case name: how each parses into a :class:`Blocker`, and its arity."""


def serve_blocked(store: KeyValueStore) -> None:
    """Retry the sessions waiting on the keys written since the last call, oldest first; answer those served."""
    while store.ready:
        key = store.ready.pop(0)
        for session in list(store.blocked.get(key, ())):
            blocker = session.blocker
            if blocker is None:
                continue
            try:
                reply = blocker.attempt(False)
            except _Wrong:  # BLMOVE's destination holds another type: the waiter gets the error, as in Redis
                reply = WRONGTYPE
            if reply is not None:
                if store.events:  # the pop's own events, as Redis fires them when it serves a waiting client
                    publish_events(session.server, store, blocker.command)
                session.unblock(reply)


def expire_blocked(sessions: list[RespSession], now: int) -> None:
    """Answer a null to each of ``sessions`` whose timeout passed."""
    for session in sessions:
        blocker = session.blocker
        if blocker is not None and blocker.deadline is not None and now >= blocker.deadline:
            session.unblock(session.encoder.nil_array)
