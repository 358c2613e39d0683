"""What the RESP example shares beyond the keyspace: the clients, pub/sub channels, config and counters, and the
commands that act on a session or on the server rather than on keys (HELLO, CLIENT, INFO, CONFIG, WATCH, pub/sub).

A session command is ``(session, args) -> Reply``; :data:`SESSION_COMMANDS` maps names to them with their arity.
Everything here runs under the same lock as the keyspace (the RESP handler's), so a publish sees a consistent set of
subscribers, and delivers each message with the subscriber's thread-safe ``push`` (``conn.async_write``): a
subscriber on another event loop gets it on its own loop.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resp_server.blocking import BLOCKING
from resp_server.replies import (
    MANY,
    OK,
    Reply,
    arity_error,
    array,
    bulk,
    c_string,
    error,
    parse_int64,
)
from resp_server.server_info import (
    VERSION,
    config_command,
    function_command,
    info_command,
    lolwut_command,
    map_reply,
    time_command,
)
from resp_server.store import glob_match

if TYPE_CHECKING:
    from resp_server.session import RespSession

PUBSUB_LIMIT = 32 * 1024 * 1024
"""A subscriber that stops reading is cut off once this much output waits for it (Redis's client-output-buffer-limit
for pubsub, hard limit 32 MB): the RESP server runs with ``write_buffer_limit`` at this value."""

SubscribedOK = frozenset((b"SUBSCRIBE", b"PSUBSCRIBE", b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"PING", b"QUIT", b"RESET"))

REPLY_ON, REPLY_OFF, REPLY_SKIP_NEXT, REPLY_SKIP = 0, 1, 2, 3
"""CLIENT REPLY's modes: every reply; none; none for this command and the next; none for this one."""

_CONFIG_DEFAULTS = {
    b"save": b"",
    b"appendonly": b"no",
    b"databases": b"1",
    b"maxmemory": b"0",
    b"maxmemory-policy": b"noeviction",
    b"timeout": b"0",
    b"port": b"6379",
    b"bind": b"127.0.0.1",
    b"hz": b"10",
    b"maxclients": b"10000",
    b"lua-time-limit": b"5000",
    b"busy-reply-threshold": b"5000",
    b"list-max-ziplist-size": b"-2",
    b"list-max-listpack-size": b"-2",
    b"hash-max-ziplist-entries": b"512",
    b"hash-max-listpack-entries": b"512",
    b"hash-max-ziplist-value": b"64",
    b"hash-max-listpack-value": b"64",
    b"set-max-intset-entries": b"512",
    b"zset-max-ziplist-entries": b"128",
    b"zset-max-listpack-entries": b"128",
    b"zset-max-ziplist-value": b"64",
    b"zset-max-listpack-value": b"64",
    b"list-compress-depth": b"0",
    b"stream-node-max-entries": b"100",
    b"stream-node-max-bytes": b"4096",
    b"client-query-buffer-limit": b"1073741824",
    b"sanitize-dump-payload": b"no",
    b"rdb-key-save-delay": b"0",
    b"min-replicas-to-write": b"0",
    b"replica-serve-stale-data": b"yes",
    b"notify-keyspace-events": b"",
    b"proto-max-bulk-len": b"536870912",
    b"client-output-buffer-limit": b"normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
    b"appendfsync": b"everysec",
    b"lazyfree-lazy-user-del": b"no",
    b"lazyfree-lazy-user-flush": b"no",
    b"io-threads": b"1",
    b"replica-read-only": b"yes",
    b"activedefrag": b"no",
    b"latency-tracking": b"yes",
}


