"""Streams: entry ids as Redis parses them, XADD (with NOMKSTREAM and MAXLEN/MINID trimming), XTRIM, XLEN, XDEL,
XRANGE and XREVRANGE. Consumer groups are resp_server.stream_groups', stream_reads' and stream_pending's; XINFO is
resp_server.stream_info's."""

from __future__ import annotations

import bisect
import re

from resp_server.replies import (
    MANY,
    Encoder,
    Entry,
    Reply,
    arity_error,
    bulk,
    c_string,
    error,
    join_replies,
    parse_int64,
    per_protocol,
)
from resp_server.store import KeyValueStore
from resp_server.values import (
    NOT_INTEGER,
    SYNTAX,
    ZERO,
    Stream,
    StreamId,
    _of,
    _typed,
    integer,
)

NODE_ENTRIES = 100
"""Redis packs a stream's entries into listpacks of up to this many (stream-node-max-entries), the nodes of a radix
tree: XINFO reports the tree's size and approximate trimming (``~``) removes whole nodes only. This server estimates
the nodes as runs of this many entries from the first (exact for streams that were only appended to)."""

U64 = 2**64 - 1
INVALID_ID = error(b"ERR Invalid stream ID specified as stream command argument")
_WHITESPACE_NUMBER = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)")


def _unsigned(text: bytes) -> int | None:
    """``text`` as Redis's ``string2ull`` reads it: a strict integer, else what ``strtoull`` accepts."""
    value = parse_int64(text)
    if value is not None:
        return value if value >= 0 else None
    match = _WHITESPACE_NUMBER.fullmatch(text)
    if match is None or int(match[2]) > U64:
        return None
    return (-int(match[2])) % 2**64 if match[1] == b"-" else int(match[2])


def parse_id(text: bytes, missing_seq: int = 0, strict: bool = True) -> StreamId | None:
    """A stream id as Redis parses one (``ms[-seq]``, and ``-``/``+`` unless ``strict``), or None if invalid. Redis
    reads it as a C string: up to its first NUL."""
    if len(text) > 127:
        return None
    text = c_string(text)
    if text == b"-" or text == b"+":
        return None if strict else ((0, 0) if text == b"-" else (U64, U64))
    head, dash, tail = text.partition(b"-")
    ms = _unsigned(head)
    seq = _unsigned(tail) if dash else missing_seq
    return None if ms is None or seq is None else (ms, seq)


def _interval(text: bytes, missing_seq: int) -> tuple[StreamId, bool] | None:
    """An interval's end (``(`` makes it exclusive), or None if invalid."""
    exclusive = len(text) > 1 and text[:1] == b"("
    parsed = parse_id(text[1:], missing_seq) if exclusive else parse_id(text, missing_seq, strict=False)
    return None if parsed is None else (parsed, exclusive)


def parse_start(text: bytes) -> StreamId | bytes:
    """The first id of a range as XRANGE reads it (``-``, ``ms[-seq]``, ``(`` to exclude it), or the error reply."""
    start = _interval(text, 0)
    if start is None:
        return INVALID_ID
    first = next_id(start[0]) if start[1] else start[0]
    return error(b"ERR invalid start ID for the interval") if first is None else first


def parse_range(start_text: bytes, end_text: bytes) -> tuple[StreamId, StreamId] | bytes:
    """A range ``start end`` as XRANGE reads it (``+`` for the end, a missing sequence meaning its last), as the
    first and last ids it holds, or the error reply."""
    first = parse_start(start_text)
    if isinstance(first, bytes):
        return first
    end = _interval(end_text, U64)
    if end is None:
        return INVALID_ID
    last = _previous_id(end[0]) if end[1] else end[0]
    return error(b"ERR invalid end ID for the interval") if last is None else (first, last)


def next_id(entry_id: StreamId) -> StreamId | None:
    """The id after ``entry_id``, None after the last possible one."""
    ms, seq = entry_id
    if seq < U64:
        return ms, seq + 1
    return None if ms == U64 else (ms + 1, 0)


def _previous_id(entry_id: StreamId) -> StreamId | None:
    ms, seq = entry_id
    if seq:
        return ms, seq - 1
    return (ms - 1, U64) if ms else None


def notify(store: KeyValueStore, key: bytes, event: bytes) -> None:
    """Record the stream event ``event`` on ``key`` for keyspace notifications (published under its own name)."""
    if store.notifying:
        store.events.append((event, key))


def id_text(entry_id: StreamId) -> bytes:
    return b"%d-%d" % entry_id


