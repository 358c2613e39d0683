"""RESP replies: the bytes every command shares, and :class:`Encoder`, how one protocol spells what RESP2 and RESP3
spell differently (nulls, doubles, maps, sets).

A reply is one ``bytes`` object, except a reply that carries a stored value of :data:`BIG_VALUE` bytes or more: that
one is a list of chunks holding the value itself, so that the value is written without being copied and a reply of
many big values (MGET) is never joined into one giant string. ``b"".join`` of a list of replies raises TypeError
when one of them is such a list, which keeps the check off the common path: :func:`join_replies` does the rest.

A command whose reply depends on the protocol takes the session's encoder as its first argument and is listed in a
command table as :class:`PerProtocol`; the session's table binds it to its own protocol's encoder
(:func:`bind_table`). No module state changes with a session's protocol.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from resp_server.store import KeyValueStore

BIG_VALUE = 16 * 1024
"""A bulk reply of a value at least this long is a list of chunks (the value not copied); shorter, one bytes."""

Reply: TypeAlias = "bytes | list[bytes]"

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def parse_int64(text: bytes) -> int | None:
    """``text`` as a signed 64-bit integer under Redis's strict rules (no sign '+', spaces, or leading
    zeros), or None when it is not one."""
    if len(text) > 20:
        return None
    if text.isdigit():
        if text[0] == 48 and len(text) > 1:  # leading zero
            return None
    elif not (len(text) > 1 and text[0] == 45 and text[1:].isdigit() and text[1] != 48):  # '-'
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


OK = b"+OK\r\n"
MANY = 2**31
"""A table entry's upper bound on the argument count: no bound."""
WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"


def error(message: bytes) -> bytes:
    """An error reply; CR and LF inside ``message`` become spaces so the reply stays one line."""
    return b"-%b\r\n" % message.strip(b"\r\n").replace(b"\r", b" ").replace(b"\n", b" ")


def bulk(value: bytes) -> Reply:
    """A bulk string reply; chunks around the value itself when it is big (a null is the encoder's)."""
    size = len(value)
    if size < BIG_VALUE:
        return b"$%d\r\n%b\r\n" % (size, value)
    return [b"$%d\r\n" % size, value, b"\r\n"]


def array(items: Iterable[bytes]) -> Reply:
    """An array reply of bulk strings; chunks when it is long or holds a big value (nulls: :meth:`Encoder.array`)."""
    parts = [bulk(item) for item in items]
    parts.insert(0, b"*%d\r\n" % (len(parts)))
    return join_replies(parts) if len(parts) <= _JOINED_ARRAY else chunk_replies(parts)


# The most items an array reply joins into one bytes object; a longer one (KEYS, a big MGET) goes out in chunks.
_JOINED_ARRAY = 256


def join_replies(replies: list[Reply]) -> Reply:
    """``replies`` as one reply: one bytes object, or the chunks of :func:`chunk_replies` if one holds a big value."""
    try:
        return b"".join(replies)  # type: ignore[arg-type]  # a list among them raises TypeError
    except TypeError:
        return chunk_replies(replies)


def chunk_replies(replies: list[Reply]) -> list[bytes]:
    """``replies`` as chunks: big values as they are, the small pieces between them joined, a chunk at a time of
    about :data:`BIG_VALUE` bytes, so that no reply is ever copied into one giant string."""
    chunks: list[bytes] = []
    small: list[bytes] = []
    size = 0
    for reply in replies:
        pieces: list[bytes] | tuple[bytes] = reply if isinstance(reply, list) else (reply,)
        for piece in pieces:
            big = len(piece) >= BIG_VALUE
            if not big:
                small.append(piece)
                size += len(piece)
                if size < BIG_VALUE:
                    continue
            if small:
                chunks.append(b"".join(small))
                small = []
                size = 0
            if big:
                chunks.append(piece)
    if small:
        chunks.append(b"".join(small))
    return chunks


def arity_error(name: bytes) -> bytes:
    """The reply to a command given too few or too many arguments (``name`` in any case)."""
    return error(b"ERR wrong number of arguments for '%b' command" % name.lower())


def reply_too_long(store: KeyValueStore) -> bytes:
    """The reply to a command whose reply would have more items than the store's ``max_reply_items``."""
    return error(b"ERR reply would have more than %d items (max-reply-items)" % store.max_reply_items)