class ServerState:
    """The clients, channels and counters of one RESP server (shared by its sessions; guarded by their lock)."""

    def __init__(self, port: int = 0) -> None:
        self.started = time.time()
        self.ids = itertools.count(1)
        self.clients: dict[int, RespSession] = {}
        self.channels: dict[bytes, set[RespSession]] = {}
        self.notify_classes = ""
        """The keyspace notifications' classes (notify-keyspace-events, parsed): none by default."""
        self.blocked: set[RespSession] = set()
        """Sessions waiting on a blocking command (the ticker answers those whose timeout passed)."""
        self.patterns: dict[bytes, set[RespSession]] = {}
        self.config = dict(_CONFIG_DEFAULTS)
        self.config[b"port"] = b"%d" % port
        self.port = port
        self.connections = 0  # clients ever registered
        self.info_calls = 0

    def register(self, session: RespSession) -> int:
        client_id = next(self.ids)
        self.clients[client_id] = session
        self.connections += 1
        return client_id

    def unregister(self, session: RespSession) -> None:
        self.clients.pop(session.client_id, None)
        for channel in list(session.channels):
            self._drop(self.channels, channel, session)
        for pattern in list(session.patterns):
            self._drop(self.patterns, pattern, session)
        session.channels.clear()
        session.patterns.clear()

    @staticmethod
    def _drop(table: dict[bytes, set[RespSession]], name: bytes, session: RespSession) -> None:
        members = table.get(name)
        if members is not None:
            members.discard(session)
            if not members:
                del table[name]

    def publish(self, channel: bytes, message: bytes) -> int:
        """Deliver ``message`` to every subscriber of ``channel`` and of a matching pattern; how many got it."""
        count = 0
        for session in list(self.channels.get(channel, ())):
            session.deliver(b"message", None, channel, message)
            count += 1
        for pattern, sessions in list(self.patterns.items()):
            if glob_match(pattern, channel):
                for session in list(sessions):
                    session.deliver(b"pmessage", pattern, channel, message)
                    count += 1
        return count


SessionCommand = Callable[["RespSession", list[bytes]], Reply]


def _push_header(session: RespSession, size: int) -> bytes:
    return (b">%d\r\n" if session.proto == 3 else b"*%d\r\n") % size


def _subscription_reply(session: RespSession, kind: bytes, name: bytes | None, count: int) -> bytes:
    header = _push_header(session, 3) + b"$%d\r\n%b\r\n" % (len(kind), kind)
    if name is None:
        return header + session.encoder.nil + b":%d\r\n" % count
    return header + b"$%d\r\n%b\r\n:%d\r\n" % (len(name), name, count)


# -- pub/sub -----------------------------------------------------------------------------------------------------


def _subscribe(session: RespSession, args: list[bytes]) -> Reply:
    pattern = args[0].upper() == b"PSUBSCRIBE"
    table = session.server.patterns if pattern else session.server.channels
    mine = session.patterns if pattern else session.channels
    replies = []
    for name in args[1:]:
        if name not in mine:
            mine.add(name)
            table.setdefault(name, set()).add(session)
        count = len(session.channels) + len(session.patterns)
        replies.append(_subscription_reply(session, b"psubscribe" if pattern else b"subscribe", name, count))
    session.subscriptions_changed()
    return b"".join(replies)


def _unsubscribe(session: RespSession, args: list[bytes]) -> Reply:
    pattern = args[0].upper() == b"PUNSUBSCRIBE"
    table = session.server.patterns if pattern else session.server.channels
    mine = session.patterns if pattern else session.channels
    kind = b"punsubscribe" if pattern else b"unsubscribe"
    names = args[1:] or sorted(mine)
    replies = []
    for name in names:
        if name in mine:
            mine.discard(name)
            ServerState._drop(table, name, session)
        replies.append(_subscription_reply(session, kind, name, len(session.channels) + len(session.patterns)))
    if not replies:
        replies.append(_subscription_reply(session, kind, None, len(session.channels) + len(session.patterns)))
    session.subscriptions_changed()
    return b"".join(replies)


def _publish(session: RespSession, args: list[bytes]) -> Reply:
    return b":%d\r\n" % session.server.publish(args[1], args[2])


