"""The commands that act on the server rather than on keys or a session: INFO, CONFIG (GET, SET with Redis's checks
of each value's type, RESETSTAT), TIME, FUNCTION, LOLWUT. Each is ``(session, args) -> Reply``; the table of session
commands in :mod:`resp_server.server_state` lists them."""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import TYPE_CHECKING, Any

from resp_server.notifications import flags_text, parse_flags
from resp_server.replies import OK, Reply, arity_error, array, bulk, c_string, error, join_replies, parse_int64
from resp_server.store import glob_match

if TYPE_CHECKING:
    from resp_server.session import RespSession

VERSION = b"7.0.15"
"""The Redis version this server says it is compatible with (HELLO, INFO)."""


def map_reply(session: RespSession, pairs: list[tuple[bytes, Reply]]) -> Reply:
    """A map of names to replies in the session's protocol (a flat array in RESP2)."""
    parts: list[Reply] = [session.encoder.map_header(len(pairs))]
    for name, value in pairs:
        parts.append(bulk(name))
        parts.append(value)
    return join_replies(parts)


# -- the server: INFO, CONFIG, TIME, FUNCTION, SELECT ------------------------------------------------------------

_DEFAULT_SECTIONS = (
    "server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules", "errorstats", "cluster",
    "keyspace",
)  # fmt: skip
_ALL_SECTIONS = (*_DEFAULT_SECTIONS, "commandstats", "latencystats")


def info_command(session: RespSession, args: list[bytes]) -> Reply:
    server = session.server
    server.info_calls += 1
    wanted: list[str] = []
    for arg in args[1:] or [b"default"]:
        name = arg.decode("latin-1").lower()
        if name == "default":
            wanted += _DEFAULT_SECTIONS
        elif name in ("all", "everything"):
            wanted += _ALL_SECTIONS
        else:
            wanted.append(name)
    seen: set[str] = set()
    blocks = []
    for name in wanted:
        if name in seen:
            continue
        seen.add(name)
        fields = _section(session, name)
        if fields is not None:
            title = "Keyspace" if name == "keyspace" else name.capitalize() if name != "cpu" else "CPU"
            blocks.append(f"# {title}\r\n" + "".join(f"{k}:{v}\r\n" for k, v in fields))
    return bulk("\r\n".join(blocks).encode())


