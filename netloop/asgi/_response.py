"""An HTTP/1.1 response as the app sends it: the head waits for the first body message and leaves with it.

So a response sent whole (one ``http.response.body`` without ``more_body``) gets a ``content-length`` and goes out in
one write; a streamed one without ``content-length`` is chunked (close-delimited for an HTTP/1.0 client).
"""

from __future__ import annotations

import http
import re
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from netloop._conn import Conn
from netloop.asgi._types import Message

if TYPE_CHECKING:
    from netloop.asgi._cycle import Batch, Cycle

# Header names are tokens; values carry no control byte but tab (no CR or LF: no response splitting).
_BAD_NAME = re.compile(rb'[\x00-\x20\x7f-\xff()<>@,;:\[\]={}\\"/?]')
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_LAST_CHUNK = b"0\r\n\r\n"

_status_lines: dict[int, bytes] = {}
_date: list[Any] = [0, b""]


def status_line(status: int) -> bytes:
    line = _status_lines.get(status)
    if line is None:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _status_lines[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())
    return line


def date_header() -> bytes:
    """``date: ...\\r\\n`` for this second (formatted once a second)."""
    now = int(time.time())
    if _date[0] != now:
        _date[1] = b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
        _date[0] = now
    return _date[1]  # type: ignore[no-any-return]


def error_response(status: int, reason: str) -> bytes:
    """A whole plain-text response that closes the connection."""
    body = reason.encode()
    return b"".join(
        (
            status_line(status),
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body),
            date_header(),
            b"\r\n",
            body,
        )
    )


# Headers an app sends, checked once: (name, value) -> (kind, content-length, the header's line). Apps send the
# same few headers again and again; a long value, or a pair seen first after the table is full, is checked every time
# (so the table stays within _CHECKED_MAX pairs of short values).
_PLAIN = 0
_LENGTH = 1
_DATED = 2
_checked: dict[tuple[bytes, bytes], tuple[int, int, bytes]] = {}
_CHECKED_MAX = 1024
_CHECKED_VALUE_MAX = 256


class Response:
    """The response of one request: its head until the first body message, then what is left to send."""

    __slots__ = ("chunked", "cycle", "head", "no_body", "remaining", "status")

    def __init__(self, cycle: Cycle, message: Message) -> None:
        self.cycle = cycle
        status = self.status = int(message["status"])
        parts = [_status_lines.get(status) or status_line(status)]
        length: int | None = None
        chunked = False
        dated = False
        for pair in message.get("headers", ()):
            try:
                entry = _checked.get(pair)
            except TypeError:  # a pair given as a list: not a key
                entry = None
            if entry is None:
                name, value = pair
                if _BAD_NAME.search(name) or not name or _BAD_VALUE.search(value):
                    raise RuntimeError(f"Invalid HTTP header: {name!r}: {value!r}")
                lower = name.lower()
                if lower == b"transfer-encoding":
                    if value.strip().lower() == b"chunked":
                        chunked = True
                        continue  # chunked by this server
                elif lower == b"connection":
                    if value.lower().find(b"close") >= 0:  # not ``in``: see _http._HASH
                        cycle.keep_alive = False
                    continue  # this server says whether the connection stays
                if lower == b"content-length":
                    if not value.strip().isdigit():
                        raise RuntimeError(f"Invalid content-length header: {value!r}")
                    entry = (_LENGTH, int(value), b"%s: %s\r\n" % (name, value))
                else:
                    entry = (_DATED if lower == b"date" else _PLAIN, 0, b"%s: %s\r\n" % (name, value))
                if len(_checked) < _CHECKED_MAX and len(value) <= _CHECKED_VALUE_MAX and type(pair) is tuple:
                    _checked[pair] = entry
            kind, number, line = entry
            if kind:
                if kind == _LENGTH:
                    if length is not None:
                        raise RuntimeError(f"Invalid content-length header: {pair[1]!r}")
                    length = number
                else:
                    dated = True
            parts.append(line)
        if not dated:
            now = int(time.time())
            if _date[0] != now:
                date_header()
            parts.append(_date[1])
        self.head: list[bytes] | None = parts
        self.no_body = cycle.head_only or status in (204, 304) or status < 200
        if self.no_body or length is not None:
            chunked = False
        self.remaining = length
        self.chunked = chunked

    def write(self, out: Conn | Batch, body: bytes, more: bool) -> None:
        """Write one ``http.response.body`` to ``out`` (the connection, or the responses held to leave together),
        with the head before the first, in the same write. Raises ``RuntimeError`` for a body that does not fit
        ``content-length``; ``ConnClosedError`` when the connection is gone."""
        head = self.head
        if head is not None:
            self.head = None
            # The head is complete now that the first body message (``body``, ``more``) is known.
            cycle = self.cycle
            http10 = cycle.scope["http_version"] == "1.0"
            if not cycle.body_done:
                cycle.keep_alive = False  # answered before its body came whole: what follows is not a next request
            if not self.no_body and self.remaining is None and not self.chunked:
                if not more:
                    self.remaining = len(body)
                    head.append(b"content-length: %d\r\n" % len(body))
                elif http10:
                    cycle.keep_alive = False  # close-delimited: the close ends the body
                else:
                    self.chunked = True
            if self.chunked:
                if http10:
                    self.chunked = False
                    cycle.keep_alive = False
                else:
                    head.append(b"transfer-encoding: chunked\r\n")
            if not cycle.keep_alive:
                head.append(b"connection: close\r\n")
            elif http10:
                head.append(b"connection: keep-alive\r\n")
            head.append(b"\r\n")
            if self.no_body:
                out.write(b"".join(head))
                return
        elif self.no_body:
            return
        remaining = self.remaining
        if remaining is not None:
            n = len(body)
            if n > remaining:
                self.cycle.keep_alive = False
                raise RuntimeError("Response content longer than Content-Length")
            self.remaining = remaining = remaining - n
            if head is not None:
                head.append(body)
                out.write(b"".join(head))
            elif body:
                out.write(body)
            if not more and remaining:
                self.cycle.keep_alive = False
                raise RuntimeError("Response content shorter than Content-Length")
            return
        data = b"".join(head) if head is not None else b""
        if self.chunked:
            if body:
                data += b"%x\r\n%s\r\n" % (len(body), body)
            if not more:
                data += _LAST_CHUNK
        else:
            data += body  # close-delimited
        if data:
            out.write(data)