def _pubsub(session: RespSession, args: list[bytes]) -> Reply:
    sub = args[1].upper()
    server = session.server
    if sub == b"CHANNELS" and len(args) <= 3:
        names = sorted(server.channels)
        if len(args) == 3:
            names = [n for n in names if glob_match(args[2], n)]
        return array(names)
    if sub == b"NUMSUB":
        parts = [b"*%d\r\n" % (2 * (len(args) - 2))]  # a flat array in both protocols, as Redis answers
        for name in args[2:]:
            parts.append(bulk(name) + b":%d\r\n" % len(server.channels.get(name, ())))  # type: ignore[operator]
        return b"".join(parts)
    if sub == b"NUMPAT" and len(args) == 2:
        return b":%d\r\n" % len(server.patterns)
    return error(b"ERR unknown subcommand or wrong number of arguments for '%b'. Try PUBSUB HELP." % args[1])


def _ping(session: RespSession, args: list[bytes]) -> Reply:
    if len(args) > 2:
        return arity_error(b"ping")
    if session.proto == 2 and (session.channels or session.patterns):
        return b"*2\r\n$4\r\npong\r\n" + bulk(args[1] if len(args) == 2 else b"")  # type: ignore[operator]
    return b"+PONG\r\n" if len(args) == 1 else bulk(args[1])


# -- the connection: HELLO, AUTH, CLIENT, RESET ------------------------------------------------------------------


def _hello(session: RespSession, args: list[bytes]) -> Reply:
    proto = session.proto
    i = 1
    if len(args) > 1:
        version = parse_int64(args[1])
        if version is None:
            return error(b"ERR Protocol version is not an integer or out of range")
        if version not in (2, 3):
            return error(b"NOPROTO unsupported protocol version")
        proto = version
        i = 2
    while i < len(args):
        option = args[i].upper()
        if option == b"AUTH" and i + 2 < len(args):
            if args[i + 1] != b"default":
                return error(b"WRONGPASS invalid username-password pair or user is disabled.")
            i += 3
        elif option == b"SETNAME" and i + 1 < len(args):
            if not _valid_name(args[i + 1]):
                return error(b"ERR Client names cannot contain spaces, newlines or special characters.")
            session.name = args[i + 1]  # at once, as Redis does: an error in a later option leaves it set
            i += 2
        else:
            return error(b"ERR Syntax error in HELLO option '%b'" % c_string(args[i]))
    session.set_protocol(proto)
    return map_reply(
        session,
        [
            (b"server", bulk(b"redis")),
            (b"version", bulk(VERSION)),
            (b"proto", b":%d\r\n" % proto),
            (b"id", b":%d\r\n" % session.client_id),
            (b"mode", bulk(b"standalone")),
            (b"role", bulk(b"master")),
            (b"modules", b"*0\r\n"),
        ],
    )


def _auth(session: RespSession, args: list[bytes]) -> Reply:
    if len(args) == 2:
        return error(
            b"ERR AUTH <password> called without any password configured for the default user. "
            b"Are you sure your configuration is correct?"
        )
    if len(args) == 3 and args[1] == b"default":
        return OK
    return error(b"WRONGPASS invalid username-password pair or user is disabled.")


def _valid_name(name: bytes) -> bool:
    return all(33 <= c <= 126 for c in name)


def client_line(session: RespSession, now: float) -> bytes:
    """The session as one line of CLIENT LIST / CLIENT INFO."""
    flags = b"P" if session.channels or session.patterns else b"N"
    if session.in_multi:
        flags += b"x"
    return (
        b"id=%d addr=%b laddr=%b fd=%d name=%b age=%d idle=0 flags=%b db=0 sub=%d psub=%d ssub=0 multi=%d "
        b"qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r "
        b"cmd=%b user=default redir=-1 resp=%d"
        % (
            session.client_id,
            session.addr,
            session.laddr,
            session.fd,
            session.name or b"",
            int(now - session.created),
            flags,
            len(session.channels),
            len(session.patterns),
            len(session.queued) if session.in_multi else -1,
            session.last_command,
            session.proto,
        )
    )


