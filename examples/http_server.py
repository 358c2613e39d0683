"""HTTP/1.1 on netloop: requests are framed straight from the connection's buffer with ``peek`` and ``discard``.

    python -m examples.http_server --port 8080 [--host 127.0.0.1] [--loops N] [--read-timeout 10]
        [--tls-cert FILE --tls-key FILE]   (HTTPS; see python -m examples.certs)

Every request gets ``Hello, World!``. A request head stays in netloop's inbound buffer until its blank line has
arrived (bytes not consumed are kept for the next ``on_traffic``), so nothing is copied twice and the head's size is
bounded exactly: over ``MAX_HEAD`` bytes is a 431. A malformed head is a 400, a ``Content-Length`` over ``MAX_BODY``
a 413, a ``Transfer-Encoding`` (chunked bodies) a 501; each error is answered, then the connection closes.
Keep-alive and pipelining come from the loop: every request complete in the buffer is answered, in order, in one
write. A client that pipelines without reading is held once its answers pass ``write_buffer_cap`` (``on_drain``
resumes it). ``--read-timeout``: a request must arrive whole within that many seconds of its first byte. On
SIGTERM each connection's next answer says ``Connection: close``.
"""

from __future__ import annotations

import argparse
import logging
import re
from email.utils import formatdate

import netloop
from examples.certs import add_tls_flags, tls_context

MAX_HEAD = 8 * 1024
"""Most bytes of a request line and header fields, blank line included."""
MAX_BODY = 1024 * 1024
"""Most bytes of a request body (``Content-Length``)."""
READ_TIMEOUT = 10.0
"""Default seconds a request may take to arrive, from its first byte to its last."""

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
REQUEST_LINE = re.compile(rb"(%b) ([\x21-\x7e]+) HTTP/1\.([01])" % TOKEN)
FIELD = re.compile(rb"(%b):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*" % TOKEN)
STATUS = {400: b"Bad Request", 413: b"Content Too Large", 431: b"Request Header Fields Too Large"}
STATUS[501] = b"Not Implemented"

log = logging.getLogger(__name__)


