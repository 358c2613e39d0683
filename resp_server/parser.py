"""Sans-I/O RESP request framing: :class:`RespParser` splits a byte stream into commands (multibulk arrays of
bulk strings, or inline space-separated lines as Redis's ``sdssplitargs`` splits them), whatever the chunking.

Nothing here touches a socket, and nothing here runs a command: :mod:`resp_server.session` does that.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import TypeAlias

from resp_server._compiled import speedups
from resp_server.replies import parse_int64

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

Framer: TypeAlias = "Callable[[bytes, int], tuple[list[list[bytes]], int]]"
"""``frame(data, start)``: the requests from ``data[start:]`` on that it can frame (their argument lists), and where
the rest starts."""


def encode_request(args: Iterable[bytes]) -> bytes:
    """``args`` as one RESP multibulk request, the form clients such as redis-cli send."""
    items = list(args)
    parts = [b"*%d\r\n" % len(items)]
    parts.extend(b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in items)
    return b"".join(parts)


class RespParser:
    """Incremental RESP2 request parser: feed it bytes as they arrive, get back the commands completed.

    ``compiled`` picks the framer of well-formed requests: the compiled one (True), Python's (False), or the default
    (None): :data:`resp_server._compiled.COMPILED`. Both give the same results.

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
        "_frame",
        "_line_error",
        "_need",
        "_pending",
        "_remaining",
        "error",
        "limits",
    )

    def __init__(
        self,
        max_bulk: int = MAX_BULK,
        max_array: int = MAX_ARRAY,
        max_inline: int = MAX_INLINE,
        *,
        compiled: bool | None = None,
    ) -> None:
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
        compiled_ = speedups(compiled)
        self._frame: Framer = self._frame_lines
        if compiled_ is not None:
            self._frame = functools.partial(compiled_.frame, max_array, max_bulk)

    @property
    def in_request(self) -> bool:
        """Whether bytes of a request not yet complete are held (its first byte has arrived, its last not yet)."""
        return bool(self._pending) or self._args is not None

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Consume ``data``; return the commands it completes, in order (empty commands are skipped)."""
        if self._pending or self._args is not None or self.error is not None:
            return self._feed_stream(data)
        # At a request boundary, the framer takes the common well-formed requests, and a plain inline request
        # between them is split here (the compiled framer stops at one); the general parser takes over at the first
        # request neither takes, and with it whatever follows.
        frame = self._frame
        commands, end = frame(data, 0)
        size = len(data)
        while end < size:
            eol = data.find(b"\r\n", end)
            line = data[end:eol]
            if eol < 0 or line[:1] == b"*" or 10 in line:
                break
            words = split_inline(line)
            if not words:
                break
            commands.append(words)
            more, end = frame(data, eol + 2)
            commands += more
        if end < size:
            commands += self._feed_stream(data[end:])
        return commands

    def _frame_lines(self, data: bytes, start: int) -> tuple[list[list[bytes]], int]:
        """The framer in Python: the requests from ``data[start:]`` on that it can frame (inline ones too), and where
        the rest starts."""
        if start:
            framed, end = self._frame_lines(data[start:], 0)
            return framed, start + end
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
                # Arrays of one to four bulks (PING, GET, SET, HSET...) spelled out: the loop below would add a
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
                elif count == 4:  # HSET, ZADD, LSET...: as busy as the three above
                    if (
                        lines[i + 1] != bulks[len(lines[i + 2])]
                        or lines[i + 3] != bulks[len(lines[i + 4])]
                        or lines[i + 5] != bulks[len(lines[i + 6])]
                        or lines[i + 7] != bulks[len(lines[i + 8])]
                    ):
                        break
                    commands.append([lines[i + 2], lines[i + 4], lines[i + 6], lines[i + 8]])
                    i += 9
                else:
                    end = i + 2 * count + 1
                    if end > n or any(lines[k] != bulks[len(lines[k + 1])] for k in range(i + 1, end, 2)):
                        break
                    commands.append(lines[i + 2 : end : 2])
                    i = end
        except IndexError:
            pass
        if i < n or rest:
            return commands, sum(map(len, lines[:i])) + 2 * i
        return commands, len(data)

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
