"""Sans-I/O HTTP/1.1 for the benchmark's plaintext servers: request bytes in, canned response bytes out.

Nothing here touches a socket. :class:`HttpSession` takes the bytes a connection received and returns the
responses to every request they complete, concatenated so that a transport writes once per batch, plus
whether the connection must close after them. Every request gets ``Hello, World!`` whatever its path; a
request body is read and thrown away. The same session class serves the netloop server and any other
transport wrapped around it (``bench.servers.netloop_http`` on netloop, ``bench.servers.aio`` on asyncio and
uvloop), so only the transport differs. The HTTP example users copy is ``examples/http_server.py``.

Two parsers sit behind one interface, :class:`RequestParser`: :class:`HttptoolsParser` drives llhttp
through ``httptools``, :class:`PythonParser` is pure Python. :func:`make_parser` picks httptools when it is
importable. On well-formed requests both give the same replies whatever the chunking; on malformed input
both answer ``400`` and close, though llhttp is the stricter of the two (it accepts only the methods it
knows, for one).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from email.utils import formatdate
from types import ModuleType
from typing import Final, NoReturn

_httptools: ModuleType | None
try:
    import httptools as _httptools
except ImportError:  # the pure-Python parser serves alone
    _httptools = None

MAX_HEAD_SIZE: Final = 8 * 1024
"""Default limit on a request line plus its header fields, in bytes (also applies to a trailer section)."""

MAX_BODY_SIZE: Final = 1024 * 1024
"""Default limit on a request body, in bytes (after chunked decoding)."""

MAX_EMPTY_LINES: Final = 256
"""Most bytes of empty lines (CR and LF) skipped before a request line; more get a 400 (RFC 9112 asks a server to
skip at least one CRLF there, and nobody sends hundreds)."""

BODY: Final = b"Hello, World!"


class Reply:
    """What a parser asks the session to send, one code per event, in order (plain ints on the hot path).

    Codes below :attr:`CLOSE` keep the connection open; :attr:`CLOSE` and every code above it are final:
    the connection closes after it and the parser yields nothing more. A ``*_HEAD`` code is the reply to a
    ``HEAD`` request (headers only).
    """

    OK: Final = 0  # 200, HTTP/1.1 keep-alive
    OK_HEAD: Final = 1
    OK_HTTP10: Final = 2  # 200 with "Connection: keep-alive", which an HTTP/1.0 client needs to stay
    OK_HTTP10_HEAD: Final = 3
    CONTINUE: Final = 4  # interim "100 Continue" before the body of an "Expect: 100-continue" request
    CLOSE: Final = 5  # 200 with "Connection: close"
    CLOSE_HEAD: Final = 6
    BAD_REQUEST: Final = 7  # 400
    CONTENT_TOO_LARGE: Final = 8  # 413
    HEADERS_TOO_LARGE: Final = 9  # 431


def render_replies(date: bytes) -> tuple[bytes, ...]:
    """The response bytes for every :class:`Reply` code (the tuple is indexed by code), dated ``date``."""
    fields = b"Server: netloop\r\nDate: " + date + b"\r\nContent-Type: text/plain\r\n"

    def response(status: bytes, connection: bytes, body: bytes, send_body: bool = True) -> bytes:
        head = b"HTTP/1.1 %b\r\n%bContent-Length: %d\r\n%b\r\n" % (status, fields, len(body), connection)
        return head + body if send_body else head

    keep_alive, close = b"Connection: keep-alive\r\n", b"Connection: close\r\n"
    return (
        response(b"200 OK", b"", BODY),
        response(b"200 OK", b"", BODY, send_body=False),
        response(b"200 OK", keep_alive, BODY),
        response(b"200 OK", keep_alive, BODY, send_body=False),
        b"HTTP/1.1 100 Continue\r\n\r\n",
        response(b"200 OK", close, BODY),
        response(b"200 OK", close, BODY, send_body=False),
        response(b"400 Bad Request", close, b"Bad Request"),
        response(b"413 Content Too Large", close, b"Content Too Large"),
        response(b"431 Request Header Fields Too Large", close, b"Request Header Fields Too Large"),
    )


class DateCache:
    """The current ``Date`` header value and the responses that embed it, formatted once per refresh.

    The server calls :meth:`refresh` once a second so that no request formats a date. :attr:`replies` is
    swapped whole, so a reader on another thread sees either the old table or the new one, never a mix.
    """

    __slots__ = ("date", "replies")

    def __init__(self) -> None:
        self.date = b""
        self.replies: tuple[bytes, ...] = ()
        self.refresh()

    def refresh(self, now: float | None = None) -> None:
        """Re-date the responses to ``now`` (seconds since the epoch; the current time by default)."""
        date = formatdate(now, usegmt=True).encode("ascii")
        self.replies = render_replies(date)
        self.date = date


DATE_CACHE: Final = DateCache()
"""The cache every :class:`HttpSession` reads its responses from."""


class _Rejected(Exception):
    """Raised inside a parser to stop it with an error reply."""

    def __init__(self, reply: int) -> None:
        super().__init__(reply)
        self.reply = reply


class RequestParser(ABC):
    """An incremental HTTP/1.1 request parser that reports :class:`Reply` codes instead of requests.

    Feed it a connection's bytes as they arrive, split anywhere; :meth:`feed` returns one code per request
    completed (preceded by :attr:`Reply.CONTINUE` where the client asked for one). A final code (see
    :class:`Reply`) is always the last one returned; after it the parser ignores its input. Bodies are
    consumed and dropped as they arrive; an unfinished header or trailer section is refused with a 431
    once it reaches ``max_head_size`` bytes, so what it holds stays bounded.

    The header semantics live here, shared by both parsers, so they decide alike: keep-alive by version and
    ``Connection`` tokens (``close`` wins), framing by ``Content-Length`` or a final ``chunked``
    transfer coding (both together, or a duplicate length, is a 400), an upgrade (``CONNECT``, or
    ``Upgrade`` with ``Connection: upgrade``) is answered and the connection closed, ``Expect:
    100-continue`` gets a 100 when a body is announced.
    """

    name: str = ""

    def __init__(self, max_head_size: int = MAX_HEAD_SIZE, max_body_size: int = MAX_BODY_SIZE) -> None:
        self.max_head_size = max_head_size
        self.max_body_size = max_body_size
        self._out: list[int] = []
        self._begin_head()

    @abstractmethod
    def feed(self, data: bytes) -> list[int]:
        """Consume ``data``; return the :class:`Reply` codes of what it completes, in order."""

    def _begin_head(self) -> None:
        self._length: int | None = None  # the declared Content-Length
        self._transfer_coded = False
        self._chunked = False
        self._close = False
        self._keep_alive = False
        self._connection_upgrade = False
        self._upgrade = False
        self._expect_continue = False
        self._upgrading = False
        self._reply = Reply.OK

    def _field(self, name: bytes, value: bytes) -> None:
        """Take one header field into account; ``name`` is lower-cased."""
        if name == b"connection":
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token == b"close":
                    self._close = True
                elif token == b"keep-alive":
                    self._keep_alive = True
                elif token == b"upgrade":
                    self._connection_upgrade = True
        elif name == b"content-length":
            value = value.strip(b" \t")
            if self._length is not None or not value.isdigit() or len(value) > 20 or int(value) >= 1 << 64:
                raise _Rejected(Reply.BAD_REQUEST)
            self._length = int(value)
        elif name == b"transfer-encoding":
            self._transfer_coded = True
            for token in value.lower().split(b","):
                if self._chunked:  # chunked must be the final coding, and appear once
                    raise _Rejected(Reply.BAD_REQUEST)
                self._chunked = token.strip(b" \t") == b"chunked"
        elif name == b"expect":
            self._expect_continue = value.strip(b" \t").lower() == b"100-continue"
        elif name == b"upgrade":
            self._upgrade = True

    def _finish_head(self, method: bytes, minor: int) -> int:
        """Decide the reply once the header section is complete (appending a 100 to :attr:`_out` when one
        is due); raise :class:`_Rejected` when the request must be refused."""
        length = self._length
        if self._transfer_coded and (not self._chunked or length is not None):
            raise _Rejected(Reply.BAD_REQUEST)
        if length is not None and length > self.max_body_size:
            raise _Rejected(Reply.CONTENT_TOO_LARGE)
        self._upgrading = method == b"CONNECT" or (self._upgrade and self._connection_upgrade)
        if self._upgrading or self._close:
            reply = Reply.CLOSE
        elif minor:
            reply = Reply.OK
        else:
            reply = Reply.OK_HTTP10 if self._keep_alive else Reply.CLOSE
        if method == b"HEAD":
            reply += 1
        if self._expect_continue and minor and not self._upgrading and (self._chunked or length):
            self._out.append(Reply.CONTINUE)
        self._reply = reply
        return reply


# RFC 9110 tokens, and field values as VCHAR / obs-text / SP / HTAB (llhttp accepts the same).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD_LINE = _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*"
_REQUEST_LINE = rb"(%b) ([\x21-\x7e]+) HTTP/1\.([01])" % _TOKEN
_REQUEST_HEAD = re.compile(rb"%b(?:\r\n%b)*" % (_REQUEST_LINE, _FIELD_LINE))
_REQUEST_LINE_ONLY = re.compile(_REQUEST_LINE)
_TRAILER_SECTION = re.compile(rb"(?:%b\r\n)*" % _FIELD_LINE)
_FRAMING_FIELDS = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection|expect|upgrade):([^\r]*)", re.IGNORECASE
)
_ABSOLUTE_TARGET = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[\x21-\x7e]*")
_AUTHORITY_TARGET = re.compile(rb"[\x21-\x7e]*:[0-9]+")
_EMPTY_LINES = re.compile(rb"[\r\n]+")
_CHUNK_SIZE_LINE = re.compile(
    rb'([0-9A-Fa-f]{1,16})(?:;%b(?:=(?:%b|"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"))?)*'
    % (_TOKEN, _TOKEN)
)

# PythonParser states
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _DONE = range(7)


class PythonParser(RequestParser):
    """The pure-Python parser: a state machine over the stream, with regular expressions for the syntax.

    Syntax follows RFC 9112 strictly (single spaces in the request line, CRLF line ends, no obs-fold,
    HTTP/1.0 or 1.1); any request method that is a token is accepted. Empty lines before a request
    line are skipped, up to :data:`MAX_EMPTY_LINES` bytes of them; a chunk-size line (extensions and
    CRLF included) is held to ``max_head_size`` bytes. Both limits answer 400.
    """

    name = "python"

    def __init__(self, max_head_size: int = MAX_HEAD_SIZE, max_body_size: int = MAX_BODY_SIZE) -> None:
        super().__init__(max_head_size, max_body_size)
        self._state = _HEAD
        self._pending = b""  # the unfinished section or line, at most max_head_size bytes
        self._scanned = 0  # how much of _pending has been searched for its end already
        self._remaining = 0  # body or chunk bytes still to come
        self._body = 0  # chunked body bytes received so far
        self._empty = 0  # bytes of empty lines skipped since the last request

    @property
    def buffered(self) -> int:
        """How many received bytes the parser holds, waiting for the rest of a section or line."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[int]:
        out: list[int] = []
        self._out = out
        if self._state == _DONE:
            return out
        try:
            self._pending = self._consume(self._pending + data if self._pending else data)
        except _Rejected as exc:
            out.append(exc.reply)
            self._state = _DONE
            self._pending = b""
        return out

    def _consume(self, buf: bytes) -> bytes:
        """Run the state machine over ``buf``; return its unconsumed tail."""
        pos, size, state = 0, len(buf), self._state
        limit = self.max_head_size
        while pos < size:
            if state == _HEAD:
                first = buf[pos]
                if first == 13 or first == 10:  # empty lines before a request line are skipped, a run at once
                    run = _EMPTY_LINES.match(buf, pos).end()  # type: ignore[union-attr]  # it matches here
                    self._empty += run - pos
                    if self._empty > MAX_EMPTY_LINES:
                        raise _Rejected(Reply.BAD_REQUEST)
                    pos = run
                    continue
                self._empty = 0
                end = buf.find(b"\r\n\r\n", pos + max(self._scanned - 3, 0))
                if end < 0:
                    if size - pos >= limit:  # it will exceed the limit whatever comes next
                        raise _Rejected(Reply.HEADERS_TOO_LARGE)
                    self._check_unfinished_head(buf, pos)
                    self._scanned = size - pos
                    break
                self._scanned = 0
                if end + 4 - pos > limit:
                    raise _Rejected(Reply.HEADERS_TOO_LARGE)
                state = self._parse_head(buf[pos:end])
                pos = end + 4
            elif state in (_BODY, _CHUNK_DATA):
                take = min(self._remaining, size - pos)
                pos += take
                self._remaining -= take
                if state == _CHUNK_DATA:
                    self._body += take
                    if self._body > self.max_body_size:
                        raise _Rejected(Reply.CONTENT_TOO_LARGE)
                if not self._remaining:
                    state = self._complete() if state == _BODY else _CHUNK_END
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if size - pos >= limit:  # its CRLF still to come, it will be longer than the limit
                        raise _Rejected(Reply.BAD_REQUEST)
                    break
                if end + 2 - pos > limit:  # a chunk-size line, extensions included, is held to the head's limit
                    raise _Rejected(Reply.BAD_REQUEST)
                match = _CHUNK_SIZE_LINE.fullmatch(buf, pos, end)
                if match is None:
                    raise _Rejected(Reply.BAD_REQUEST)
                self._remaining = int(match[1], 16)
                state = _CHUNK_DATA if self._remaining else _TRAILERS
                pos = end + 2
            elif state == _CHUNK_END:
                if size - pos < 2:
                    if buf[pos] != 13:
                        raise _Rejected(Reply.BAD_REQUEST)
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise _Rejected(Reply.BAD_REQUEST)
                pos += 2
                state = _CHUNK_SIZE
            elif state == _TRAILERS:
                if buf.startswith(b"\r\n", pos):
                    end = pos
                else:
                    end = buf.find(b"\r\n\r\n", pos + max(self._scanned - 3, 0))
                    if end < 0:
                        if size - pos >= limit:
                            raise _Rejected(Reply.HEADERS_TOO_LARGE)
                        self._scanned = size - pos
                        break
                    end += 2  # the last field line's CRLF belongs to the section
                    self._scanned = 0
                    if end + 2 - pos > limit:
                        raise _Rejected(Reply.HEADERS_TOO_LARGE)
                    if _TRAILER_SECTION.fullmatch(buf, pos, end) is None:
                        raise _Rejected(Reply.BAD_REQUEST)
                pos = end + 2
                state = self._complete()
            else:  # _DONE: input after a final reply is ignored
                pos = size
        self._state = state
        return buf[pos:] if pos < size else b""

    @staticmethod
    def _check_unfinished_head(buf: bytes, pos: int) -> None:
        """Refuse an unfinished head at once when what it holds already cannot be valid."""
        if buf.count(b"\n", pos) != buf.count(b"\r\n", pos):  # a bare LF ends no line
            raise _Rejected(Reply.BAD_REQUEST)
        line_end = buf.find(b"\r\n", pos)
        if line_end >= 0 and _REQUEST_LINE_ONLY.fullmatch(buf, pos, line_end) is None:
            raise _Rejected(Reply.BAD_REQUEST)

    def _parse_head(self, head: bytes) -> int:
        """Parse a complete request line and header fields (without the blank line); return the next state."""
        match = _REQUEST_HEAD.fullmatch(head)
        if match is None:
            raise _Rejected(Reply.BAD_REQUEST)
        method, target, minor = match.group(1, 2, 3)
        if target[0] != 47 and not (  # not origin-form "/..."
            target == b"*"
            or _ABSOLUTE_TARGET.fullmatch(target)
            or (method == b"CONNECT" and _AUTHORITY_TARGET.fullmatch(target))
        ):
            raise _Rejected(Reply.BAD_REQUEST)
        self._begin_head()
        for name, value in _FRAMING_FIELDS.findall(head):
            self._field(name.lower(), value)
        self._finish_head(method, minor == b"1")
        if self._upgrading:  # the bytes after an upgrade request are not HTTP; nothing more is read
            return self._complete()
        if self._chunked:
            self._body = 0
            return _CHUNK_SIZE
        if self._length:
            self._remaining = self._length
            return _BODY
        return self._complete()

    def _complete(self) -> int:
        """Report the finished request; return the next state."""
        self._out.append(self._reply)
        return _DONE if self._reply >= Reply.CLOSE else _HEAD


