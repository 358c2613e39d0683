"""Pending entries of stream consumer groups, as Redis 7.0 handles them: XACK, XPENDING, XCLAIM and XAUTOCLAIM."""

from __future__ import annotations

from resp_server.replies import (
    MANY,
    Encoder,
    Entry,
    Reply,
    bulk,
    c_string,
    error,
    join_replies,
    parse_int64,
    per_protocol,
)
from resp_server.store import KeyValueStore
from resp_server.stream_groups import consumer_of, nogroup
from resp_server.streams import INVALID_ID, entry_reply, id_bulk, id_text, parse_id, parse_range, parse_start
from resp_server.values import (
    NOT_INTEGER,
    SYNTAX,
    ZERO,
    Consumer,
    ConsumerGroup,
    PendingEntry,
    Stream,
    StreamId,
    _of,
    _typed,
    integer,
)


@_typed
def _xack(store: KeyValueStore, args: list[bytes]) -> Reply:
    stream: Stream | None = _of(store, args[1], Stream)
    group = None if stream is None else stream.groups.get(args[2])
    if group is None:
        return ZERO
    ids: list[StreamId] = []
    for text in args[3:]:  # all parsed first: an error acknowledges nothing
        parsed = parse_id(text)
        if parsed is None:
            return INVALID_ID
        ids.append(parsed)
    acknowledged = 0
    for entry_id in ids:
        if entry_id in group.pending:
            _drop(group, entry_id)
            acknowledged += 1
    return integer(acknowledged)