def id_bulk(entry_id: StreamId) -> bytes:
    text = id_text(entry_id)
    return b"$%d\r\n%b\r\n" % (len(text), text)


def entry_reply(entry_id: StreamId, fields: list[bytes]) -> Reply:
    parts: list[Reply] = [b"*2\r\n", bulk(id_text(entry_id)), b"*%d\r\n" % len(fields)]
    parts += [bulk(field) for field in fields]
    return join_replies(parts)


# -- XADD and XTRIM


class _Trim:
    """XADD's and XTRIM's options: the trimming strategy (MAXLEN, MINID or none) and its bounds."""

    __slots__ = ("approx", "at", "entry_id", "limit", "maxlen", "minid", "no_create", "seq_given", "strategy")

    def __init__(self) -> None:
        self.strategy = b""
        self.approx = False
        self.maxlen = 0
        self.minid = (0, 0)
        self.limit = 0
        self.no_create = False
        self.at = 0  # XADD: where the id is
        self.entry_id: StreamId | None = None  # XADD: the id given, None for "*" (or no id at all)
        self.seq_given = True  # XADD: False for "ms-*"


def _parse_trim(args: list[bytes], xadd: bool) -> _Trim | bytes:
    """The options of XADD (up to and with its id) or XTRIM, as Redis's ``streamParseAddOrTrimArgsOrReply`` checks
    them: in order, each read as a C string (up to its first NUL), so a bad id is refused before XADD's arity."""
    trim = _Trim()
    limit_given = False
    i = 2
    while i < len(args):
        more = len(args) - 1 - i
        text = c_string(args[i])
        option = text.upper()
        if xadd and text == b"*":
            break
        if option in (b"MAXLEN", b"MINID") and more:
            if trim.strategy:
                return error(b"ERR syntax error, MAXLEN and MINID options at the same time are not compatible")
            marker = c_string(args[i + 1])
            trim.approx = more >= 2 and marker == b"~"
            if more >= 2 and marker in (b"~", b"="):
                i += 1
            if option == b"MAXLEN":
                maxlen = parse_int64(args[i + 1])
                if maxlen is None:
                    return NOT_INTEGER
                if maxlen < 0:
                    return error(b"ERR The MAXLEN argument must be >= 0.")
                trim.maxlen = maxlen
            else:
                minid = parse_id(args[i + 1])
                if minid is None:
                    return INVALID_ID
                trim.minid = minid
            trim.strategy = option
            i += 1
        elif option == b"LIMIT" and more:
            limit = parse_int64(args[i + 1])
            if limit is None:
                return NOT_INTEGER
            if limit < 0:
                return error(b"ERR The LIMIT argument must be >= 0.")
            trim.limit, limit_given = limit, True
            i += 1
        elif xadd and option == b"NOMKSTREAM":
            trim.no_create = True
        elif xadd:
            head, dash, tail = text.partition(b"-")
            trim.seq_given = not (dash and tail == b"*")
            trim.entry_id = parse_id(text if trim.seq_given else head)
            if trim.entry_id is None:
                return INVALID_ID
            break
        else:
            return SYNTAX
        i += 1
    trim.at = i
    if trim.limit and not trim.strategy:
        return error(b"ERR syntax error, LIMIT cannot be used without specifying a trimming strategy")
    if not xadd and not trim.strategy:
        return error(b"ERR syntax error, XTRIM must be called with a trimming strategy")
    if limit_given and not trim.approx:
        return error(b"ERR syntax error, LIMIT cannot be used without the special ~ option")
    if not limit_given:
        trim.limit = 100 * NODE_ENTRIES if trim.approx else 0
    return trim


def _trimmed(stream: Stream, trim: _Trim) -> int:
    """Trim ``stream`` as ``trim`` says (``~``: whole nodes only, and at most ``limit`` entries); the count removed."""
    if not trim.strategy:
        return 0
    ids = stream.ids
    by_length = trim.strategy == b"MAXLEN"
    if not trim.approx:
        doomed = max(len(ids) - trim.maxlen, 0) if by_length else bisect.bisect_left(ids, trim.minid)
    else:
        # Redis's streamTrim with "~": whole nodes from the first, while one fits the limit and goes entirely (the
        # stream stays at least maxlen long; the node's last id is below minid).
        doomed = 0
        for start in range(0, len(ids), NODE_ENTRIES):
            left = len(ids) - doomed
            entries = min(NODE_ENTRIES, left)
            if (by_length and left <= trim.maxlen) or (trim.limit and doomed + entries > trim.limit):
                break
            if left - entries < trim.maxlen if by_length else ids[start + entries - 1] >= trim.minid:
                break
            doomed += entries
    stream.trim(doomed)
    return doomed