def _client(session: RespSession, args: list[bytes]) -> Reply:
    sub = args[1].upper()
    if sub == b"ID" and len(args) == 2:
        return b":%d\r\n" % session.client_id
    if sub == b"SETNAME" and len(args) == 3:
        if not _valid_name(args[2]):
            return error(b"ERR Client names cannot contain spaces, newlines or special characters.")
        session.name = args[2] or None
        return OK
    if sub == b"GETNAME" and len(args) == 2:
        return session.encoder.bulk(session.name)
    if sub == b"INFO" and len(args) == 2:
        return bulk(client_line(session, time.time()) + b"\n")
    if sub == b"LIST":
        return _client_list(session, args)
    if sub == b"KILL":
        return _client_kill(session, args)
    if sub == b"SETINFO" and len(args) == 4:
        if args[2].upper() not in (b"LIB-NAME", b"LIB-VER"):
            return error(b"ERR Unrecognized option '%b'" % c_string(args[2]))
        return OK
    if sub in (b"NO-EVICT", b"NO-TOUCH") and len(args) == 3:
        return OK if args[2].upper() in (b"ON", b"OFF") else error(b"ERR syntax error")
    if sub == b"UNBLOCK" and len(args) in (3, 4):
        return _client_unblock(session, args)
    if sub == b"REPLY" and len(args) == 3:
        modes = {b"ON": REPLY_ON, b"OFF": REPLY_OFF, b"SKIP": REPLY_SKIP_NEXT}
        mode = modes.get(args[2].upper())
        if mode is None:
            return error(b"ERR syntax error")
        session.reply_mode = mode
        session.subscriptions_changed()
        return OK
    if sub == b"HELP":
        lines = [b"CLIENT <subcommand>", b"ID", b"INFO", b"LIST", b"KILL", b"SETNAME", b"GETNAME", b"SETINFO"]
        return array(lines)
    return error(b"ERR unknown subcommand or wrong number of arguments for '%b'. Try CLIENT HELP." % args[1])


