"""Sans-I/O RESP2: a request parser and a session that turns request bytes into reply bytes.

Nothing here touches a socket. :class:`RespParser` splits a byte stream into commands (multibulk arrays of
bulk strings, or inline space-separated lines), whatever the chunking. :class:`RespSession` runs those
commands (:mod:`examples.resp_commands`) against a :class:`~examples.kvstore.KeyValueStore` and hands back the
replies of a whole batch at once, so a transport writes once per read. The same session class serves the
netloop server and any other transport wrapped around it; only the bytes in and out matter.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from examples.kvstore import KeyValueStore
from examples.resp_commands import (
    COMMANDS,
    OK,
    SESSION_ARITY,
    Reply,
    arity_error,
    chunk_replies,
    error,
    join_replies,
    parse_int64,
    unknown_command,
    use_protocol,
)
from examples.resp_state import NOT_QUEUED, SESSION_COMMANDS, ServerState, SubscribedOK
from examples.resp_types import MORE, RESP3

MAX_BULK = 64 * 1024 * 1024
"""Largest bulk string accepted by default (Redis allows 512 MiB; that is more than this server wants)."""

MAX_ARRAY = 1024 * 1024
"""Most elements accepted in one multibulk request by default."""

MAX_INLINE = 64 * 1024
"""Longest inline request or length line accepted by default (Redis's PROTO_INLINE_MAX_SIZE). Empty requests
(blank lines, ``*0``) in a row before a request are held to it too."""

# Blank lines (only spaces, tabs, CRs, VTs and FFs before the LF), as many as follow each other: skipped in one step.
_BLANK_LINES = re.compile(rb"(?:[ \t\r\x0b\x0c]*\n)+")
_TOO_MANY_EMPTY = "Protocol error: too many empty lines before a request"

# The request headers the fast path of RespParser.feed knows, each in the one spelling the general parser
# accepts: array lengths to the number they declare, and the bulk header of each short length. Anything else
# (a long bulk, a big or empty array) is left to the general parser.
_FAST_ARRAYS = {b"*%d" % n: n for n in range(1, 65)}
_FAST_BULKS = tuple(b"$%d" % n for n in range(1024))


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

    __slots__ = (
        "_args",
        "_arrays",
        "_blank",
        "_bulk",
        "_bulks",
        "_line_error",
        "_need",
        "_pending",
        "_remaining",
        "error",
        "limits",
    )

    def __init__(self, max_bulk: int = MAX_BULK, max_array: int = MAX_ARRAY, max_inline: int = MAX_INLINE) -> None:
        self.limits = (max_bulk, max_array, max_inline)
        self.error: str | None = None
        self._pending = bytearray()
        self._need = 0  # bytes that _pending must hold before parsing can move on
        self._line_error: str | None = None  # set while waiting for a line's end: the error if it grows too long
        self._args: list[bytes] | None = None  # the multibulk request in progress
        self._remaining = 0  # its elements still to come
        self._bulk = -1  # the declared length of the bulk string in progress, or -1 before its '$' line
        self._blank = 0  # bytes of empty requests (blank lines, "*0") since the last request, while _pending holds more
        # The fast path's tables, cut to the limits so that it never accepts what the general parser refuses.
        self._arrays = _FAST_ARRAYS
        if max_array < len(_FAST_ARRAYS):
            self._arrays = {line: n for line, n in _FAST_ARRAYS.items() if n <= max_array}
        self._bulks = _FAST_BULKS[: max(max_bulk + 1, 0)]

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Consume ``data``; return the commands it completes, in order (empty commands are skipped)."""
        if self._pending or self._args is not None or self.error is not None:
            return self._feed_stream(data)
        # At a request boundary, frame the common well-formed requests from the CRLF-separated lines: an array
        # is its count line, then a header line and a data line per bulk; the data line must have the length
        # its header declares, or else the bulk holds a CRLF (or is malformed). The general parser takes over
        # at the first line this cannot frame, and with it whatever follows the last CRLF.
        lines = data.split(b"\r\n")
        rest = lines.pop()  # what follows the last CRLF: the start of a request still arriving, if anything
        commands: list[list[bytes]] = []
        arrays = self._arrays
        bulks = self._bulks
        n = len(lines)
        i = 0
        try:  # IndexError: an array that runs past the last CRLF, or a bulk longer than the table
            while i < n:
                line = lines[i]
                count = arrays.get(line)
                if count is None:
                    # An inline request, unless it opens an array the table does not know, or holds a bare LF,
                    # which ends an inline line early.
                    if line[:1] == b"*" or 10 in line:
                        break
                    words = split_inline(line)
                    if not words:  # unbalanced quotes, or a blank line: the general parser skips a run in one step
                        break
                    commands.append(words)
                    i += 1
                # Arrays of one, two and three bulks (PING, GET, SET...) spelled out: the loop below would add a
                # fifth or more to the cost of each such command.
                elif count == 1:
                    if lines[i + 1] != bulks[len(lines[i + 2])]:
                        break
                    commands.append([lines[i + 2]])
                    i += 3
                elif count == 2:
                    if lines[i + 1] != bulks[len(lines[i + 2])] or lines[i + 3] != bulks[len(lines[i + 4])]:
                        break
                    commands.append([lines[i + 2], lines[i + 4]])
                    i += 5
                elif count == 3:
                    if (
                        lines[i + 1] != bulks[len(lines[i + 2])]
                        or lines[i + 3] != bulks[len(lines[i + 4])]
                        or lines[i + 5] != bulks[len(lines[i + 6])]
                    ):
                        break
                    commands.append([lines[i + 2], lines[i + 4], lines[i + 6]])
                    i += 7
                else:
                    end = i + 2 * count + 1
                    if end > n or any(lines[k] != bulks[len(lines[k + 1])] for k in range(i + 1, end, 2)):
                        break
                    commands.append(lines[i + 2 : end : 2])
                    i = end
        except IndexError:
            pass
        if i < n or rest:
            commands += self._feed_stream(data[sum(map(len, lines[:i])) + 2 * i :])
        return commands

    def _feed_stream(self, data: bytes) -> list[list[bytes]]:
        """The general parser: any bytes, any state; what :meth:`feed` does when its fast path cannot."""
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
        max_bulk, max_array, max_inline = self.limits
        end = len(data)
        pos = 0
        args = self._args
        remaining = self._remaining
        bulk = self._bulk
        blank = self._blank  # bytes of empty requests in a row, up to pos
        while pos < end:
            if args is None:
                first = data[pos]
                if first != 42:  # not '*': an inline request
                    if first in _SPACE:  # perhaps a run of blank lines, which Redis skips one by one
                        run = _BLANK_LINES.match(data, pos)
                        if run is not None:
                            blank += run.end() - pos
                            if blank > max_inline:
                                return self._fail(_TOO_MANY_EMPTY)
                            pos = run.end()
                            continue
                    eol = data.find(b"\n", pos)
                    if eol < 0:
                        return self._await_line(pos, end, None, 0, "Protocol error: too big inline request", blank)
                    # A bare '\n' ends the line too, as Redis accepts from telnet-like clients.
                    words = split_inline(data[pos : eol - 1 if eol > pos and data[eol - 1] == 13 else eol])
                    if words is None:
                        return self._fail("Protocol error: unbalanced quotes in request")
                    commands.append(words)  # not blank, so it has words
                    blank = 0
                    pos = eol + 1
                    continue
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return self._await_line(pos, end, None, 0, "Protocol error: too big mbulk count string", blank)
                count = parse_int64(data[pos + 1 : eol])
                if count is None or count > max_array:
                    return self._fail("Protocol error: invalid multibulk length")
                if count <= 0:  # an empty request: skipped, as Redis does, but counted like a blank line
                    blank += eol + 2 - pos
                    if blank > max_inline:
                        return self._fail(_TOO_MANY_EMPTY)
                    pos = eol + 2
                    continue
                pos = eol + 2
                blank = 0
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
        if blank:
            # Empty requests ran to the end: keep their last byte (an LF) unparsed, so that the next bytes go to
            # this parser, not the fast path, and the run goes on being counted.
            return self._suspend(end - 1, None, 0, -1, 0, None, blank - 1)
        return self._suspend(pos, None, 0, -1, 0, None)

    def _suspend(
        self,
        pos: int,
        args: list[bytes] | None,
        remaining: int,
        bulk: int,
        need: int,
        too_long: str | None,
        blank: int = 0,
    ) -> int:
        """Keep the state of the request in progress until more bytes arrive; return ``pos``."""
        self._args = args
        self._remaining = remaining
        self._bulk = bulk
        self._need = need
        self._line_error = too_long
        self._blank = blank
        return pos

    def _await_line(
        self, pos: int, end: int, args: list[bytes] | None, remaining: int, too_long: str, blank: int = 0
    ) -> int:
        if end - pos > self.limits[2]:
            return self._fail(too_long)
        return self._suspend(pos, args, remaining, -1, 0, too_long, blank)

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
    if line.isalnum():  # one plain word, such as PING: the common inline request
        return [line]
    if 34 not in line and 39 not in line and 11 not in line and 12 not in line:  # no quotes, VT or FF
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


# Keyspace commands by upper-case name, per protocol: RESP3 has its own variants of the commands that answer maps
# and sets. PING and CONFIG are the session's (subscribed mode, maps).
KEYSPACE = {name: entry for name, entry in {**COMMANDS, **MORE}.items() if name not in SESSION_COMMANDS}
KEYSPACE3 = {**KEYSPACE, **{name: (run, *KEYSPACE[name][1:]) for name, run in RESP3.items()}}


def _both_cases(table: dict[bytes, Any]) -> dict[bytes, Any]:
    """``table`` by name as clients send it, in upper or lower case, so that the common case needs no upper()."""
    return {**table, **{name.lower(): entry for name, entry in table.items()}}


# PING is a session command (subscribed mode answers it differently) but the busiest one: outside subscribed mode it
# takes the fast path too.
_DISPATCH = _both_cases({**KEYSPACE, b"PING": COMMANDS[b"PING"]})
_DISPATCH3 = _both_cases({**KEYSPACE3, b"PING": COMMANDS[b"PING"]})
_NOTHING: dict[bytes, Any] = {}  # a subscribed RESP2 session: every command takes the checked way


STEP = 32
"""Commands a throttled :meth:`RespSession.serve` runs between two looks at how much it has replied."""

Output: TypeAlias = "bytes | list[bytes | memoryview]"
"""What :meth:`RespSession.serve` returns to write: one bytes object, or chunks to write in order."""


class RespSession:
    """One client's conversation: request bytes in, reply bytes out, against a shared keyspace.

    :meth:`receive` answers every command completed by the bytes given, in order, as one byte string,
    and says whether the transport should close the connection once those bytes are written. After a
    close has been asked for, the session answers nothing more. MULTI/EXEC/DISCARD queue commands and run
    them together.

    :meth:`serve` is the same conversation with backpressure: it stops once it has replied about as many bytes
    as the transport can take, keeping the commands not yet run and the reply bytes not yet handed out, and goes
    on at the next call. Replies come as chunks, a big stored value being one chunk of its own (not copied).
    """

    __slots__ = (
        "__weakref__",
        "_backlog",
        "_closing",
        "_commands",
        "_dirty",
        "_dispatch",
        "_in_multi",
        "_next",
        "_output",
        "_parser",
        "_queue",
        "_runner",
        "addr",
        "busy",
        "channels",
        "client_id",
        "created",
        "fd",
        "kill",
        "laddr",
        "last_command",
        "name",
        "patterns",
        "proto",
        "push",
        "pushed",
        "server",
        "store",
        "watch_dirty",
        "watching",
    )

    def __init__(
        self,
        store: KeyValueStore,
        *,
        max_bulk: int = MAX_BULK,
        max_array: int = MAX_ARRAY,
        max_inline: int = MAX_INLINE,
        server: ServerState | None = None,
    ) -> None:
        self.store = store
        self.server = ServerState() if server is None else server
        self.client_id = self.server.register(self)
        self.proto = 2
        self._runner = self._run
        self._dispatch = _DISPATCH
        self._commands = KEYSPACE
        self.name: bytes | None = None
        self.addr = b"unknown"
        self.laddr = b"unknown"
        self.fd = -1
        self.created = time.time()
        self.last_command = b"NULL"
        self.channels: set[bytes] = set()
        self.patterns: set[bytes] = set()
        self.watching: set[bytes] = set()
        self.watch_dirty = False
        self.pushed: list[bytes] = []
        self.push: Callable[[bytes], object] = self.pushed.append
        """How pub/sub messages leave: the transport sets a thread-safe write (``conn.async_write``)."""
        self.kill: Callable[[], object] = self._kill_self
        """How CLIENT KILL ends this client: the transport sets ``conn.close``."""
        self._parser = RespParser(max_bulk, max_array, max_inline)
        self._closing = False
        self._in_multi = False
        self._queue: list[list[bytes]] = []  # commands queued since MULTI
        self._dirty = False  # a command was rejected since MULTI, so EXEC must abort
        self._backlog: list[list[bytes]] = []  # commands parsed and not run yet, from _next on
        self._next = 0
        self._output: deque[bytes | memoryview] = deque()  # reply chunks not handed out yet
        self.busy = False
        """Commands or reply bytes are held back: call :meth:`serve` again (with no new bytes) to go on."""

    def receive(self, data: bytes) -> tuple[bytes, bool]:
        """Feed request bytes; return the replies to the commands they complete and whether to close.

        QUIT replies ``+OK`` and asks to close, ignoring what follows it. A malformed request gets
        ``-ERR Protocol error: ...`` after the replies to the commands before it, and asks to close.
        """
        out, close = self.serve(data)
        return (out if isinstance(out, bytes) else b"".join(out)), close

    def serve(self, data: bytes = b"", limit: int | None = None) -> tuple[Output, bool]:
        """Feed request bytes (or none), run commands; return their replies, and whether to close after them.

        The replies are one bytes object, or a list of chunks to write in order (a big stored value being a chunk
        of its own, not copied) once a reply holds such a value or anything was held back. With a ``limit``,
        commands run :data:`STEP` at a time until their replies come to more than ``limit`` bytes, and no more
        than ``limit`` bytes of them are handed out (a chunk longer than that in slices), unless one step's
        small replies alone are more; the rest waits, and :attr:`busy` says so: the transport calls again,
        without new bytes, once it can take more. Without a limit every command is answered at once.
        """
        if self.busy or self._closing:
            if data and not self._closing:
                self._backlog = self._backlog[self._next :] + self._parser.feed(data)
                self._next = 0
            return self._serve_held(limit)
        commands = self._parser.feed(data)
        if len(commands) > STEP and limit is not None:
            self._backlog = commands
            return self._serve_held(limit)
        replies = self._runner(commands)
        error_ = self._parser.error
        if error_ is not None and not self._closing:
            replies.append(error(b"ERR " + error_.encode("latin-1")))
            self._closing = True
        try:
            return b"".join(replies), self._closing  # type: ignore[arg-type]  # a chunked reply raises TypeError
        except TypeError:
            self._output.extend(chunk_replies(replies))
            return self._serve_held(limit)

    def _serve_held(self, limit: int | None) -> tuple[Output, bool]:
        """:meth:`serve` once something is held back: hand out what was replied, run the next steps, within limit."""
        handed: list[bytes | memoryview] = []
        room = limit
        output = self._output
        while True:
            while output and (room is None or room > 0):
                chunk = output.popleft()
                if limit is not None and len(chunk) > limit:  # a big value goes out a slice at a time
                    view = memoryview(chunk)
                    output.appendleft(view[limit:])
                    chunk = view[:limit]
                handed.append(chunk)
                if room is not None:
                    room -= len(chunk)
            if output or self._closing or (room is not None and room <= 0):
                break
            backlog = self._backlog
            start = self._next
            if start >= len(backlog):
                break
            stop = len(backlog) if limit is None else start + STEP
            replies = self._runner(backlog[start:stop])
            if self._closing or stop >= len(backlog):
                self._backlog = []
                self._next = 0
                error_ = self._parser.error
                if error_ is not None and not self._closing:
                    replies.append(error(b"ERR " + error_.encode("latin-1")))
                    self._closing = True
            else:
                self._next = stop
            reply = join_replies(replies)
            if type(reply) is list:
                output.extend(reply)
            elif reply:
                output.append(reply)  # type: ignore[arg-type]
        self.busy = bool(self._backlog or output)
        return handed, self._closing and not output

    def _run(self, commands: list[list[bytes]]) -> list[Reply]:
        """Run ``commands`` in order; their replies (cut short after a QUIT, which asks to close)."""
        replies = []
        store = self.store
        in_multi = self._in_multi
        dispatch = self._dispatch
        for args in commands:
            entry = dispatch.get(args[0])
            if entry is None or in_multi:
                replies.append(self._special(args))
                if self._closing:
                    return replies
                in_multi = self._in_multi
                dispatch = self._dispatch  # a SUBSCRIBE or HELLO may have changed it
                continue
            run, low, high = entry
            replies.append(run(store, args) if low <= len(args) <= high else arity_error(args[0]))
        return replies

    def _run3(self, commands: list[list[bytes]]) -> list[Reply]:
        """``_run`` for a RESP3 session: the commands' nulls are RESP3's while its batch runs.

        Commands run one batch at a time (on one loop, or under the server's lock), so the switch is seen by this
        batch alone; RESP2 sessions, the default, pay nothing for it.
        """
        use_protocol(3)
        try:
            return self._run(commands)
        finally:
            use_protocol(2)

    def _special(self, args: list[bytes]) -> Reply:
        """Session and server commands, unknown commands, keyspace commands inside MULTI, in subscribed mode or in
        mixed case."""
        name = args[0].upper()
        self.last_command = name.lower()
        if (self.channels or self.patterns) and self.proto == 2 and name not in SubscribedOK:
            return error(
                b"ERR Can't execute '%b': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in"
                b" this context" % name.lower()
            )
        session_entry = SESSION_COMMANDS.get(name)
        entry = self._commands.get(name) if session_entry is None else None
        if entry is not None:
            run, low, high = entry
            if not self._in_multi:
                return run(self.store, args) if low <= len(args) <= high else arity_error(name)
        elif session_entry is not None:
            handler, low, high = session_entry
            if not self._in_multi or name in NOT_QUEUED:
                return handler(self, args) if low <= len(args) <= high else arity_error(name)
        elif name in SESSION_ARITY:
            low, high = SESSION_ARITY[name]
        else:
            self._dirty = self._in_multi
            return unknown_command(args)
        if not low <= len(args) <= high:
            if name == b"EXEC" and self._in_multi:
                self._in_multi = False
                self._queue = []
                return error(b"EXECABORT Transaction discarded because of: " + arity_error(name)[5:])
            self._dirty = self._in_multi
            return arity_error(name)
        if entry is not None or session_entry is not None:
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
            self.unwatch()
            return OK
        if self._dirty:
            self.unwatch()
            return b"-EXECABORT Transaction discarded because of previous errors.\r\n"
        if self.watch_dirty:
            self.unwatch()
            return b"_\r\n" if self.proto == 3 else b"*-1\r\n"
        self.unwatch()
        replies = [self._execute(args) for args in queue]
        replies.insert(0, b"*%d\r\n" % len(queue))
        return join_replies(replies)

    def _execute(self, args: list[bytes]) -> Reply:
        """Run one queued command (EXEC): a keyspace command or a session one."""
        name = args[0].upper()
        entry = self._commands.get(name)
        if entry is not None:
            return entry[0](self.store, args)
        return SESSION_COMMANDS[name][0](self, args)

    # -- what the session commands (examples.resp_state) use ----------------------------------------------------

    @property
    def in_multi(self) -> bool:
        return self._in_multi

    @property
    def queued(self) -> list[list[bytes]]:
        return self._queue

    def set_protocol(self, proto: int) -> None:
        """Speak RESP2 or RESP3 from the next reply on (HELLO)."""
        self.proto = proto
        self._commands = KEYSPACE3 if proto == 3 else KEYSPACE
        self._runner = self._run3 if proto == 3 else self._run
        self.subscriptions_changed()

    def subscriptions_changed(self) -> None:
        """A subscribed RESP2 session takes the checked way for every command (only a few are allowed)."""
        subscribed = self.proto == 2 and bool(self.channels or self.patterns)
        self._dispatch = _NOTHING if subscribed else _DISPATCH3 if self.proto == 3 else _DISPATCH

    def deliver(self, kind: bytes, pattern: bytes | None, channel: bytes, message: bytes) -> None:
        """A published message for this subscriber: encoded for its protocol, handed to ``push`` (any thread)."""
        head = b">" if self.proto == 3 else b"*"
        if pattern is None:
            data = b"%b3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
                head, len(kind), kind, len(channel), channel, len(message), message,
            )  # fmt: skip
        else:
            data = b"%b4\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
                head, len(kind), kind, len(pattern), pattern, len(channel), channel, len(message), message,
            )  # fmt: skip
        self.push(data)

    def unwatch(self) -> None:
        watchers = self.store.watchers
        for key in self.watching:
            sessions = watchers.get(key)
            if sessions is not None:
                sessions.discard(self)
                if not sessions:
                    del watchers[key]
        self.watching.clear()
        self.watch_dirty = False

    def reset(self) -> None:
        """RESET: leave MULTI, WATCH and every subscription, back to RESP2 without a name."""
        self._in_multi = False
        self._queue = []
        self.unwatch()
        self.server.unregister(self)
        self.server.clients[self.client_id] = self
        self.name = None
        self.set_protocol(2)

    def close(self) -> None:
        """The connection ended: forget its subscriptions, watches and registration."""
        self.unwatch()
        self.server.unregister(self)

    def _kill_self(self) -> None:
        self._closing = True