def _section(session: RespSession, name: str) -> list[tuple[str, Any]] | None:
    server = session.server
    store = session.store
    if name == "server":
        uptime = int(time.time() - server.started)
        return [
            ("redis_version", VERSION.decode()),
            ("redis_git_sha1", "00000000"),
            ("redis_mode", "standalone"),
            ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
            ("arch_bits", 64),
            ("multiplexing_api", "epoll" if hasattr(__import__("select"), "epoll") else "poll"),
            ("process_id", os.getpid()),
            ("tcp_port", server.port),
            ("server_time_usec", time.time_ns() // 1000),
            ("uptime_in_seconds", uptime),
            ("mem_allocator", "libc"),
            ("uptime_in_days", uptime // 86400),
            ("hz", 10),
            ("executable", "netloop resp_server.server"),
        ]
    if name == "clients":
        pubsub = sum(1 for s in server.clients.values() if s.channels or s.patterns)
        return [
            ("connected_clients", len(server.clients)),
            ("maxclients", 10000),
            ("blocked_clients", len(server.blocked)),
            ("pubsub_clients", pubsub),
        ]
    if name == "memory":
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return [
            ("used_memory", rss),
            ("used_memory_human", f"{rss / 1048576:.2f}M"),
            ("used_memory_rss", rss),
            ("maxmemory", 0),
            ("maxmemory_policy", "noeviction"),
        ]
    if name == "persistence":
        return [("loading", 0), ("rdb_changes_since_last_save", 0), ("aof_enabled", 0)]
    if name == "stats":
        return [
            ("total_connections_received", server.connections),
            ("expired_keys", 0),
            ("keyspace_hits", 0),
            ("keyspace_misses", 0),
            ("pubsub_channels", len(server.channels)),
            ("pubsub_patterns", len(server.patterns)),
        ]
    if name == "replication":
        return [("role", "master"), ("connected_slaves", 0), ("master_repl_offset", 0)]
    if name == "cpu":
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return [
            ("used_cpu_sys", f"{own.ru_stime:.6f}"),
            ("used_cpu_user", f"{own.ru_utime:.6f}"),
            ("used_cpu_sys_children", f"{children.ru_stime:.6f}"),
            ("used_cpu_user_children", f"{children.ru_utime:.6f}"),
        ]
    if name in ("modules", "errorstats", "latencystats"):
        return []
    if name == "cluster":
        return [("cluster_enabled", 0)]
    if name == "commandstats":
        # Only INFO's own calls are counted: the other commands run on the hot path, uncounted.
        return [
            ("cmdstat_info", f"calls={server.info_calls},usec=0,usec_per_call=0.00,rejected_calls=0,failed_calls=0")
        ]
    if name == "keyspace":
        keys = len(store)
        return [("db0", f"keys={keys},expires={store.volatile_count()},avg_ttl=0")] if keys else []
    return None


# How CONFIG SET checks a value (Redis's config types), by name; a name not listed takes any value.
_MEMORY_CONFIGS = frozenset(
    (b"maxmemory", b"proto-max-bulk-len", b"client-query-buffer-limit", b"stream-node-max-bytes")
)
_YES_NO_CONFIGS = frozenset(
    (b"appendonly", b"lazyfree-lazy-user-del", b"lazyfree-lazy-user-flush", b"replica-read-only", b"activedefrag",
     b"latency-tracking", b"replica-serve-stale-data")
)  # fmt: skip
_INTEGER_CONFIGS = frozenset(
    (b"timeout", b"hz", b"maxclients", b"lua-time-limit", b"busy-reply-threshold", b"list-max-ziplist-size",
     b"list-max-listpack-size", b"hash-max-ziplist-entries", b"hash-max-listpack-entries", b"hash-max-ziplist-value",
     b"hash-max-listpack-value", b"set-max-intset-entries", b"zset-max-ziplist-entries", b"zset-max-listpack-entries",
     b"port", b"zset-max-ziplist-value", b"zset-max-listpack-value", b"list-compress-depth", b"stream-node-max-entries",
     b"rdb-key-save-delay", b"min-replicas-to-write")
)  # fmt: skip
_IMMUTABLE_CONFIGS = frozenset((b"databases", b"io-threads"))
_MEMORY_UNITS = {b"": 1, b"b": 1, b"k": 1000, b"kb": 1024, b"m": 1000**2, b"mb": 1024**2, b"g": 1000**3, b"gb": 1024**3}


def _config_value(name: bytes, value: bytes) -> bytes | str:
    """``value`` as CONFIG SET stores it for ``name`` (a memory amount in bytes), or why Redis refuses it."""
    if name in _IMMUTABLE_CONFIGS:
        return "can't set immutable config"
    if name in _YES_NO_CONFIGS:
        return value.lower() if value.lower() in (b"yes", b"no") else "argument must be 'yes' or 'no'"
    if name in _INTEGER_CONFIGS:
        return value if parse_int64(value) is not None else "argument couldn't be parsed into an integer"
    if name in _MEMORY_CONFIGS:
        # Redis's memtoull: the leading digits (none reads as 0; too many saturate) times the unit, modulo 2**64.
        digits = value[: len(value) - len(value.lstrip(b"0123456789"))]
        scale = _MEMORY_UNITS.get(value[len(digits) :].lower())
        if scale is None or len(digits) >= 128:
            return "argument must be a memory value"
        return b"%d" % (min(int(digits or b"0"), 2**64 - 1) * scale % 2**64)
    return value


def config_command(session: RespSession, args: list[bytes]) -> Reply:
    sub = args[1].upper()
    config = session.server.config
    if sub == b"GET" and len(args) >= 3:
        found: dict[bytes, bytes] = {}
        for pattern in args[2:]:
            lowered = pattern.lower()
            found.update((name, value) for name, value in config.items() if glob_match(lowered, name))
        pairs = [(name, bulk(value)) for name, value in found.items()]
        return map_reply(session, pairs)
    if sub == b"SET" and len(args) >= 4 and len(args) % 2:
        return error(b"ERR syntax error")
    if sub == b"SET" and len(args) >= 4 and len(args) % 2 == 0:
        for i in range(2, len(args), 2):
            name = args[i].lower()
            if name not in config:
                return error(b"ERR Unknown option or number of arguments for CONFIG SET - '%b'" % c_string(args[i]))
        values = {}
        for i in range(2, len(args), 2):
            name = args[i].lower()
            value = _config_value(name, args[i + 1])
            if isinstance(value, str):
                return error(b"ERR CONFIG SET failed (possibly related to argument '%b') - %b" % (name, value.encode()))
            values[name] = value
        if b"notify-keyspace-events" in values:
            classes = parse_flags(values[b"notify-keyspace-events"])
            if classes is None:
                return error(
                    b"ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event"
                    b" class character. Use 'Ag$lshzxeKEtmdn'."
                )
            values[b"notify-keyspace-events"] = flags_text(classes)
            session.server.notify_classes = classes
            session.store.notifying = "K" in classes or "E" in classes
        config.update(values)
        return OK
    if sub == b"RESETSTAT" and len(args) == 2:
        return OK
    if sub in (b"GET", b"SET"):
        return arity_error(b"config|" + sub.lower())
    return error(b"ERR unknown subcommand '%b'. Try CONFIG HELP." % c_string(args[1])[:128])


def time_command(session: RespSession, args: list[bytes]) -> Reply:
    now = time.time_ns() // 1000
    return array([b"%d" % (now // 1_000_000), b"%d" % (now % 1_000_000)])


def function_command(session: RespSession, args: list[bytes]) -> Reply:
    sub = args[1].upper()
    if sub == b"FLUSH" and (len(args) == 2 or (len(args) == 3 and args[2].upper() in (b"ASYNC", b"SYNC"))):
        return OK  # no function was ever loaded
    if sub == b"LIST":
        return b"*0\r\n"
    if sub == b"STATS":
        return map_reply(session, [(b"running_script", session.encoder.nil), (b"engines", b"*0\r\n")])
    return error(b"ERR this server has no scripting: FUNCTION %b is not supported" % args[1][:32])


def lolwut_command(session: RespSession, args: list[bytes]) -> Reply:
    return bulk(b"netloop RESP example, Redis " + VERSION + b" compatible\n")
