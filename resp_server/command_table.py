"""The keyspace command tables a session dispatches to, one per protocol: the core commands and every family's,
each :class:`~resp_server.replies.PerProtocol` command bound to that protocol's encoder, RESP3's variants in
RESP3's table. PING and the commands on the session or the server are :mod:`resp_server.server_state`'s."""

from __future__ import annotations

from resp_server.bitops import BITOPS
from resp_server.commands import COMMANDS, GET3, SET3
from resp_server.container_ops import CONTAINER_OPS
from resp_server.containers import CONTAINERS, RESP3_VARIANTS
from resp_server.replies import RESP2, RESP3, Command, bind_table
from resp_server.server_state import SESSION_COMMANDS
from resp_server.sorted_sets import SORTED, ZADD3
from resp_server.stream_groups import STREAM_GROUPS
from resp_server.stream_info import STREAM_INFO
from resp_server.stream_pending import STREAM_PENDING
from resp_server.streams import STREAMS
from resp_server.strings import STRINGS
from resp_server.zset_ops import ZSET_OPS
from resp_server.zset_ranges import ZSET_RANGES

_TABLE = {
    name: entry
    for name, entry in {
        **COMMANDS,
        **STRINGS,
        **CONTAINERS,
        **CONTAINER_OPS,
        **SORTED,
        **ZSET_RANGES,
        **ZSET_OPS,
        **STREAMS,
        **STREAM_GROUPS,
        **STREAM_PENDING,
        **STREAM_INFO,
        **BITOPS,
    }.items()
    if name not in SESSION_COMMANDS
}
_VARIANTS3 = {b"GET": GET3, b"SET": SET3, b"ZADD": ZADD3, **RESP3_VARIANTS}

KEYSPACE: dict[bytes, tuple[Command, int, int]] = bind_table(_TABLE, RESP2)
"""Keyspace commands by upper-case name, with their arity (name included), for a RESP2 session."""

KEYSPACE3: dict[bytes, tuple[Command, int, int]] = bind_table(
    {**_TABLE, **{name: (run, *_TABLE[name][1:]) for name, run in _VARIANTS3.items()}}, RESP3
)
"""The same for a RESP3 session."""

PING = bind_table({b"PING": COMMANDS[b"PING"]}, RESP2)
"""PING outside subscribed mode, where its reply is the same in both protocols: the busiest command takes the fast
path (it is a session command too, which answers it in subscribed mode)."""
