"""Sans-I/O RESP2/RESP3 session: one client's conversation, request bytes in, reply bytes out.

:class:`RespSession` frames requests with :class:`~resp_server.parser.RespParser`, runs the commands
(:mod:`resp_server.commands` and the modules of its table) against a :class:`~resp_server.store.KeyValueStore` and
hands back the replies of a whole batch at once, so a transport writes once per read. The same session class serves
the netloop server and any other transport wrapped around it; only the bytes in and out matter. The session's
protocol (RESP2 or RESP3, chosen by HELLO) picks the command table it dispatches to: each table is bound to that
protocol's :class:`~resp_server.replies.Encoder`, so no two sessions ever share a protocol switch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeAlias

from resp_server._compiled import SPEEDUPS, speedups
from resp_server.blocking import BLOCKING, Blocker, serve_blocked
from resp_server.command_table import KEYSPACE, KEYSPACE3, PING
from resp_server.commands import SESSION_ARITY
from resp_server.containers import _hset
from resp_server.notifications import publish_events
from resp_server.parser import MAX_ARRAY, MAX_BULK, MAX_INLINE, RespParser
from resp_server.replies import (
    ENCODERS,
    OK,
    RESP2,
    Reply,
    arity_error,
    chunk_replies,
    error,
    join_replies,
    unknown_command,
)
from resp_server.server_state import (
    NO_MULTI,
    NOT_QUEUED,
    REPLY_ON,
    REPLY_SKIP,
    REPLY_SKIP_NEXT,
    SESSION_COMMANDS,
    ServerState,
    SubscribedOK,
)
from resp_server.store import KeyValueStore
from resp_server.subcommands import SUBCOMMANDS, subcommand_error
from resp_server.values import ONE, WRONGTYPE, ZERO, _Wrong


def _nothing() -> None:
    pass


def _both_cases(table: dict[bytes, Any]) -> dict[bytes, Any]:
    """``table`` by name as clients send it, in upper or lower case, so that the common case needs no upper()."""
    return {**table, **{name.lower(): entry for name, entry in table.items()}}


# PING is a session command (subscribed mode answers it differently) but the busiest one: outside subscribed mode it
# takes the fast path too. Container commands (CONFIG, OBJECT...) take the checked way, where their subcommand is
# looked up first, as Redis does.
_DISPATCH = _both_cases({name: e for name, e in {**KEYSPACE, **PING}.items() if name not in SUBCOMMANDS})
_DISPATCH3 = _both_cases({name: e for name, e in {**KEYSPACE3, **PING}.items() if name not in SUBCOMMANDS})
_NOTHING: dict[bytes, Any] = {}  # a subscribed RESP2 session: every command takes the checked way

if SPEEDUPS is not None:  # the compiled loop takes HSET's short way itself, without _hset's Python frame
    SPEEDUPS.hset_short_way(_hset, KeyValueStore(), ONE, ZERO)


MAX_QUEUED = 100_000
"""The most commands a MULTI block queues by default (Redis has no limit; each queued command is held until EXEC)."""

STEP = 32
"""Commands a throttled :meth:`RespSession.serve` runs between two looks at how much it has replied."""

Output: TypeAlias = "bytes | list[bytes | memoryview]"
"""What :meth:`RespSession.serve` returns to write: one bytes object, or chunks to write in order."""


_PUSHED = frozenset((b"SUBSCRIBE", b"UNSUBSCRIBE", b"PSUBSCRIBE", b"PUNSUBSCRIBE"))
"""Commands whose replies are pushes, which CLIENT REPLY OFF does not silence (as in Redis 7.0)."""


def _run_fast(
    dispatch: dict[bytes, Any],
    store: KeyValueStore,
    commands: list[list[bytes]],
    at: int,
    replies: list[Reply],
    arity_error: Callable[[bytes], bytes],
) -> int:
    """Run ``commands[at:]`` in order while each takes the fast way (its name in ``dispatch``), its reply (or its
    arity error) appended to ``replies``; the index of the first command not run: one ``dispatch`` lacks, or the one
    after a command that left keyspace events or unblocked keys behind. ``resp_server/_speedups.c``'s ``run`` is
    this loop compiled."""
    append = replies.append
    for index in range(at, len(commands)):
        args = commands[index]
        entry = dispatch.get(args[0])
        if entry is None:
            return index
        run, low, high = entry
        append(run(store, args) if low <= len(args) <= high else arity_error(args[0]))
        if store.ready or store.events:
            return index + 1
    return len(commands)


class RespSession:
    """One client's conversation: request bytes in, reply bytes out, against a shared keyspace.

    :meth:`receive` answers every command completed by the bytes given, in order, as one byte string,
    and says whether the transport should close the connection once those bytes are written. After a
    close has been asked for, the session answers nothing more. MULTI/EXEC/DISCARD queue commands and run
    them together.

    :meth:`serve` is the same conversation with backpressure: it stops once it has replied about as many bytes
    as the transport can take, keeping the commands not yet run and the reply bytes not yet handed out, and goes
    on at the next call. Replies come as chunks, a big stored value being one chunk of its own (not copied).

    ``compiled`` picks the request framer and the dispatch loop: compiled (True), in Python (False) or the default
    (None: :data:`resp_server._compiled.COMPILED`); the replies are the same.
    """

    __slots__ = (
        "__weakref__",
        "_backlog",
        "_closing",
        "_commands",
        "_dirty",
        "_dispatch",
        "_executing",
        "_held",
        "_in_multi",
        "_next",
        "_output",
        "_parser",
        "_queue",
        "_run_fast",
        "addr",
        "blocker",
        "busy",
        "channels",
        "client_id",
        "created",
        "encoder",
        "fd",
        "kill",
        "laddr",
        "last_command",
        "max_queued",
        "name",
        "patterns",
        "proto",
        "push",
        "pushed",
        "reply_mode",
        "server",
        "store",
        "wake",
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
        max_queued: int = MAX_QUEUED,
        server: ServerState | None = None,
        compiled: bool | None = None,
    ) -> None:
        self.store = store
        self.max_queued = max_queued
        """The most commands MULTI queues: one more is refused, and EXEC then aborts."""
        self.server = ServerState() if server is None else server
        self.client_id = self.server.register(self)
        self.proto = 2
        self.encoder = RESP2
        """How this session's replies spell what RESP2 and RESP3 spell differently (HELLO changes it)."""
        self.reply_mode = REPLY_ON
        """CLIENT REPLY: :data:`REPLY_ON`, :data:`REPLY_OFF`, :data:`REPLY_SKIP_NEXT` or :data:`REPLY_SKIP`."""
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
        self._parser = RespParser(max_bulk, max_array, max_inline, compiled=compiled)
        compiled_ = speedups(compiled)
        self._run_fast = _run_fast if compiled_ is None else compiled_.run
        self._closing = False
        self._in_multi = False
        self._queue: list[list[bytes]] = []  # commands queued since MULTI
        self._dirty = False  # a command was rejected since MULTI, so EXEC must abort
        self._backlog: list[list[bytes]] = []  # commands parsed and not run yet, from _next on
        self._next = 0
        self._output: deque[bytes | memoryview] = deque()  # reply chunks not handed out yet
        self.busy = False
        """Commands or reply bytes are held back: call :meth:`serve` again (with no new bytes) to go on."""
        self.blocker: Blocker | None = None
        """The blocking command this session waits on (BLPOP...): it runs nothing else meanwhile."""
        self._held: list[list[bytes]] = []  # the commands after the one that blocked, in the batch that ran it
        self._executing = False  # EXEC runs its queue: a blocking command answers a null rather than wait
        self.wake: Callable[[], object] = _nothing
        """How a session that waited asks to be served again once unblocked: the transport sets ``conn.wake``."""

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
        if self.blocker is not None:
            if data:
                self._backlog = self._backlog[self._next :] + self._parser.feed(data)
                self._next = 0
            return b"", False
        if self.busy or self._closing:
            if data and not self._closing:
                self._backlog = self._backlog[self._next :] + self._parser.feed(data)
                self._next = 0
            return self._serve_held(limit)
        commands = self._parser.feed(data)
        if len(commands) > STEP and limit is not None:
            self._backlog = commands
            return self._serve_held(limit)
        replies = self._run(commands)
        if self.blocker is not None:
            self._backlog, self._next, self._held = self._held, 0, []
            self._output.extend(chunk_replies(replies))
            return self._serve_held(limit)
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
            if start >= len(backlog) or self.blocker is not None:
                break
            stop = len(backlog) if limit is None else start + STEP
            replies = self._run(backlog[start:stop])
            if self.blocker is not None:
                self._backlog, self._next, self._held = self._held + backlog[stop:], 0, []
                output.extend(chunk_replies(replies))
                continue
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
        self.busy = bool(output) or (bool(self._backlog) and self.blocker is None)
        return handed, self._closing and not output

    def _run(self, commands: list[list[bytes]]) -> list[Reply]:
        """Run ``commands`` in order; their replies (cut short after a QUIT, which asks to close)."""
        replies: list[Reply] = []
        store = self.store
        run_fast = self._run_fast
        size = len(commands)
        at = 0
        while at < size:
            if not self._in_multi:  # the commands that take the fast way, as many in a row as there are
                start = at
                at = run_fast(self._dispatch, store, commands, at, replies, arity_error)
                if at > start and (store.ready or store.events):  # after the command before ``at``, as after any
                    self._after(commands[at - 1])
                    continue
                if at >= size:
                    break
            args = commands[at]
            at += 1
            reply = self._special(args)
            replies.append(self._silenced(args, reply) if self.reply_mode else reply)
            if self._closing:
                break
            if self.blocker is not None:  # the rest waits until it is served
                self._held = commands[at:]
                break
            if store.ready or store.events:
                self._after(args)
        return replies

    def _special(self, args: list[bytes]) -> Reply:
        """Session and server commands, unknown commands, keyspace commands inside MULTI, in subscribed mode or in
        mixed case."""
        name = args[0].upper()
        self.last_command = name.lower()
        if (self.channels or self.patterns) and self.proto == 2 and name not in SubscribedOK:
            return self._refused_when_subscribed(name, args)
        if name in SUBCOMMANDS:
            refused = subcommand_error(name, args)
            if refused is not None:
                self._dirty = self._in_multi
                return refused
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
        elif self._in_multi and name in NO_MULTI:
            self._dirty = True
            return error(b"ERR Command not allowed inside a transaction")
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
            if len(self._queue) >= self.max_queued:
                self._dirty = True
                return error(b"ERR MULTI holds %d queued commands already (max-queued-commands)" % self.max_queued)
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
            return self.encoder.nil_array
        self.unwatch()
        self._executing = True
        try:
            replies = [self._execute(args) for args in queue]
        finally:
            self._executing = False
        replies.insert(0, b"*%d\r\n" % len(queue))
        return join_replies(replies)

    def _refused_when_subscribed(self, name: bytes, args: list[bytes]) -> Reply:
        """A command refused in RESP2's subscribed mode, with Redis's checks before that one: an unknown command, a
        wrong arity, an unknown subcommand; the refusal names a subcommand as ``pubsub|numsub``."""
        entry = SESSION_COMMANDS.get(name) or self._commands.get(name)
        low, high = entry[1:] if entry is not None else SESSION_ARITY.get(name, (-1, -1))
        if low < 0:
            return unknown_command(args)
        if not low <= len(args) <= high:
            return arity_error(name)
        full = name.lower()
        if name in SUBCOMMANDS:
            refused = subcommand_error(name, args)
            if refused is not None:
                return refused
            full += b"|" + args[1].lower()
        return error(
            b"ERR Can't execute '%b': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in"
            b" this context" % full
        )

    def _after(self, args: list[bytes]) -> None:
        """After a command: publish the keyspace events it caused, serve the clients its writes unblock."""
        store = self.store
        if store.events:
            publish_events(self.server, store, args[0])
        if store.ready:
            serve_blocked(store)

    def block(self, args: list[bytes]) -> Reply:
        """A blocking command: its reply if it pops now (or a null inside EXEC), else wait (reply nothing yet)."""
        blocker = BLOCKING[args[0].upper()][0](self.encoder, self.store, args)
        if isinstance(blocker, bytes):
            return blocker
        try:
            reply = blocker.attempt(True)
        except _Wrong:
            return WRONGTYPE
        if reply is not None:
            return reply
        if self._executing:
            return self.encoder.nil_array
        blocker.command = args[0]
        self.blocker = blocker
        for key in blocker.keys:
            self.store.blocked.setdefault(key, []).append(self)
        self.server.blocked.add(self)
        return b""

    def unblock(self, reply: Reply) -> None:
        """The blocking command this session waited on is answered: send ``reply``, then serve what waited."""
        self._forget_blocker()
        self.push(reply if isinstance(reply, bytes) else b"".join(reply))
        if self._backlog:
            self.busy = True
        self.wake()

    def _forget_blocker(self) -> None:
        blocker, self.blocker = self.blocker, None
        if blocker is None:
            return
        self.server.blocked.discard(self)
        for key in blocker.keys:
            waiting = self.store.blocked.get(key)
            if waiting is not None and self in waiting:
                waiting.remove(self)
                if not waiting:
                    del self.store.blocked[key]

    def _silenced(self, args: list[bytes], reply: Reply) -> Reply:
        """``reply`` as CLIENT REPLY OFF or SKIP lets it out: not at all, except (un)subscribing's pushes."""
        mode = self.reply_mode
        if mode == REPLY_SKIP_NEXT:  # CLIENT REPLY SKIP itself
            self.reply_mode = REPLY_SKIP
            return b""
        if mode == REPLY_SKIP:
            self.reply_mode = REPLY_ON
            self.subscriptions_changed()
        return reply if args[0].upper() in _PUSHED else b""

    def _execute(self, args: list[bytes]) -> Reply:
        """Run one queued command (EXEC): a keyspace command or a session one."""
        name = args[0].upper()
        entry = self._commands.get(name)
        reply = entry[0](self.store, args) if entry is not None else SESSION_COMMANDS[name][0](self, args)
        if self.store.events:
            publish_events(self.server, self.store, name)
        return reply

    @property
    def in_request(self) -> bool:
        """Whether a request has begun to arrive and is not complete yet (the transport's read deadline runs)."""
        return self._parser.in_request

    # -- what the session commands (resp_server.server_state) use ----------------------------------------------------

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
        self.encoder = ENCODERS[proto]
        self.subscriptions_changed()

    def subscriptions_changed(self) -> None:
        """A subscribed RESP2 session takes the checked way for every command (only a few are allowed)."""
        subscribed = self.proto == 2 and bool(self.channels or self.patterns)
        # CLIENT REPLY OFF or SKIP takes the checked way too, which drops the replies.
        self._dispatch = _NOTHING if subscribed or self.reply_mode else _DISPATCH3 if self.proto == 3 else _DISPATCH

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
        self.reply_mode = REPLY_ON
        self.set_protocol(2)

    def close(self) -> None:
        """The connection ended: forget its subscriptions, watches, registration and any blocking command."""
        self._forget_blocker()
        self.unwatch()
        self.server.unregister(self)

    def _kill_self(self) -> None:
        self._closing = True