def _client_unblock(session: RespSession, args: list[bytes]) -> Reply:
    """CLIENT UNBLOCK id [TIMEOUT|ERROR]: end a client's blocking command with a null, or with an error."""
    how = args[3].upper() if len(args) == 4 else b"TIMEOUT"
    if how not in (b"TIMEOUT", b"ERROR"):  # Redis checks the reason before the id
        return error(b"ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    client_id = parse_int64(args[2])
    if client_id is None:
        return error(b"ERR value is not an integer or out of range")
    target = session.server.clients.get(client_id)
    if target is None or target.blocker is None:
        return b":0\r\n"
    if how == b"ERROR":
        target.unblock(b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n")
    else:
        target.unblock(target.encoder.nil_array)
    return b":1\r\n"


def _client_list(session: RespSession, args: list[bytes]) -> Reply:
    sessions = sorted(session.server.clients.values(), key=lambda s: s.client_id)
    i = 2
    while i < len(args):
        option = args[i].upper()
        if option == b"TYPE" and i + 1 < len(args):
            kind = args[i + 1].lower()
            if kind not in (b"normal", b"pubsub", b"master", b"replica", b"slave"):
                return error(b"ERR Unknown client type '%b'" % c_string(args[i + 1]))
            pubsub = kind == b"pubsub"
            sessions = [
                s for s in sessions if bool(s.channels or s.patterns) == pubsub and kind in (b"normal", b"pubsub")
            ]
            i += 2
        elif option == b"ID" and i + 1 < len(args):
            wanted = set()
            for text in args[i + 1 :]:
                value = parse_int64(text)
                if value is None or value <= 0:
                    return error(b"ERR Invalid client ID")
                wanted.add(value)
            sessions = [s for s in sessions if s.client_id in wanted]
            break
        else:
            return error(b"ERR syntax error")
    now = time.time()
    return bulk(b"".join(client_line(s, now) + b"\n" for s in sessions))


def _client_kill(session: RespSession, args: list[bytes]) -> Reply:
    server = session.server
    if len(args) == 2:  # a bare CLIENT KILL is an error, not a filter that matches every client
        return arity_error(b"client|kill")
    if len(args) == 3:  # the old form: CLIENT KILL ip:port
        victims = [s for s in server.clients.values() if s.addr == args[2]]
        if not victims:
            return error(b"ERR No such client")
        for victim in victims:
            victim.kill()
        return OK
    if len(args) % 2:
        return error(b"ERR syntax error")
    chosen = list(server.clients.values())
    skip_me = True
    for i in range(2, len(args), 2):
        option, value = args[i].upper(), args[i + 1]
        if option == b"ID":
            number = parse_int64(value)
            if number is None or number <= 0:
                return error(b"ERR client-id should be greater than 0")
            chosen = [s for s in chosen if s.client_id == number]
        elif option == b"ADDR":
            chosen = [s for s in chosen if s.addr == value]
        elif option == b"LADDR":
            chosen = [s for s in chosen if s.laddr == value]
        elif option == b"TYPE":
            kind = value.lower()
            if kind not in (b"normal", b"pubsub", b"master", b"replica", b"slave"):
                return error(b"ERR Unknown client type '%b'" % c_string(value))
            pubsub = kind == b"pubsub"
            chosen = [s for s in chosen if bool(s.channels or s.patterns) == pubsub and kind in (b"normal", b"pubsub")]
        elif option == b"USER":
            if value != b"default":
                return error(b"ERR No such user '%b'" % c_string(value))
        elif option == b"SKIPME":
            if value.lower() not in (b"yes", b"no"):
                return error(b"ERR syntax error")
            skip_me = value.lower() == b"yes"
        else:
            return error(b"ERR syntax error")
    if skip_me:
        chosen = [s for s in chosen if s is not session]
    for victim in chosen:
        victim.kill()
    return b":%d\r\n" % len(chosen)


def _reset(session: RespSession, args: list[bytes]) -> Reply:
    session.reset()
    return b"+RESET\r\n"


def _watch(session: RespSession, args: list[bytes]) -> Reply:
    if session.in_multi:
        return error(b"ERR WATCH inside MULTI is not allowed")
    watchers = session.store.watchers
    for key in args[1:]:
        if key not in session.watching:
            session.watching.add(key)
            watchers.setdefault(key, set()).add(session)
    return OK


def _unwatch(session: RespSession, args: list[bytes]) -> Reply:
    session.unwatch()
    return OK


def _block(session: RespSession, args: list[bytes]) -> Reply:
    return session.block(args)


SESSION_COMMANDS: dict[bytes, tuple[SessionCommand, int, int]] = {
    b"PING": (_ping, 1, MANY),
    b"HELLO": (_hello, 1, MANY),
    b"AUTH": (_auth, 2, 3),
    b"CLIENT": (_client, 2, MANY),
    b"RESET": (_reset, 1, 1),
    b"SUBSCRIBE": (_subscribe, 2, MANY),
    b"PSUBSCRIBE": (_subscribe, 2, MANY),
    b"UNSUBSCRIBE": (_unsubscribe, 1, MANY),
    b"PUNSUBSCRIBE": (_unsubscribe, 1, MANY),
    b"PUBLISH": (_publish, 3, 3),
    b"PUBSUB": (_pubsub, 2, MANY),
    b"INFO": (info_command, 1, MANY),
    b"CONFIG": (config_command, 2, MANY),
    b"TIME": (time_command, 1, 1),
    b"FUNCTION": (function_command, 2, MANY),
    b"WATCH": (_watch, 2, MANY),
    b"UNWATCH": (_unwatch, 1, 1),
    b"LOLWUT": (lolwut_command, 1, MANY),
    **{name: (_block, low, high) for name, (_, low, high) in BLOCKING.items()},
}
"""Commands on the session or the server, by name, with their arity (name included)."""

NOT_QUEUED = frozenset((b"WATCH", b"RESET"))
"""Session commands that MULTI does not queue (they answer at once)."""

NO_MULTI = frozenset((b"SAVE", b"SHUTDOWN"))
"""Commands Redis refuses inside MULTI (and aborts the transaction), which this server does not run otherwise."""


def local_name(sock_name: Any) -> bytes:
    """``host:port`` of a socket address, as CLIENT LIST shows it."""
    if isinstance(sock_name, tuple):
        host = sock_name[0]
        return (f"[{host}]:{sock_name[1]}" if ":" in host else f"{host}:{sock_name[1]}").encode()
    return str(sock_name).encode() if sock_name else b"unknown"
