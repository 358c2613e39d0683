"""Redis 7.0's container commands (CONFIG, CLIENT, OBJECT...): their subcommands and each one's arity.

Redis looks a subcommand up before it runs or queues the command: an unknown one, or one with the wrong number of
arguments, is refused there (and inside MULTI it aborts the transaction), whatever this server implements of it.
"""

from __future__ import annotations

from resp_server.replies import arity_error, c_string, error

# Arity as Redis declares it: n means exactly n arguments (the command and subcommand names included), -n at least n.
SUBCOMMANDS: dict[bytes, dict[bytes, int]] = {
    b"CONFIG": {b"GET": -3, b"SET": -4, b"RESETSTAT": 2, b"REWRITE": 2, b"HELP": 2},
    b"CLIENT": {
        b"KILL": -3, b"LIST": -2, b"ID": 2, b"INFO": 2, b"SETNAME": 3, b"GETNAME": 2, b"PAUSE": -3, b"UNPAUSE": 2,
        b"REPLY": 3, b"NO-EVICT": 3, b"TRACKING": -3, b"CACHING": 3, b"GETREDIR": 2, b"TRACKINGINFO": 2,
        b"UNBLOCK": -3, b"HELP": 2,
    },
    b"OBJECT": {b"ENCODING": 3, b"REFCOUNT": 3, b"IDLETIME": 3, b"FREQ": 3, b"HELP": 2},
    b"MEMORY": {b"USAGE": -3, b"STATS": 2, b"DOCTOR": 2, b"MALLOC-STATS": 2, b"PURGE": 2, b"HELP": 2},
    b"XINFO": {b"STREAM": -3, b"GROUPS": 3, b"CONSUMERS": 4, b"HELP": 2},
    b"XGROUP": {b"CREATE": -5, b"SETID": -5, b"DESTROY": 4, b"CREATECONSUMER": 5, b"DELCONSUMER": 5, b"HELP": 2},
    b"COMMAND": {
        b"COUNT": 2, b"DOCS": -2, b"INFO": -2, b"LIST": -2, b"GETKEYS": -3, b"GETKEYSANDFLAGS": -3, b"HELP": 2,
    },
    b"FUNCTION": {
        b"DELETE": 3, b"DUMP": 2, b"FLUSH": -2, b"HELP": 2, b"KILL": 2, b"LIST": -2, b"LOAD": -3, b"RESTORE": -3,
        b"STATS": 2,
    },
    b"PUBSUB": {b"CHANNELS": -2, b"NUMSUB": -2, b"NUMPAT": 2, b"SHARDCHANNELS": -2, b"SHARDNUMSUB": -2, b"HELP": 2},
}  # fmt: skip


def subcommand_error(name: bytes, args: list[bytes]) -> bytes | None:
    """Redis's refusal of ``args`` (a container command ``name`` with its subcommand), or None when it is known
    and has an allowed number of arguments."""
    table = SUBCOMMANDS.get(name)
    if table is None or len(args) < 2:
        return None
    sub = args[1].upper()
    arity = table.get(sub)
    if arity is None:
        return error(b"ERR unknown subcommand '%b'. Try %b HELP." % (c_string(args[1])[:128], name))
    if len(args) != arity if arity > 0 else len(args) < -arity:
        return arity_error(name + b"|" + sub)
    return None