class Refused(Exception):
    """A request the server answers with ``status`` and then closes the connection."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Session:
    """``conn.context``: how to answer the request in progress, and its body bytes still to discard."""

    __slots__ = ("body", "head_only", "keep_alive")

    def __init__(self) -> None:
        self.body = 0
        self.keep_alive = True
        self.head_only = False

    def parse_head(self, head: bytes) -> bool:
        """Take in a request head (without its blank line); True when it expects a ``100 Continue``.

        Raises :class:`Refused` for a request this server does not answer with 200.
        """
        line, *fields = head.split(b"\r\n")
        request = REQUEST_LINE.fullmatch(line)
        if request is None or request[1] == b"CONNECT":  # a 200 to CONNECT would open a tunnel
            raise Refused(400)
        http11, length, expect = request[3] == b"1", None, False
        self.keep_alive, self.head_only = http11, request[1] == b"HEAD"
        for field in fields:
            match = FIELD.fullmatch(field)
            if match is None:
                raise Refused(400)
            name, value = match[1].lower(), match[2]
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    raise Refused(400)
                length = int(value)
            elif name == b"transfer-encoding":
                raise Refused(501)
            elif name == b"connection":
                tokens = {token.strip(b" \t") for token in value.lower().split(b",")}
                self.keep_alive = b"close" not in tokens and (http11 or b"keep-alive" in tokens)
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
        if length is not None and length > MAX_BODY:
            raise Refused(413)
        self.body = length or 0
        return expect and http11 and self.body > 0


class HttpHandler(netloop.EventHandler):
    """Answers every request with ``Hello, World!``; run it with ``ticker=True`` to keep the Date header current."""

    def __init__(self, date_refresh: float = 1.0) -> None:
        self.date_refresh = date_refresh
        self.date = b""
        self.draining = False
        self.refresh()

    def refresh(self, now: float | None = None) -> None:
        """Format the Date header once (for ``now``, seconds since the epoch), not per request."""
        self.date = formatdate(now, usegmt=True).encode()

    def on_boot(self, engine: netloop.Engine) -> None:
        log.info("HTTP server listening on %s", ", ".join(engine.addrs))

    def on_tick(self) -> float:
        self.refresh()
        return self.date_refresh

    def on_open(self, conn: netloop.Conn) -> None:
        conn.context = Session()

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        conn.context = None  # the session goes now, even while the loop still holds the closed Conn for a while

    def on_shutdown(self, engine: netloop.Engine) -> None:
        self.draining = True  # with drain_timeout: each connection's next answer ends it

    def on_drain(self, conn: netloop.Conn) -> netloop.Action | None:
        return self.on_traffic(conn) if conn.inbound_buffered() else None  # the requests held meanwhile

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        if conn.outbound_buffered() > conn.event_loop.options.write_buffer_cap:
            return None  # a client that pipelines without reading: its requests wait in the buffer for on_drain
        out: list[bytes] = []
        try:
            close = self.answer(conn, conn.context, out)
        except Refused as refused:
            out.append(self.response(refused.status, False, STATUS[refused.status]))
            close = True
        if out:
            conn.writev(out)
        return netloop.Action.CLOSE if close else None

    def answer(self, conn: netloop.Conn, session: Session, out: list[bytes]) -> bool:
        """Append the answers to the requests complete in ``conn``'s buffer to ``out``; True: close after them."""
        while True:
            if session.body:  # a body is discarded as it comes: never held
                session.body -= conn.discard(min(session.body, conn.inbound_buffered()))
                if session.body:
                    return False
                if self.done(conn, session, out):
                    return True
            data = conn.peek(min(conn.inbound_buffered(), MAX_HEAD))
            if data[:1] in (b"\r", b"\n"):  # empty lines before a request line are skipped
                conn.discard(len(data) - len(data.lstrip(b"\r\n")))
                continue
            if data:
                conn.start_message()  # read_timeout now bounds this request, head and body (a no-op if started)
            end = data.find(b"\r\n\r\n")
            if end < 0:
                line_end = data.find(b"\r\n")
                if line_end >= 0 and not REQUEST_LINE.fullmatch(data, 0, line_end):
                    raise Refused(400)  # garbage is refused once its first line ends, not at MAX_HEAD
                if len(data) == MAX_HEAD:
                    raise Refused(431)
                return False
            if session.parse_head(data[:end]):
                out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
            session.keep_alive &= not self.draining
            conn.discard(end + 4)
            if not session.body and self.done(conn, session, out):
                return True

    def done(self, conn: netloop.Conn, session: Session, out: list[bytes]) -> bool:
        """The request is complete: answer it; True when the connection closes after the answer."""
        conn.end_message()
        out.append(self.response(200, session.keep_alive, head_only=session.head_only))
        return not session.keep_alive

    def response(self, status: int, keep_alive: bool, body: bytes = b"Hello, World!", head_only: bool = False) -> bytes:
        head = b"HTTP/1.1 %d %b\r\nServer: netloop\r\nDate: %b\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        head %= (status, STATUS.get(status, b"OK"), self.date, len(body))
        head += b"\r\n" if keep_alive else b"Connection: close\r\n\r\n"
        return head if head_only else head + body


def address(host: str, port: int) -> str:
    """The netloop TCP address of ``host`` (a name, IPv4 or IPv6 literal) and ``port``."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def start(
    host: str = "127.0.0.1", port: int = 0, *, read_timeout: float = READ_TIMEOUT, **options: object
) -> netloop.Engine:
    """Serve in the background; ``engine.addrs`` tells the port."""
    return netloop.start(HttpHandler(), address(host, port), ticker=True, read_timeout=read_timeout, **options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--loops", type=int, default=1, help="event loops (threads); 0 means one per CPU")
    parser.add_argument("--read-timeout", type=float, default=READ_TIMEOUT, help="seconds a request may take")
    add_tls_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    netloop.run(
        HttpHandler(),
        address(args.host, args.port),
        num_event_loop=args.loops,
        multicore=args.loops == 0,
        ticker=True,
        read_timeout=args.read_timeout,
        drain_timeout=5.0,
        tls=tls_context(args),
    )


if __name__ == "__main__":
    main()
