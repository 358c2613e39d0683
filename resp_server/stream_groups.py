"""Stream consumer groups as Redis 7.0 keeps them: XGROUP and its subcommands, and what the group commands share
(consumers, a group's read counter and lag, the group events). XREADGROUP is resp_server.stream_reads'; XACK,
XPENDING, XCLAIM and XAUTOCLAIM are resp_server.stream_pending's.

A group keeps the last id it delivered and one :class:`~resp_server.values.PendingEntry` per entry delivered and
not acknowledged, shared by the group's pending list and its consumer's, as Redis's NACKs are: memory grows with
the unacknowledged deliveries only. Times are the store's clock in ms.
"""

from __future__ import annotations

from resp_server.replies import (
    MANY,
    OK,
    Entry,
    Reply,
    c_string,
    error,
    join_replies,
    parse_int64,
)
from resp_server.store import KeyValueStore
from resp_server.streams import INVALID_ID, notify, parse_id
from resp_server.values import (
    NO_ENTRIES_READ,
    NOT_INTEGER,
    ONE,
    ZERO,
    Consumer,
    ConsumerGroup,
    Stream,
    StreamId,
    _of,
    _typed,
    integer,
)


def nogroup(key: bytes, group: bytes, where: bytes = b"") -> bytes:
    return error(b"NOGROUP No such key '%b' or consumer group '%b'%b" % (c_string(key), c_string(group), where))


def subcommand_syntax(args: list[bytes]) -> bytes:
    """Redis's refusal of a known subcommand given the wrong arguments (XGROUP, XINFO)."""
    return error(
        b"ERR unknown subcommand or wrong number of arguments for '%b'. Try %b HELP."
        % (c_string(args[1])[:128], args[0].upper())
    )


def consumer_of(store: KeyValueStore, key: bytes, group: ConsumerGroup, name: bytes) -> Consumer:
    """The consumer ``name`` of ``group``, seen now; created (with its event) if it is not there."""
    consumer = group.consumers.get(name)
    if consumer is None:
        consumer = group.consumers[name] = Consumer(name, store.clock())
        notify(store, key, b"xgroup-createconsumer")
    else:
        consumer.seen = store.clock()
    return consumer


# -- lag and the logical read counter (Redis's streamRangeHasTombstones / streamEstimateDistanceFromFirstEverEntry)


def has_tombstones(stream: Stream, start: StreamId) -> bool:
    """Whether an entry deleted by XDEL may lie at or after ``start``, among the stream's entries."""
    if not stream.entries or stream.max_deleted == (0, 0) or stream.first() > stream.max_deleted:
        return False
    return start <= stream.max_deleted


def distance(stream: Stream, entry_id: StreamId) -> int:
    """``entry_id``'s logical read counter, or NO_ENTRIES_READ where it cannot be told."""
    if not stream.added:
        return 0
    if not stream.entries and entry_id <= stream.last:
        return stream.added
    if entry_id >= stream.last:
        return stream.added if entry_id == stream.last else NO_ENTRIES_READ
    first = stream.first()
    if stream.max_deleted == (0, 0) or stream.max_deleted < first:
        if entry_id < first:
            return stream.added - len(stream.entries)
        if entry_id == first:
            return stream.added - len(stream.entries) + 1
    return NO_ENTRIES_READ


def lag(stream: Stream, group: ConsumerGroup) -> int | None:
    """The entries not yet delivered to ``group``, None where fragmentation hides it."""
    if not stream.added:
        return 0
    if group.entries_read != NO_ENTRIES_READ and not has_tombstones(stream, group.last):
        return stream.added - group.entries_read
    read = distance(stream, group.last)
    return None if read == NO_ENTRIES_READ else stream.added - read


# -- XGROUP

_XGROUP_HELP = [
    b"XGROUP <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"CREATE <key> <groupname> <id|$> [option]",
    b"    Create a new consumer group. Options are:",
    b"    * MKSTREAM",
    b"      Create the empty stream if it does not exist.",
    b"    * ENTRIESREAD entries_read",
    b"      Set the group's entries_read counter (internal use).",
    b"CREATECONSUMER <key> <groupname> <consumer>",
    b"    Create a new consumer in the specified group.",
    b"DELCONSUMER <key> <groupname> <consumer>",
    b"    Remove the specified consumer.",
    b"DESTROY <key> <groupname>",
    b"    Remove the specified group.",
    b"SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
    b"    Set the current group ID and entries_read counter.",
    b"HELP",
    b"    Prints this help.",
]
HELP_XGROUP = join_replies([b"*%d\r\n" % len(_XGROUP_HELP), *(b"+%b\r\n" % line for line in _XGROUP_HELP)])


