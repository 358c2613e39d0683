"""XINFO STREAM [FULL [COUNT n]], XINFO GROUPS, XINFO CONSUMERS and XINFO HELP, with Redis 7.0's fields in its order."""

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
from resp_server.stream_groups import lag, subcommand_syntax
from resp_server.streams import NODE_ENTRIES, entry_reply, id_bulk, id_text
from resp_server.values import NO_ENTRIES_READ, NO_SUCH_KEY, NOT_INTEGER, ConsumerGroup, Stream, StreamId, _of, _typed

_HELP = [
    b"XINFO <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"CONSUMERS <key> <groupname>",
    b"    Show consumers of <groupname>.",
    b"GROUPS <key>",
    b"    Show the stream consumer groups.",
    b"STREAM <key> [FULL [COUNT <count>]",
    b"    Show information about the stream.",
    b"HELP",
    b"    Prints this help.",
]


def _optional(encoder: Encoder, value: int | None) -> bytes:
    return encoder.nil if value is None else b":%d\r\n" % value


def _entries_read(encoder: Encoder, group: ConsumerGroup) -> bytes:
    return _optional(encoder, None if group.entries_read == NO_ENTRIES_READ else group.entries_read)


@per_protocol
@_typed
def _xinfo(encoder: Encoder, store: KeyValueStore, args: list[bytes]) -> Reply:
    sub = args[1].upper()
    if sub == b"HELP":
        return join_replies([b"*%d\r\n" % len(_HELP), *(b"+%b\r\n" % line for line in _HELP)])
    stream: Stream | None = _of(store, args[2], Stream)
    if stream is None:
        return NO_SUCH_KEY
    if sub == b"CONSUMERS" and len(args) == 4:
        group = stream.groups.get(args[3])
        if group is None:
            return error(
                b"NOGROUP No such consumer group '%b' for key name '%b'" % (c_string(args[3]), c_string(args[2]))
            )
        now = store.clock()
        parts: list[Reply] = [b"*%d\r\n" % len(group.consumers)]
        for name, consumer in sorted(group.consumers.items()):
            parts += [encoder.map_header(3), b"$4\r\nname\r\n", bulk(name)]
            parts.append(
                b"$7\r\npending\r\n:%d\r\n$4\r\nidle\r\n:%d\r\n" % (len(consumer.pending), max(now - consumer.seen, 0))
            )
        return join_replies(parts)
    if sub == b"GROUPS" and len(args) == 3:
        parts = [b"*%d\r\n" % len(stream.groups)]
        for name, group in sorted(stream.groups.items()):
            parts += [
                encoder.map_header(6),
                b"$4\r\nname\r\n",
                bulk(name),
                b"$9\r\nconsumers\r\n:%d\r\n$7\r\npending\r\n:%d\r\n" % (len(group.consumers), len(group.pending)),
                b"$17\r\nlast-delivered-id\r\n",
                bulk(id_text(group.last)),
                b"$12\r\nentries-read\r\n",
                _entries_read(encoder, group),
                b"$3\r\nlag\r\n",
                _optional(encoder, lag(stream, group)),
            ]
        return join_replies(parts)
    if sub == b"STREAM":
        return _stream(encoder, stream, args)
    return subcommand_syntax(args)


def _stream(encoder: Encoder, stream: Stream, args: list[bytes]) -> Reply:
    """XINFO STREAM key [FULL [COUNT n]]."""
    options = args[3:]
    count = 10
    if options:
        if len(options) not in (1, 3) or options[0].upper() != b"FULL":
            return subcommand_syntax(args)
        if len(options) == 3:
            if options[1].upper() != b"COUNT":
                return subcommand_syntax(args)
            parsed = parse_int64(options[2])
            if parsed is None:
                return NOT_INTEGER
            count = 10 if parsed < 0 else parsed
    ids, entries = stream.ids, stream.entries
    keys = -(-len(ids) // NODE_ENTRIES)
    parts: list[Reply] = [
        encoder.map_header(9 if options else 10),
        b"$6\r\nlength\r\n:%d\r\n" % len(ids),
        b"$15\r\nradix-tree-keys\r\n:%d\r\n" % keys,
        b"$16\r\nradix-tree-nodes\r\n:%d\r\n" % (keys + 1),
        b"$17\r\nlast-generated-id\r\n",
        bulk(id_text(stream.last)),
        b"$20\r\nmax-deleted-entry-id\r\n",
        bulk(id_text(stream.max_deleted)),
        b"$13\r\nentries-added\r\n:%d\r\n" % stream.added,
        b"$23\r\nrecorded-first-entry-id\r\n",
        bulk(id_text(stream.first())),
    ]
    if not options:
        parts += [
            b"$6\r\ngroups\r\n:%d\r\n" % len(stream.groups),
            b"$11\r\nfirst-entry\r\n",
            entry_reply(ids[0], entries[ids[0]]) if ids else encoder.nil,
            b"$10\r\nlast-entry\r\n",
            entry_reply(ids[-1], entries[ids[-1]]) if ids else encoder.nil,
        ]
        return join_replies(parts)
    shown = ids if count == 0 else ids[:count]
    parts += [
        b"$7\r\nentries\r\n*%d\r\n" % len(shown),
        *[entry_reply(entry_id, entries[entry_id]) for entry_id in shown],
    ]
    parts.append(b"$6\r\ngroups\r\n*%d\r\n" % len(stream.groups))
    for name, group in sorted(stream.groups.items()):
        pending = sorted(group.pending.items())
        if count:
            pending = pending[:count]
        parts += [
            encoder.map_header(7),
            b"$4\r\nname\r\n",
            bulk(name),
            b"$17\r\nlast-delivered-id\r\n",
            bulk(id_text(group.last)),
            b"$12\r\nentries-read\r\n",
            _entries_read(encoder, group),
            b"$3\r\nlag\r\n",
            _optional(encoder, lag(stream, group)),
            b"$9\r\npel-count\r\n:%d\r\n" % len(group.pending),
            b"$7\r\npending\r\n*%d\r\n" % len(pending),
        ]
        for entry_id, entry in pending:
            holder = entry.consumer.name if entry.consumer is not None else b""
            parts += [b"*4\r\n" + id_bulk(entry_id), bulk(holder), b":%d\r\n:%d\r\n" % (entry.delivered, entry.count)]
        parts.append(b"$9\r\nconsumers\r\n*%d\r\n" % len(group.consumers))
        for consumer_name, consumer in sorted(group.consumers.items()):
            held: list[StreamId] = sorted(consumer.pending)
            if count:
                held = held[:count]
            parts += [
                encoder.map_header(4),
                b"$4\r\nname\r\n",
                bulk(consumer_name),
                b"$9\r\nseen-time\r\n:%d\r\n" % consumer.seen,
                b"$9\r\npel-count\r\n:%d\r\n" % len(consumer.pending),
                b"$7\r\npending\r\n*%d\r\n" % len(held),
            ]
            for entry_id in held:
                entry = consumer.pending[entry_id]
                parts.append(b"*3\r\n%b:%d\r\n:%d\r\n" % (id_bulk(entry_id), entry.delivered, entry.count))
    return join_replies(parts)


STREAM_INFO: dict[bytes, Entry] = {b"XINFO": (_xinfo, 2, MANY)}