class HttptoolsParser(RequestParser):
    """The parser on ``httptools`` (llhttp): llhttp frames and validates, callbacks apply the shared rules.

    llhttp holds no request bytes, but ``httptools`` gathers each header field before reporting it, so the
    size of an unfinished header or trailer section is tracked here: exactly, from the parsed fields, once
    the section is complete (request line, fields, separators and CRLFs as a canonical request spells
    them); as a lower bound that grows by every chunk received while it is unfinished.
    """

    name = "httptools"

    def __init__(self, max_head_size: int = MAX_HEAD_SIZE, max_body_size: int = MAX_BODY_SIZE) -> None:
        if _httptools is None:
            raise RuntimeError("httptools is not installed; use the 'python' parser")
        super().__init__(max_head_size, max_body_size)
        self._parser = _httptools.HttpRequestParser(self)
        self._errors = (_httptools.HttpParserError, _httptools.HttpParserUpgrade)
        self._done = False
        self._rejected = Reply.BAD_REQUEST  # the reply when llhttp stops on an error
        self._in_head = False
        self._in_section = False  # inside a header or trailer section
        self._fresh = False  # that section started during the current feed
        self._line_known = False  # the last LF received is known to end one of the section's lines
        self._body_in_feed = False  # body bytes came earlier in the current feed
        self._section = 0  # its size so far, counted from the parsed fields
        self._floor = 0  # a lower bound on its size in raw bytes
        self._body = 0
        self._idle = True  # between requests: no request begun since the last one completed
        self._empty = 0  # bytes of empty lines seen at the start of feeds since the last request began
        self._in_size_line = False  # inside a chunk-size line
        self._line_fresh = False  # that line began during the current feed
        self._size_line = 0  # its bytes so far
        self._line_ended = False  # a chunk-size line begun in an earlier feed ended in this one

    def feed(self, data: bytes) -> list[int]:
        out: list[int] = []
        self._out = out
        if self._done:
            return out
        if self._idle and data and (data[0] == 13 or data[0] == 10):
            # llhttp skips empty lines before a request without a word; those that start a feed are counted
            self._empty += _EMPTY_LINES.match(data).end()  # type: ignore[union-attr]  # it matches here
            if self._empty > MAX_EMPTY_LINES:
                out.append(Reply.BAD_REQUEST)
                self._done = True
                return out
        self._fresh = self._body_in_feed = False
        try:
            self._parser.feed_data(data)
        except self._errors:
            if not self._done:  # an error, not the stop after a final reply
                out.append(self._rejected)
                self._done = True
            return out
        if self._line_ended:  # a chunk-size line begun in an earlier feed ended at this feed's first LF
            self._line_ended = False
            if self._size_line + data.find(b"\n") + 1 > self.max_head_size:
                out.clear()  # nothing was answered in this feed before that line ended
                out.append(Reply.BAD_REQUEST)
                self._done = True
                return out
        if self._in_size_line:
            # llhttp reports no chunk extensions: a line is measured at the ends of feeds, exactly, while unfinished,
            # and when it ends if it began in an earlier feed (one inside a feed is not seen: no longer than it)
            if self._line_fresh:  # it began after the last LF of this feed
                self._line_fresh = False
                self._size_line = len(data) - 1 - data.rfind(b"\n")
            else:
                self._size_line += len(data)
            if self._size_line >= self.max_head_size:  # like PythonParser: its CRLF would take it past the limit
                out.append(Reply.BAD_REQUEST)
                self._done = True
                return out
        if self._in_section:
            if not self._fresh:
                self._floor += len(data)
            else:
                self._floor = self._section + self._unfinished_line(data)
            if self._floor >= self.max_head_size:  # like PythonParser: it can only grow past the limit
                out.append(Reply.HEADERS_TOO_LARGE)
                self._done = True
        return out

    def _unfinished_line(self, data: bytes) -> int:
        """A lower bound on the bytes of the section's unfinished line not yet counted in ``_section``."""
        tail = len(data) - 1 - data.rfind(b"\n")
        if self._line_known:  # the last LF received ended one of the section's lines
            return tail
        if self._body_in_feed:  # the tail may hold the end of an earlier request's body
            return 0
        # the tail is the request line so far, after any CRs skipped between requests; its URL is
        # already counted
        return max(len(data[len(data) - tail :].lstrip(b"\r")) - self._section, 0)

    def _reject(self, reply: int) -> NoReturn:
        self._rejected = reply
        raise _Rejected(reply)

    # llhttp callbacks (an exception raised here stops llhttp and comes out of feed_data)

    def on_message_begin(self) -> None:
        self._begin_head()
        self._in_head = self._in_section = self._fresh = True
        self._idle = False
        self._empty = 0
        self._line_known = False  # the request line may still be unfinished
        self._section = 0

    def on_url(self, url: bytes) -> None:
        self._section += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._section += len(name) + len(value) + 4  # ": " and CRLF
        self._line_known = True
        if self._in_head:
            try:
                self._field(name.lower(), value)
            except _Rejected as exc:
                self._rejected = exc.reply
                raise

    def on_headers_complete(self) -> None:
        self._in_head = self._in_section = False
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._reject(Reply.BAD_REQUEST)
        method = parser.get_method()
        if self._section + len(method) + 14 > self.max_head_size:  # 2 SP, "HTTP/1.1", 2 CRLF
            self._reject(Reply.HEADERS_TOO_LARGE)
        try:
            self._finish_head(method, version == "1.1")
        except _Rejected as exc:
            self._rejected = exc.reply
            raise
        self._body = 0
        if self._chunked:  # the first chunk-size line follows
            self._in_size_line = self._line_fresh = True

    def on_body(self, body: bytes) -> None:
        self._in_section = False
        self._body_in_feed = True
        self._body += len(body)
        if self._body > self.max_body_size:
            self._reject(Reply.CONTENT_TOO_LARGE)

    def on_chunk_header(self) -> None:
        # the last chunk's header is followed by the trailer section; a data chunk's by on_body
        self._in_section = self._fresh = self._line_known = True
        self._section = 0
        self._in_size_line = False
        if not self._line_fresh:
            self._line_ended = True

    def on_chunk_complete(self) -> None:
        # after a data chunk's CRLF the next chunk-size line follows (after the trailers, the end of the request)
        self._in_size_line = self._line_fresh = True

    def on_message_complete(self) -> None:
        self._in_section = self._in_size_line = False
        self._idle = True
        if self._chunked and self._section + 2 > self.max_head_size:
            self._reject(Reply.HEADERS_TOO_LARGE)
        reply = self._reply
        self._out.append(reply)
        if reply >= Reply.CLOSE:
            self._done = True
            raise _Rejected(reply)  # stops llhttp: nothing after a final reply is read


