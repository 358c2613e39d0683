"""Sans-I/O RESP2: a request parser and a session that turns request bytes into reply bytes.

Nothing here touches a socket. :class:`RespParser` splits a byte stream into commands (multibulk arrays of
bulk strings, or inline space-separated lines), whatever the chunking. :class:`RespSession` runs those
commands against a :class:`~examples.kvstore.KeyValueStore` and hands back the replies of a whole batch at
once, so a transport writes once per read. The same session class serves the netloop server and any
other transport wrapped around it; only the bytes in and out matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from examples.kvstore import KeyValueStore, glob_match

MAX_BULK = 64 * 1024 * 1024
"""Largest bulk string accepted by default (Redis allows 512 MiB; that is more than this server wants)."""

MAX_ARRAY = 1024 * 1024
"""Most elements accepted in one multibulk request by default."""

MAX_INLINE = 64 * 1024
"""Longest inline request or length line accepted by default (Redis's PROTO_INLINE_MAX_SIZE)."""

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


def encode_request(args: Iterable[bytes]) -> bytes:
    """``args`` as one RESP multibulk request, the form clients such as redis-cli send."""
    items = list(args)
    parts = [b"*%d\r\n" % len(items)]
    parts.extend(b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in items)
    return b"".join(parts)


class RespParser:
    """Incremental RESP2 request parser: feed it bytes as they arrive, get back the commands completed.

    A command is a non-empty list of byte strings (the command name first). Requests may be split at any
    byte and many may arrive in one chunk. Once a request is malformed or exceeds a limit, :attr:`error`
    holds the reason (``"Protocol error: ..."``) and the parser yields nothing more. Memory held for a
    request never exceeds the limits plus the bytes actually received, whatever lengths it declares.
    """

    __slots__ = ("_args", "_bulk", "_line_error", "_need", "_pending", "_remaining", "error", "limits")

    def __init__(self, max_bulk: int = MAX_BULK, max_array: int = MAX_ARRAY, max_inline: int = MAX_INLINE) -> None:
        self.limits = (max_bulk, max_array, max_inline)
        self.error: str | None = None
        self._pending = bytearray()
        self._need = 0  # bytes that _pending must hold before parsing can move on
        self._line_error: str | None = None  # set while waiting for a line's end: the error if it grows too long
        self._args: list[bytes] | None = None  # the multibulk request in progress
        self._remaining = 0  # its elements still to come
        self._bulk = -1  # the declared length of the bulk string in progress, or -1 before its '$' line

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Consume ``data``; return the commands it completes, in order (empty commands are skipped)."""
        if self.error is not None:
            return []
        if self._pending:
            pending = self._pending
            pending += data
            if len(pending) < self._need:
                return []
            if self._line_error is not None and b"\n" not in data:
                if len(pending) > self.limits[2]:
                    self._fail(self._line_error)
                return []
            data = bytes(pending)
            self._pending = bytearray()
        commands: list[list[bytes]] = []
        pos = self._parse(data, commands)
        if pos < len(data) and self.error is None:
            self._pending = bytearray(data[pos:])
        return commands

    def _parse(self, data: bytes, commands: list[list[bytes]]) -> int:
        """Parse complete commands from ``data`` into ``commands``; return where the unparsed rest starts."""
        max_bulk, max_array, _ = self.limits
        end = len(data)
        pos = 0
        args = self._args
        remaining = self._remaining
        bulk = self._bulk
        while pos < end:
            if args is None:
                if data[pos] != 42:  # not '*': an inline request
                    eol = data.find(b"\n", pos)
                    if eol < 0:
                        return self._await_line(pos, end, None, 0, "Protocol error: too big inline request")
                    # A bare '\n' ends the line too, as Redis accepts from telnet-like clients.
                    words = split_inline(data[pos : eol - 1 if eol > pos and data[eol - 1] == 13 else eol])
                    pos = eol + 1
                    if words is None:
                        return self._fail("Protocol error: unbalanced quotes in request")
                    if words:
                        commands.append(words)
                    continue
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return self._await_line(pos, end, None, 0, "Protocol error: too big mbulk count string")
                count = parse_int64(data[pos + 1 : eol])
                if count is None or count > max_array:
                    return self._fail("Protocol error: invalid multibulk length")
                pos = eol + 2
                if count <= 0:
                    continue
                args = []
                remaining = count
            while remaining:
                if bulk < 0:
                    if pos >= end:
                        return self._suspend(pos, args, remaining, -1, 0, None)
                    if data[pos] != 36:  # '$'
                        return self._fail(f"Protocol error: expected '$', got '{chr(data[pos])}'")
                    eol = data.find(b"\r\n", pos)
                    if eol < 0:
                        return self._await_line(pos, end, args, remaining, "Protocol error: too big bulk count string")
                    length = parse_int64(data[pos + 1 : eol])
                    if length is None or length < 0 or length > max_bulk:
                        return self._fail("Protocol error: invalid bulk length")
                    bulk = length
                    pos = eol + 2
                if end - pos < bulk + 2:
                    return self._suspend(pos, args, remaining, bulk, bulk + 2, None)
                if data[pos + bulk : pos + bulk + 2] != b"\r\n":
                    return self._fail("Protocol error: expected CRLF after bulk data")
                args.append(data[pos : pos + bulk])
                pos += bulk + 2
                bulk = -1
                remaining -= 1
            commands.append(args)
            args = None
        return self._suspend(pos, None, 0, -1, 0, None)

    def _suspend(
        self, pos: int, args: list[bytes] | None, remaining: int, bulk: int, need: int, too_long: str | None
    ) -> int:
        """Keep the state of the request in progress until more bytes arrive; return ``pos``."""
        self._args = args
        self._remaining = remaining
        self._bulk = bulk
        self._need = need
        self._line_error = too_long
        return pos

    def _await_line(self, pos: int, end: int, args: list[bytes] | None, remaining: int, too_long: str) -> int:
        if end - pos > self.limits[2]:
            return self._fail(too_long)
        return self._suspend(pos, args, remaining, -1, 0, too_long)

    def _fail(self, message: str) -> int:
        self.error = message
        self._pending = bytearray()
        self._args = None
        return 0


_SPACE = b" \t\n\r\x0b\x0c"
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> list[bytes] | None:
    """Split an inline request into words as Redis's ``sdssplitargs`` does, quotes and escapes included;
    None when a quote is unbalanced or a closing quote is not followed by a space."""
    if b'"' not in line and b"'" not in line and b"\x0b" not in line and b"\x0c" not in line:
        return line.split()
    words: list[bytes] = []
    n = len(line)
    i = 0
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return words
        word = bytearray()
        quote = 0
        while True:
            if i >= n:
                if quote:
                    return None
                break
            c = line[i]
            if quote == 34:  # inside "...": backslash escapes, \xHH
                if c == 92 and i + 3 < n and line[i + 1] == 120 and line[i + 2] in _HEX and line[i + 3] in _HEX:
                    word.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    word += _ESCAPES.get(line[i], line[i : i + 1])
                elif c == 34:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    word.append(c)
            elif quote == 39:  # inside '...': only \' is an escape
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    word.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    word.append(c)
            elif c in b" \n\r\t":
                break
            elif c == 34 or c == 39:
                quote = c
            else:
                word.append(c)
            i += 1
        words.append(bytes(word))


OK = b"+OK\r\n"
NIL = b"$-1\r\n"
_ZERO = b":0\r\n"
_ONE = b":1\r\n"
_NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"
_SYNTAX = b"-ERR syntax error\r\n"
_OVERFLOW = b"-ERR increment or decrement would overflow\r\n"


def error(message: bytes) -> bytes:
    """An error reply; CR and LF inside ``message`` become spaces so the reply stays one line."""
    return b"-%b\r\n" % message.strip(b"\r\n").replace(b"\r", b" ").replace(b"\n", b" ")


def bulk(value: bytes | None) -> bytes:
    """A bulk string reply, or the nil reply for None."""
    return NIL if value is None else b"$%d\r\n%b\r\n" % (len(value), value)


def array(items: Iterable[bytes | None]) -> bytes:
    """An array reply of bulk strings (None items become nil)."""
    parts = [bulk(item) for item in items]
    return b"*%d\r\n%b" % (len(parts), b"".join(parts))


def _arity_error(name: bytes) -> bytes:
    return error(b"ERR wrong number of arguments for '%b' command" % name.lower())


def _expire_time_error(name: bytes) -> bytes:
    return error(b"ERR invalid expire time in '%b' command" % name)


def _subcommand_error(name: bytes, sub: bytes) -> bytes:
    return error(b"ERR unknown subcommand '%b'. Try %b HELP." % (sub[:128], name))


def _unknown_command(args: list[bytes]) -> bytes:
    shown = b""
    for arg in args[1:]:
        if len(shown) >= 128:
            break
        shown += b"'%b' " % arg[: 128 - len(shown)]
    return error(b"ERR unknown command '%b', with args beginning with: %b" % (args[0][:128], shown))


Command = Callable[[KeyValueStore, list[bytes]], bytes]


def _ping(store: KeyValueStore, args: list[bytes]) -> bytes:
    return b"+PONG\r\n" if len(args) == 1 else bulk(args[1])


def _echo(store: KeyValueStore, args: list[bytes]) -> bytes:
    return bulk(args[1])


def _get(store: KeyValueStore, args: list[bytes]) -> bytes:
    return bulk(store.get(args[1]))


# SET's expiry options: milliseconds per unit, and whether the amount is relative to now.
_SET_EXPIRY = {b"EX": (1000, True), b"PX": (1, True), b"EXAT": (1000, False), b"PXAT": (1, False)}


def _set(store: KeyValueStore, args: list[bytes]) -> bytes:
    if len(args) == 3:
        store.set(args[1], args[2])
        return OK
    nx = xx = get = keep_ttl = False
    expiry: bytes | None = None
    amount = b""
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option == b"NX" and not xx:
            nx = True
        elif option == b"XX" and not nx:
            xx = True
        elif option == b"GET":
            get = True
        elif option == b"KEEPTTL" and expiry is None:
            keep_ttl = True
        elif option in _SET_EXPIRY and not keep_ttl and expiry in (None, option) and i + 1 < len(args):
            expiry = option
            i += 1
            amount = args[i]
        else:
            return _SYNTAX
        i += 1
    deadline = None
    if expiry is not None:
        value = parse_int64(amount)
        if value is None:
            return _NOT_INTEGER
        scale, relative = _SET_EXPIRY[expiry]
        if value <= 0 or value > INT64_MAX // scale:
            return _expire_time_error(b"set")
        deadline = value * scale + (store.clock() if relative else 0)
        if deadline > INT64_MAX:
            return _expire_time_error(b"set")
    old = store.get(args[1])
    reply = bulk(old) if get else OK
    if (nx and old is not None) or (xx and old is None):
        return reply if get else NIL
    store.set(args[1], args[2], deadline, keep_ttl)
    return reply


def _delete(store: KeyValueStore, args: list[bytes]) -> bytes:
    return b":%d\r\n" % sum(store.delete(key) for key in args[1:])


def _exists(store: KeyValueStore, args: list[bytes]) -> bytes:
    return b":%d\r\n" % sum(store.exists(key) for key in args[1:])


def _add(store: KeyValueStore, key: bytes, by: int) -> bytes:
    old = store.get(key)
    value = 0 if old is None else parse_int64(old)
    if value is None:
        return _NOT_INTEGER
    result = value + by
    if not INT64_MIN <= result <= INT64_MAX:
        return _OVERFLOW
    store.set(key, b"%d" % result, keep_ttl=True)
    return b":%d\r\n" % result


def _incr(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _add(store, args[1], 1)


def _decr(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _add(store, args[1], -1)


def _incrby(store: KeyValueStore, args: list[bytes]) -> bytes:
    by = parse_int64(args[2])
    return _NOT_INTEGER if by is None else _add(store, args[1], by)


def _decrby(store: KeyValueStore, args: list[bytes]) -> bytes:
    by = parse_int64(args[2])
    if by is None:
        return _NOT_INTEGER
    if by == INT64_MIN:
        return error(b"ERR decrement would overflow")
    return _add(store, args[1], -by)


def _mget(store: KeyValueStore, args: list[bytes]) -> bytes:
    return array([store.get(key) for key in args[1:]])


def _mset(store: KeyValueStore, args: list[bytes]) -> bytes:
    if len(args) % 2 == 0:
        return _arity_error(b"mset")
    for i in range(1, len(args), 2):
        store.set(args[i], args[i + 1])
    return OK


_EXPIRE_CONDITIONS = frozenset((b"NX", b"XX", b"GT", b"LT"))


def _set_expiry(store: KeyValueStore, args: list[bytes], scale: int) -> bytes:
    conditions = set()
    for option in args[3:]:
        condition = option.upper()
        if condition not in _EXPIRE_CONDITIONS:
            return error(b"ERR Unsupported option %b" % option)
        conditions.add(condition)
    if b"NX" in conditions and len(conditions) > 1:
        return error(b"ERR NX and XX, GT or LT options at the same time are not compatible")
    if b"GT" in conditions and b"LT" in conditions:
        return error(b"ERR GT and LT options at the same time are not compatible")
    amount = parse_int64(args[2])
    if amount is None:
        return _NOT_INTEGER
    now = store.clock()
    # Redis bounds the seconds before converting them (C division truncates, hence the symmetric range).
    if (scale > 1 and abs(amount) > INT64_MAX // scale) or amount * scale > INT64_MAX - now:
        return _expire_time_error(args[0].lower())
    deadline = amount * scale + now
    key = args[1]
    if not store.exists(key):
        return _ZERO
    current = store.deadline(key)
    if (
        (b"NX" in conditions and current is not None)
        or (b"XX" in conditions and current is None)
        or (b"GT" in conditions and (current is None or deadline <= current))
        or (b"LT" in conditions and current is not None and deadline >= current)
    ):
        return _ZERO
    if deadline <= now:
        store.delete(key)
    else:
        store.set_deadline(key, deadline)
    return _ONE


def _expire(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _set_expiry(store, args, 1000)


def _pexpire(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _set_expiry(store, args, 1)


def _time_to_live(store: KeyValueStore, key: bytes, scale: int) -> bytes:
    if not store.exists(key):
        return b":-2\r\n"
    deadline = store.deadline(key)
    if deadline is None:
        return b":-1\r\n"
    left = max(deadline - store.clock(), 0)
    # TTL rounds to the nearest second, as Redis does.
    return b":%d\r\n" % ((left + scale // 2) // scale)


def _ttl(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _time_to_live(store, args[1], 1000)


def _pttl(store: KeyValueStore, args: list[bytes]) -> bytes:
    return _time_to_live(store, args[1], 1)


def _keys(store: KeyValueStore, args: list[bytes]) -> bytes:
    pattern = args[1]
    keys = store.keys()
    # Redis lists every key for a lone '*' without matching, which is how it returns the empty key too.
    return array(keys if pattern == b"*" else [key for key in keys if glob_match(pattern, key)])


def _dbsize(store: KeyValueStore, args: list[bytes]) -> bytes:
    return b":%d\r\n" % len(store)


def _flush(store: KeyValueStore, args: list[bytes]) -> bytes:
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        return _SYNTAX
    store.clear()
    return OK


def _select(store: KeyValueStore, args: list[bytes]) -> bytes:
    index = parse_int64(args[1])
    if index is None:
        return _NOT_INTEGER
    if not -(2**31) <= index < 2**31:
        return error(b"ERR value is out of range, value must between -2147483648 and 2147483647")
    return OK if index == 0 else error(b"ERR DB index is out of range")


# What CONFIG GET reports: enough for redis-benchmark and redis-cli, which ask for these at start.
_CONFIG = {b"save": b"", b"appendonly": b"no", b"databases": b"1", b"maxmemory": b"0", b"timeout": b"0"}


def _config(store: KeyValueStore, args: list[bytes]) -> bytes:
    if args[1].upper() != b"GET":
        return _subcommand_error(b"CONFIG", args[1])
    if len(args) < 3:
        return _arity_error(b"config|get")
    found: dict[bytes, bytes] = {}
    for pattern in args[2:]:
        lowered = pattern.lower()
        found.update((name, value) for name, value in _CONFIG.items() if glob_match(lowered, name))
    return array([item for pair in found.items() for item in pair])


def _command(store: KeyValueStore, args: list[bytes]) -> bytes:
    if len(args) == 1:
        return b"*0\r\n"
    sub = args[1].upper()
    if sub == b"COUNT":
        return b":%d\r\n" % (len(COMMANDS) + len(_SESSION_ARITY)) if len(args) == 2 else _arity_error(b"command|count")
    if sub == b"DOCS":
        return b"*0\r\n"
    if sub == b"INFO":
        return array([None] * (len(args) - 2))
    return _subcommand_error(b"COMMAND", args[1])


# HELLO's answer in RESP2, where a map is a flat array of names and values. Clients look at "proto"; the
# name and version are Redis's so that clients gating features on them treat this server as a Redis 7.
_HELLO = (
    b"*12\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n$5\r\nproto\r\n:2\r\n"
    b"$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
)


def _hello(store: KeyValueStore, args: list[bytes]) -> bytes:
    if len(args) == 1:
        return _HELLO
    version = parse_int64(args[1])
    if version is None:
        return error(b"ERR Protocol version is not an integer or out of range")
    if version != 2:
        return error(b"NOPROTO unsupported protocol version")
    if len(args) > 2:
        return error(b"ERR Syntax error in HELLO option '%b'" % args[2])
    return _HELLO


_ANY = 2**31

COMMANDS: dict[bytes, tuple[Command, int, int]] = {
    b"PING": (_ping, 1, 2),
    b"ECHO": (_echo, 2, 2),
    b"GET": (_get, 2, 2),
    b"SET": (_set, 3, _ANY),
    b"DEL": (_delete, 2, _ANY),
    b"EXISTS": (_exists, 2, _ANY),
    b"INCR": (_incr, 2, 2),
    b"DECR": (_decr, 2, 2),
    b"INCRBY": (_incrby, 3, 3),
    b"DECRBY": (_decrby, 3, 3),
    b"MGET": (_mget, 2, _ANY),
    b"MSET": (_mset, 3, _ANY),
    b"EXPIRE": (_expire, 3, _ANY),
    b"PEXPIRE": (_pexpire, 3, _ANY),
    b"TTL": (_ttl, 2, 2),
    b"PTTL": (_pttl, 2, 2),
    b"KEYS": (_keys, 2, 2),
    b"DBSIZE": (_dbsize, 1, 1),
    b"FLUSHDB": (_flush, 1, _ANY),
    b"FLUSHALL": (_flush, 1, _ANY),
    b"SELECT": (_select, 2, 2),
    b"CONFIG": (_config, 2, _ANY),
    b"COMMAND": (_command, 1, _ANY),
    b"HELLO": (_hello, 1, _ANY),
}
"""Keyspace commands by upper-case name: the function and the allowed argument count, name included."""

# Commands that act on the session itself rather than on the keyspace, with their arity.
_SESSION_ARITY = {b"QUIT": (1, _ANY), b"MULTI": (1, 1), b"EXEC": (1, 1), b"DISCARD": (1, 1)}


class RespSession:
    """One client's conversation: request bytes in, reply bytes out, against a shared keyspace.

    :meth:`receive` answers every command completed by the bytes given, in order, as one byte string,
    and says whether the transport should close the connection once those bytes are written. After a
    close has been asked for, the session answers nothing more. MULTI/EXEC/DISCARD queue commands and run
    them together.
    """

    __slots__ = ("_closing", "_dirty", "_in_multi", "_parser", "_queue", "store")

    def __init__(
        self,
        store: KeyValueStore,
        *,
        max_bulk: int = MAX_BULK,
        max_array: int = MAX_ARRAY,
        max_inline: int = MAX_INLINE,
    ) -> None:
        self.store = store
        self._parser = RespParser(max_bulk, max_array, max_inline)
        self._closing = False
        self._in_multi = False
        self._queue: list[list[bytes]] = []  # commands queued since MULTI
        self._dirty = False  # a command was rejected since MULTI, so EXEC must abort

    def receive(self, data: bytes) -> tuple[bytes, bool]:
        """Feed request bytes; return the replies to the commands they complete and whether to close.

        QUIT replies ``+OK`` and asks to close, ignoring what follows it. A malformed request gets
        ``-ERR Protocol error: ...`` after the replies to the commands before it, and asks to close.
        """
        if self._closing:
            return b"", True
        replies = []
        store = self.store
        for args in self._parser.feed(data):
            name = args[0].upper()
            entry = COMMANDS.get(name)
            if entry is not None and not self._in_multi:
                run, low, high = entry
                replies.append(run(store, args) if low <= len(args) <= high else _arity_error(name))
            else:
                replies.append(self._special(name, args, entry))
                if self._closing:
                    return b"".join(replies), True
        if self._parser.error is not None:
            replies.append(error(b"ERR " + self._parser.error.encode("latin-1")))
            self._closing = True
        return b"".join(replies), self._closing

    def _special(self, name: bytes, args: list[bytes], entry: tuple[Command, int, int] | None) -> bytes:
        """Session commands, unknown commands, and keyspace commands sent inside MULTI."""
        if entry is not None:
            _, low, high = entry
        elif name in _SESSION_ARITY:
            low, high = _SESSION_ARITY[name]
        else:
            self._dirty = self._in_multi
            return _unknown_command(args)
        if not low <= len(args) <= high:
            if name == b"EXEC" and self._in_multi:
                self._in_multi = False
                self._queue = []
                return error(b"EXECABORT Transaction discarded because of: " + _arity_error(name)[5:])
            self._dirty = self._in_multi
            return _arity_error(name)
        if entry is not None:
            self._queue.append(args)
            return b"+QUEUED\r\n"
        if name == b"QUIT":
            self._closing = True
            return OK
        if name == b"MULTI":
            if self._in_multi:
                return error(b"ERR MULTI calls can not be nested")
            self._in_multi = True
            self._dirty = False
            return OK
        if not self._in_multi:
            return error(b"ERR %b without MULTI" % name)
        queue = self._queue
        self._queue = []
        self._in_multi = False
        if name == b"DISCARD":
            return OK
        if self._dirty:
            return b"-EXECABORT Transaction discarded because of previous errors.\r\n"
        replies = [COMMANDS[args[0].upper()][0](self.store, args) for args in queue]
        return b"*%d\r\n%b" % (len(replies), b"".join(replies))