@per_protocol
@_typed
def _xpending(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    """XPENDING key group [[IDLE ms] start end count [consumer]]."""
    if len(args) != 3 and not 6 <= len(args) <= 9:
        return SYNTAX
    min_idle, count, at = 0, 0, 3
    bounds: tuple[StreamId, StreamId] = ((0, 0), (0, 0))
    if len(args) >= 6:
        if args[3].upper() == b"IDLE":
            parsed = parse_int64(args[4])
            if parsed is None:
                return NOT_INTEGER
            if len(args) < 8:
                return SYNTAX
            min_idle, at = parsed, 5
        parsed = parse_int64(args[at + 2])
        if parsed is None:
            return NOT_INTEGER
        count = max(parsed, 0)
        interval = parse_range(args[at], args[at + 1])
        if isinstance(interval, bytes):
            return interval
        bounds = interval
    key, name = args[1], args[2]
    stream: Stream | None = _of(store, key, Stream)
    group = None if stream is None else stream.groups.get(name)
    if group is None:
        return nogroup(key, name)
    if len(args) == 3:
        return _pending_summary(encoder, group)
    pending = group.pending
    if at + 3 < len(args):
        consumer = group.consumers.get(args[at + 3])
        if consumer is None:
            return b"*0\r\n"
        pending = consumer.pending
    now = store.clock()
    rows: list[Reply] = []
    for entry_id in sorted(pending):
        if len(rows) == 3 * count or entry_id > bounds[1]:
            break
        entry = pending[entry_id]
        idle = now - entry.delivered
        if entry_id < bounds[0] or (min_idle and idle < min_idle):
            continue
        holder = entry.consumer.name if entry.consumer is not None else b""
        rows += [b"*4\r\n" + id_bulk(entry_id), bulk(holder), b":%d\r\n:%d\r\n" % (max(idle, 0), entry.count)]
    return join_replies([b"*%d\r\n" % (len(rows) // 3), *rows])


def _pending_summary(encoder: Encoder, group: ConsumerGroup) -> Reply:
    if not group.pending:
        return b"*4\r\n:0\r\n" + encoder.nil + encoder.nil + encoder.nil_array
    ids = sorted(group.pending)
    holders = [(name, len(c.pending)) for name, c in sorted(group.consumers.items()) if c.pending]
    head = b"*4\r\n:%d\r\n%b%b*%d\r\n" % (len(ids), id_bulk(ids[0]), id_bulk(ids[-1]), len(holders))
    rows: list[Reply] = [head]
    for name, held in holders:
        rows += [b"*2\r\n", bulk(name), bulk(b"%d" % held)]
    return join_replies(rows)


def _claim(consumer: Consumer, entry_id: StreamId, entry: PendingEntry, delivered: int, bump: bool) -> None:
    """Hand ``entry`` to ``consumer``, delivered at ``delivered``, its delivery count bumped if ``bump``."""
    if entry.consumer is not consumer:
        if entry.consumer is not None:
            entry.consumer.pending.pop(entry_id, None)
        consumer.pending[entry_id] = entry
        entry.consumer = consumer
    entry.delivered = delivered
    if bump:
        entry.count += 1


def _drop(group: ConsumerGroup, entry_id: StreamId) -> None:
    """Forget a pending entry (acknowledged, or its stream entry deleted)."""
    entry = group.pending.pop(entry_id)
    if entry.consumer is not None:
        entry.consumer.pending.pop(entry_id, None)


def _claim_options(args: list[bytes], at: int, now: int) -> tuple[bool, bool, int, int, StreamId] | bytes:
    """XCLAIM's options from ``args[at]``: (force, justid, delivery time or -1, retry count or -1, last id)."""
    force = justid = False
    delivered, retries, last_id = -1, -1, (0, 0)
    while at < len(args):
        option = args[at].upper()
        more = at + 1 < len(args)
        if option == b"FORCE":
            force = True
        elif option == b"JUSTID":
            justid = True
        elif option in (b"IDLE", b"TIME", b"RETRYCOUNT") and more:
            at += 1
            value = parse_int64(args[at])
            if value is None:
                return error(b"ERR Invalid %b option argument for XCLAIM" % option)
            if option == b"IDLE":
                delivered = now - value
            elif option == b"TIME":
                delivered = value
            else:
                retries = value
        elif option == b"LASTID" and more:
            at += 1
            parsed = parse_id(args[at])
            if parsed is None:
                return INVALID_ID
            last_id = parsed
        else:
            return error(b"ERR Unrecognized XCLAIM option '%b'" % c_string(args[at]))
        at += 1
    return force, justid, delivered, retries, last_id


@_typed
def _xclaim(store: KeyValueStore, args: list[bytes]) -> Reply:
    """XCLAIM key group consumer min-idle-time id... [IDLE ms] [TIME ms] [RETRYCOUNT n] [FORCE] [JUSTID]
    [LASTID id]."""
    key = args[1]
    stream: Stream | None = _of(store, key, Stream)
    group = None if stream is None else stream.groups.get(args[2])
    if stream is None or group is None:
        return nogroup(key, args[2])
    min_idle = parse_int64(args[4])
    if min_idle is None:
        return error(b"ERR Invalid min-idle-time argument for XCLAIM")
    ids: list[StreamId] = []
    for text in args[5:]:
        parsed = parse_id(text)
        if parsed is None:
            break
        ids.append(parsed)
    now = store.clock()
    options = _claim_options(args, 5 + len(ids), now)
    if isinstance(options, bytes):
        return options
    force, justid, delivered, retries, last_id = options
    if last_id > group.last:
        group.last = last_id
    if delivered < 0 or delivered > now:
        delivered = now
    consumer: Consumer | None = None
    claimed: list[Reply] = []
    for entry_id in ids:
        entry = group.pending.get(entry_id)
        if entry_id not in stream.entries:
            if entry is not None:
                _drop(group, entry_id)
            continue
        if entry is None:
            if not force:
                continue
            entry = group.pending[entry_id] = PendingEntry(None, now)
        if entry.consumer is not None and min_idle > 0 and now - entry.delivered < min_idle:
            continue
        if consumer is None:
            consumer = consumer_of(store, key, group, args[3])
        _claim(consumer, entry_id, entry, delivered, retries < 0 and not justid)
        if retries >= 0:
            entry.count = retries
        claimed.append(bulk(id_text(entry_id)) if justid else entry_reply(entry_id, stream.entries[entry_id]))
    return join_replies([b"*%d\r\n" % len(claimed), *claimed])


@_typed
def _xautoclaim(store: KeyValueStore, args: list[bytes]) -> Reply:
    """XAUTOCLAIM key group consumer min-idle-time start [COUNT n] [JUSTID]: the next start, the claimed entries,
    and the ids of pending entries deleted from the stream (dropped from the group)."""
    min_idle = parse_int64(args[4])
    if min_idle is None:
        return error(b"ERR Invalid min-idle-time argument for XAUTOCLAIM")
    start = parse_start(args[5])
    if isinstance(start, bytes):
        return start
    count, justid, at = 100, False, 6
    while at < len(args):
        option = args[at].upper()
        if option == b"COUNT" and at + 1 < len(args):
            parsed = parse_int64(args[at + 1])
            if parsed is None or not 1 <= parsed <= (2**63 - 1) // 16:
                return error(b"ERR COUNT must be > 0")
            count = parsed
            at += 1
        elif option == b"JUSTID":
            justid = True
        else:
            return SYNTAX
        at += 1
    key = args[1]
    stream: Stream | None = _of(store, key, Stream)
    group = None if stream is None else stream.groups.get(args[2])
    if stream is None or group is None:
        return nogroup(key, args[2])
    now = store.clock()
    attempts = count * 10
    ids = [entry_id for entry_id in sorted(group.pending) if entry_id >= start]
    consumer: Consumer | None = None
    claimed: list[Reply] = []
    deleted: list[StreamId] = []
    visited = 0
    for entry_id in ids:
        if not attempts or not count:
            break
        attempts -= 1
        visited += 1
        if entry_id not in stream.entries:
            _drop(group, entry_id)
            deleted.append(entry_id)
            count -= 1
            continue
        entry = group.pending[entry_id]
        if min_idle > 0 and now - entry.delivered < min_idle:
            continue
        if consumer is None:
            consumer = consumer_of(store, key, group, args[3])
        _claim(consumer, entry_id, entry, now, not justid)
        claimed.append(bulk(id_text(entry_id)) if justid else entry_reply(entry_id, stream.entries[entry_id]))
        count -= 1
    cursor = ids[visited] if visited < len(ids) else (0, 0)
    return join_replies(
        [
            b"*3\r\n",
            bulk(id_text(cursor)),
            b"*%d\r\n" % len(claimed),
            *claimed,
            b"*%d\r\n" % len(deleted),
            *(bulk(id_text(entry_id)) for entry_id in deleted),
        ]
    )


STREAM_PENDING: dict[bytes, Entry] = {
    b"XACK": (_xack, 4, MANY),
    b"XPENDING": (_xpending, 3, MANY),
    b"XCLAIM": (_xclaim, 6, MANY),
    b"XAUTOCLAIM": (_xautoclaim, 6, MANY),
}
"""The commands on the pending entries of consumer groups, for the keyspace table."""