@_typed
def _xgroup(store: KeyValueStore, args: list[bytes]) -> Reply:
    """XGROUP CREATE/SETID/DESTROY/CREATECONSUMER/DELCONSUMER/HELP (the subcommand and its arity are checked
    before, by resp_server.subcommands)."""
    sub = args[1].upper()
    if sub == b"HELP":
        return HELP_XGROUP
    mkstream, entries_read = False, NO_ENTRIES_READ
    i = 5
    while i < len(args):
        option = args[i].upper()
        if sub == b"CREATE" and option == b"MKSTREAM":
            mkstream = True
            i += 1
        elif sub in (b"CREATE", b"SETID") and option == b"ENTRIESREAD" and i + 1 < len(args):
            parsed = parse_int64(args[i + 1])
            if parsed is None:
                return NOT_INTEGER
            if parsed < 0 and parsed != NO_ENTRIES_READ:
                return error(b"ERR value for ENTRIESREAD must be positive or -1")
            entries_read = parsed
            i += 2
        else:
            return subcommand_syntax(args)
    key, name = args[2], args[3]
    stream: Stream | None = _of(store, key, Stream)
    group = None if stream is None else stream.groups.get(name)
    if not mkstream:
        if stream is None:
            return error(
                b"ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use "
                b"the MKSTREAM option to create an empty stream automatically."
            )
        if group is None and sub in (b"SETID", b"CREATECONSUMER", b"DELCONSUMER"):
            return error(b"NOGROUP No such consumer group '%b' for key name '%b'" % (c_string(name), c_string(key)))
    if sub == b"CREATE" and len(args) <= 8:
        return _create(store, key, stream, name, args[4], entries_read)
    assert stream is not None  # only CREATE takes MKSTREAM
    if sub == b"SETID" and group is not None and len(args) in (5, 7):
        start = stream.last if args[4] == b"$" else parse_id(args[4], strict=False)
        if start is None:
            return INVALID_ID
        group.last, group.entries_read = start, entries_read
        notify(store, key, b"xgroup-setid")
        return OK
    if sub == b"DESTROY" and len(args) == 4:
        if group is None:
            return ZERO
        del stream.groups[name]
        notify(store, key, b"xgroup-destroy")
        if key in store.blocked and key not in store.ready:  # its blocked readers get NOGROUP
            store.ready.append(key)
        return ONE
    if sub == b"CREATECONSUMER" and group is not None:
        if args[4] in group.consumers:
            return ZERO
        consumer_of(store, key, group, args[4])
        return ONE
    if sub == b"DELCONSUMER" and group is not None:
        consumer = group.consumers.pop(args[4], None)
        if consumer is None:
            return ZERO
        for entry_id in consumer.pending:
            del group.pending[entry_id]
        notify(store, key, b"xgroup-delconsumer")
        return integer(len(consumer.pending))
    return subcommand_syntax(args)


def _create(store: KeyValueStore, key: bytes, stream: Stream | None, name: bytes, text: bytes, entries_read: int
            ) -> Reply:  # fmt: skip
    if text == b"$":
        start = (0, 0) if stream is None else stream.last
    else:
        parsed = parse_id(text)
        if parsed is None:
            return INVALID_ID
        start = parsed
    if stream is None:
        stream = Stream()
        store.set(key, stream)
    if name in stream.groups:
        return error(b"BUSYGROUP Consumer Group name already exists")
    stream.groups[name] = ConsumerGroup(start, entries_read)
    notify(store, key, b"xgroup-create")
    return OK


STREAM_GROUPS: dict[bytes, Entry] = {
    b"XGROUP": (_xgroup, 2, MANY),
}
"""XGROUP for the keyspace table (XREAD and XREADGROUP, which may block, are resp_server.stream_reads')."""