@per_protocol
@_typed
def _xadd(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    trim = _parse_trim(args, True)
    if isinstance(trim, bytes):
        return trim
    fields = args[trim.at + 1 :]
    if len(fields) < 2 or len(fields) % 2:
        return arity_error(b"xadd")
    wanted, seq_given = trim.entry_id, trim.seq_given  # wanted None: "*"
    if seq_given and wanted == (0, 0):
        return error(b"ERR The ID specified in XADD must be greater than 0-0")
    stream: Stream | None = _of(store, args[1], Stream)
    if stream is None and trim.no_create:
        return encoder.nil
    fresh = stream is None
    if stream is None:
        stream = Stream()
    last = stream.last
    if last == (U64, U64):
        return error(b"ERR The stream has exhausted the last possible ID, unable to add more items")
    if wanted is None:
        now = store.clock()
        entry_id = (now, 0) if now > last[0] else next_id(last)
    elif not seq_given:
        if wanted[0] == last[0] and last[1] == U64:
            entry_id = None
        else:
            entry_id = (last[0], last[1] + 1) if wanted[0] == last[0] else wanted
    else:
        entry_id = wanted
    if entry_id is None or entry_id <= last:
        return error(b"ERR The ID specified in XADD is equal or smaller than the target stream top item")
    stream.append(entry_id, list(fields))
    stream.last = entry_id
    stream.added += 1
    if fresh:
        store.set(args[1], stream)
    else:
        store.modified(args[1])
    if _trimmed(stream, trim):
        notify(store, args[1], b"xtrim")
    return bulk(id_text(entry_id))


@_typed
def _xtrim(store: KeyValueStore, args: list[bytes]) -> Reply:
    trim = _parse_trim(args, False)
    if isinstance(trim, bytes):
        return trim
    stream: Stream | None = _of(store, args[1], Stream)
    if stream is None:
        return ZERO
    removed = _trimmed(stream, trim)
    if removed:
        store.modified(args[1])
    return integer(removed)


# -- XLEN, XDEL, XRANGE


@_typed
def _xlen(store: KeyValueStore, args: list[bytes]) -> Reply:
    return integer(len(_of(store, args[1], Stream) or ()))


@_typed
def _xdel(store: KeyValueStore, args: list[bytes]) -> Reply:
    stream: Stream | None = _of(store, args[1], Stream)
    if stream is None:
        return ZERO
    ids: list[StreamId] = []
    for text in args[2:]:  # all parsed first: an error deletes nothing
        parsed = parse_id(text)
        if parsed is None:
            return INVALID_ID
        ids.append(parsed)
    removed = 0
    for entry_id in ids:
        if stream.delete(entry_id):
            removed += 1
            stream.max_deleted = max(stream.max_deleted, entry_id)
    if removed:
        store.modified(args[1])
    return integer(removed)


@per_protocol
@_typed
def _xrange(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    """XRANGE key start end [COUNT n] and XREVRANGE key end start [COUNT n]."""
    reverse = args[0].upper() == b"XREVRANGE"
    bounds = parse_range(args[3], args[2]) if reverse else parse_range(args[2], args[3])
    if isinstance(bounds, bytes):
        return bounds
    first, last = bounds
    count = -1
    i = 4
    while i < len(args):
        if args[i].upper() != b"COUNT" or i + 1 >= len(args):
            return SYNTAX
        parsed = parse_int64(args[i + 1])
        if parsed is None:
            return NOT_INTEGER
        count = max(parsed, 0)
        i += 2
    stream: Stream | None = _of(store, args[1], Stream)
    if stream is None:
        return b"*0\r\n"
    if count == 0:
        return encoder.nil_array
    ids = stream.between(first, last)
    if reverse:
        ids.reverse()
    if count > 0:
        ids = ids[:count]
    return join_replies([b"*%d\r\n" % len(ids), *(entry_reply(entry_id, stream.entries[entry_id]) for entry_id in ids)])


STREAMS: dict[bytes, Entry] = {
    b"XADD": (_xadd, 5, MANY),
    b"XTRIM": (_xtrim, 4, MANY),
    b"XLEN": (_xlen, 2, 2),
    b"XDEL": (_xdel, 3, MANY),
    b"XRANGE": (_xrange, 4, MANY),
    b"XREVRANGE": (_xrange, 4, MANY),
}