PARSERS: Final = ("httptools", "python")


def default_parser() -> str:
    """The parser :func:`make_parser` picks when told nothing: httptools when importable."""
    return "httptools" if _httptools is not None else "python"


def make_parser(
    parser: str | None = None, max_head_size: int = MAX_HEAD_SIZE, max_body_size: int = MAX_BODY_SIZE
) -> RequestParser:
    """A new request parser: ``"httptools"``, ``"python"``, or None for :func:`default_parser`.

    Asking for ``"httptools"`` without it installed raises RuntimeError; an unknown name, ValueError.
    """
    name = default_parser() if parser is None else parser
    if name == "httptools":
        return HttptoolsParser(max_head_size, max_body_size)
    if name == "python":
        return PythonParser(max_head_size, max_body_size)
    raise ValueError(f"unknown HTTP parser {parser!r}; expected one of {PARSERS} or None")


class HttpSession:
    """One connection's HTTP/1.1 conversation: request bytes in, response bytes out.

    :meth:`receive` takes whatever bytes arrived, split anywhere, and returns the responses to every
    request they complete, in order and concatenated, with whether the connection must close once they
    are written (after ``Connection: close``, an HTTP/1.0 request without keep-alive, an upgrade, or an
    error: 400 malformed, 413 body over ``max_body_size``, 431 header section over ``max_head_size``).
    Once it has said close it returns ``(b"", True)``.
    """

    __slots__ = ("_closed", "_parser")

    def __init__(
        self, parser: str | None = None, max_head_size: int = MAX_HEAD_SIZE, max_body_size: int = MAX_BODY_SIZE
    ) -> None:
        self._parser = make_parser(parser, max_head_size, max_body_size)
        self._closed = False

    @property
    def parser(self) -> RequestParser:
        """The request parser in use."""
        return self._parser

    def receive(self, data: bytes, last: bool = False) -> tuple[bytes, bool]:
        """Feed inbound bytes; return the responses they complete and whether to close after writing them.

        ``last`` (the server is draining): the final complete response says ``Connection: close`` and ends the
        conversation, so the client reconnects elsewhere and no request is cut.
        """
        replies = self._parser.feed(data)
        if not replies:
            return b"", self._closed
        if last and replies[-1] < Reply.CONTINUE:
            replies[-1] = Reply.CLOSE_HEAD if replies[-1] & 1 else Reply.CLOSE
        table = DATE_CACHE.replies
        out = table[replies[0]] if len(replies) == 1 else b"".join([table[reply] for reply in replies])
        if replies[-1] >= Reply.CLOSE:
            self._closed = True
        return out, self._closed