def c_string(arg: bytes) -> bytes:
    """``arg`` as Redis quotes it in an error (a C string through ``%s``): up to its first NUL."""
    return arg.split(b"\0", 1)[0]


def unknown_command(args: list[bytes]) -> bytes:
    """The reply to a command name nobody knows, quoting the start of its arguments as Redis does (with ``%s``: each
    one up to its first NUL)."""
    shown = b""
    for arg in args[1:]:
        if len(shown) >= 128:
            break
        shown += b"'%b' " % c_string(arg)[: 128 - len(shown)]
    return error(b"ERR unknown command '%b', with args beginning with: %b" % (c_string(args[0])[:128], shown))


Command: TypeAlias = "Callable[[KeyValueStore, list[bytes]], Reply]"
"""A command: ``(store, args) -> Reply``, ``args`` being the request with the command name first."""

ProtocolCommand: TypeAlias = "Callable[[Encoder, KeyValueStore, list[bytes]], Reply]"
"""A command whose reply depends on the protocol: ``(encoder, store, args) -> Reply``."""

Entry: TypeAlias = "tuple[Command | PerProtocol, int, int]"
"""A command table's entry: the command, and the argument counts it allows (name included)."""


def format_double(value: float) -> bytes:
    """A double as Redis 7.0 replies it (``%.17g``; ``inf`` and ``-inf`` spelled out)."""
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    return b"%.17g" % value


class Encoder:
    """How one protocol (2 or 3) spells the replies that differ between RESP2 and RESP3."""

    __slots__ = ("empty_set", "nil", "nil_array", "proto")

    def __init__(self, proto: int) -> None:
        self.proto = proto
        self.nil = b"_\r\n" if proto == 3 else b"$-1\r\n"
        """The null bulk string."""
        self.nil_array = b"_\r\n" if proto == 3 else b"*-1\r\n"
        """The null array (RESP3 has one null for both)."""
        self.empty_set = b"~0\r\n" if proto == 3 else b"*0\r\n"

    def bulk(self, value: bytes | None) -> Reply:
        """A bulk string, or this protocol's null for None."""
        return self.nil if value is None else bulk(value)

    def array(self, items: Iterable[bytes | None]) -> Reply:
        """An array of bulk strings, None items being this protocol's null."""
        nil = self.nil
        parts = [nil if item is None else bulk(item) for item in items]
        parts.insert(0, b"*%d\r\n" % len(parts))
        return join_replies(parts) if len(parts) <= _JOINED_ARRAY else chunk_replies(parts)

    def double(self, value: float) -> bytes:
        """A double: RESP3's ``,`` type, a bulk string in RESP2."""
        text = format_double(value)
        return b",%b\r\n" % text if self.proto == 3 else b"$%d\r\n%b\r\n" % (len(text), text)

    def map_header(self, pairs: int) -> bytes:
        """The header of a map of ``pairs`` entries (a flat array of twice as many items in RESP2)."""
        return b"%%%d\r\n" % pairs if self.proto == 3 else b"*%d\r\n" % (2 * pairs)

    def set_header(self, size: int) -> bytes:
        """The header of a set reply (an array in RESP2)."""
        return b"~%d\r\n" % size if self.proto == 3 else b"*%d\r\n" % size


RESP2 = Encoder(2)
RESP3 = Encoder(3)
ENCODERS = {2: RESP2, 3: RESP3}


class PerProtocol:
    """A table entry's command whose reply depends on the protocol: bound to an encoder by :func:`bind_table`."""

    __slots__ = ("command",)

    def __init__(self, command: ProtocolCommand) -> None:
        self.command = command

    def bind(self, encoder: Encoder) -> Command:
        return functools.partial(self.command, encoder)


def per_protocol(command: ProtocolCommand) -> PerProtocol:
    """Decorate a ``(encoder, store, args)`` command for a table (see :class:`PerProtocol`)."""
    return PerProtocol(command)


def bind_table(table: dict[bytes, Any], encoder: Encoder) -> dict[bytes, tuple[Command, int, int]]:
    """``table`` with each :class:`PerProtocol` command bound to ``encoder``."""
    return {
        name: (run.bind(encoder) if isinstance(run, PerProtocol) else run, low, high)
        for name, (run, low, high) in table.items()
    }
