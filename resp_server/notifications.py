"""Keyspace notifications (``CONFIG SET notify-keyspace-events``), as Redis 7.0 publishes them: after a command
changed keys, ``__keyspace@0__:<key>`` gets the event's name and ``__keyevent@0__:<event>`` the key, for the event
classes the flags select (``K``/``E`` for the two channels; ``g`` generic, ``$`` strings, ``l`` lists, ``s`` sets,
``h`` hashes, ``z`` sorted sets, ``t`` streams, ``x`` expired, ``n`` new keys; ``A`` for ``g$lshzxetd``).

The store records what each command did to which key while notifications are on (``store.events``); the event's
name is the command's (``LPUSH`` gives ``lpush``) or Redis's where it differs (``HMSET`` gives ``hset``, ``INCR``
``incrby``); a container a command emptied also gives ``del``, and a key that expired ``expired``. The consumer-group
commands name their events themselves (``xgroup-create``, ``xgroup-createconsumer``...: any other name recorded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resp_server.store import KeyValueStore

if TYPE_CHECKING:
    from resp_server.server_state import ServerState

_ALL = "g$lshzxetd"
_CLASSES = frozenset(_ALL + "KEmn")

_RENAMED = {
    b"HMSET": b"hset", b"HSETNX": b"hset", b"SETEX": b"set", b"PSETEX": b"set", b"SETNX": b"set",
    b"GETSET": b"set", b"MSET": b"set", b"MSETNX": b"set", b"INCR": b"incrby", b"DECR": b"decrby",
    b"LPUSHX": b"lpush", b"RPUSHX": b"rpush", b"UNLINK": b"del", b"GETDEL": b"del", b"PEXPIRE": b"expire",
    b"EXPIREAT": b"expire", b"PEXPIREAT": b"expire", b"ZINCRBY": b"zincr", b"BITFIELD": b"setbit",
    b"BITOP": b"set", b"RENAME": b"rename_to", b"RENAMENX": b"rename_to", b"COPY": b"copy_to",
    b"SORT": b"sortstore", b"BLPOP": b"lpop", b"BRPOP": b"rpop", b"BZPOPMIN": b"zpopmin", b"BZPOPMAX": b"zpopmax",
    b"RPOPLPUSH": b"lpush", b"BRPOPLPUSH": b"lpush", b"LMOVE": b"lmove", b"BLMOVE": b"lmove",
}  # fmt: skip
"""Commands whose event Redis names otherwise than the command."""

_GENERIC = frozenset(
    (b"DEL", b"UNLINK", b"GETDEL", b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT", b"PERSIST", b"RENAME",
     b"RENAMENX", b"COPY", b"SORT", b"GETEX")
)  # fmt: skip


_PLAIN = frozenset((b"new", b"expired", b"changed", b"deleted"))
_SELF_NAMED = frozenset((b"XGROUP",))
"""Commands whose events are only those they name (XGROUP CREATE MKSTREAM's new stream is no ``xgroup`` event)."""


def parse_flags(text: bytes) -> str | None:
    """The classes ``text`` selects (``A`` expanded), or None if it holds a character Redis refuses."""
    chars = text.decode("latin-1")
    if any(c not in _CLASSES and c != "A" for c in chars):
        return None
    return "".join(sorted(set(chars.replace("A", _ALL))))


def flags_text(classes: str) -> bytes:
    """Flags as CONFIG GET shows them (Redis's ``keyspaceEventsFlagsToString``)."""
    text = "A" if all(c in classes for c in _ALL) else "".join(c for c in _ALL if c in classes)
    return (text + "".join(c for c in "KEmn" if c in classes)).encode()


def _class_of(name: bytes) -> str:
    if name in _GENERIC:
        return "g"
    first = name[:1]
    if name.startswith((b"Z", b"BZ")):
        return "z"
    if name.startswith(b"X"):
        return "t"
    if name.startswith((b"L", b"R", b"BL", b"BR")) and name not in (b"RENAME", b"RENAMENX", b"RANDOMKEY"):
        return "l"
    if first == b"H":
        return "h"
    if first == b"S" and name not in (b"SET", b"SETEX", b"SETNX", b"SETRANGE", b"SETBIT", b"SORT"):
        return "s"
    return "$"


def publish_events(server: ServerState, store: KeyValueStore, command: bytes | None) -> None:
    """Publish what ``store.events`` holds, as the events of ``command`` (None: the ticker's active expiry)."""
    events, store.events = store.events, []
    classes = server.notify_classes
    if not classes or not ("K" in classes or "E" in classes):
        return
    name = command.upper() if command is not None else b""
    event = _RENAMED.get(name, name.lower())
    kind = _class_of(name)
    seen: set[bytes] = set()
    for what, key in events:
        if what == b"new":
            _publish(server, classes, "n", b"new", key)
        elif what == b"expired":
            _publish(server, classes, "x", b"expired", key)
        elif what == b"changed" and command is not None and key not in seen and name not in _SELF_NAMED:
            seen.add(key)
            _publish(server, classes, kind, event, key)
        elif what == b"deleted" and command is not None:
            if key not in seen:  # a pop that emptied its container: its own event, then del
                seen.add(key)
                _publish(server, classes, kind, event, key)
            if kind != "g":
                _publish(server, classes, "g", b"del", key)
        elif what not in _PLAIN:  # a stream event named by the command (resp_server.streams.notify)
            _publish(server, classes, "t", what, key)


def _publish(server: ServerState, classes: str, kind: str, event: bytes, key: bytes) -> None:
    if kind not in classes:
        return
    if "K" in classes:
        server.publish(b"__keyspace@0__:" + key, event)
    if "E" in classes:
        server.publish(b"__keyevent@0__:" + event, key)
