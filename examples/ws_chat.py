"""A chat in the browser over WebSocket: one broadcast frame, encoded once, reaches members on every event loop.

    python -m examples.ws_chat --port 8000 [--host 127.0.0.1] [--loops 4] [--read-timeout 10]
    # then open http://127.0.0.1:8000/ in two browser tabs

One port serves the page (GET /) and the WebSocket endpoint (GET /ws, RFC 6455, framed by the sans-I/O ``wsproto``).
A broadcast goes to each member with ``conn.async_write``, the thread-safe write; server frames are unmasked, so the
same bytes serve everyone. Bounds: a request head over ``MAX_HEAD`` bytes gets 431; a message over ``MAX_MESSAGE``
bytes closes with 1009, one in over ``MAX_FRAGMENTS`` frames (empty ones cost 6 bytes) with 1008; a head or a
fragmented message must arrive within ``--read-timeout``; a member that stops reading is cut off at
``LIMITS["write_buffer_limit"]``. Protocol errors close with wsproto's code (1002, 1007); a stopping server says 1001.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import struct
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request, TextMessage
from wsproto.utilities import RemoteProtocolError

import netloop

MAX_HEAD = 8 * 1024
MAX_MESSAGE = 64 * 1024
MAX_FRAGMENTS = 1024
MAX_NAME = 32
LIMITS = {"write_buffer_cap": 256 * 1024, "write_buffer_limit": 1024 * 1024}
GOING_AWAY = 1001
UNSUPPORTED = 1003
POLICY = 1008
TOO_BIG = 1009

log = logging.getLogger(__name__)


def address(host: str, port: int) -> str:
    """The netloop TCP address of ``host`` (a name, IPv4 or IPv6 literal) and ``port``."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def frame(opcode: int, payload: bytes) -> bytes:
    """One complete, unmasked server frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def answer(
    conn: netloop.Conn, status: str, body: bytes = b"", kind: str = "text/plain", extra: str = ""
) -> netloop.Action:
    """Write a whole HTTP response (the status line's text is the default body); the connection closes after it."""
    body = body or f"{status}\n".encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}; charset=utf-8\r\nContent-Length: {len(body)}\r\n{extra}"
    conn.write(head.encode() + b"Connection: close\r\n\r\n" + body)
    return netloop.Action.CLOSE


@dataclass(slots=True)
class Member:
    """One connection's state: its wsproto connection once upgraded, its name, and the message being received."""

    ws: WSConnection | None = None
    name: str = ""
    parts: list[str] = field(default_factory=list)
    size: int = 0
    fragments: int = 0


class WsChat(netloop.EventHandler):
    """Serves the page and the chat; members are shared by every loop under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.members: dict[netloop.Conn, str] = {}
        self.count = 0

    def on_open(self, conn: netloop.Conn) -> None:
        conn.context = Member()

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        member: Member = conn.context
        if member.ws is None:
            return self._http(conn, member)
        return self._websocket(conn, member, conn.next())

    def _http(self, conn: netloop.Conn, member: Member) -> netloop.Action | None:
        conn.start_message()  # with read_timeout, the head must arrive whole in time, however slowly it comes
        data = conn.peek(min(conn.inbound_buffered(), MAX_HEAD))  # the head waits in netloop's buffer
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None if len(data) < MAX_HEAD else answer(conn, "431 Request Header Fields Too Large")
        conn.end_message()
        head = data[: end + 4]
        conn.discard(end + 4)
        line = head.split(b"\r\n", 1)[0].split(b" ")
        if len(line) != 3 or line[0] != b"GET" or not line[2].startswith(b"HTTP/1."):
            return answer(conn, "400 Bad Request")
        path = line[1].split(b"?", 1)[0]
        if path == b"/":
            return answer(
                conn, "200 OK", resources.files("examples").joinpath("ws_chat.html").read_bytes(), "text/html"
            )
        return self._upgrade(conn, member, head) if path == b"/ws" else answer(conn, "404 Not Found")

    def _upgrade(self, conn: netloop.Conn, member: Member, head: bytes) -> netloop.Action | None:
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(head)
            request = next((e for e in ws.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:
            return self._reject(conn, str(exc))
        if request is None:
            return self._reject(conn, "not a WebSocket upgrade")
        try:  # wsproto checks the version and that a key is there, not the key itself
            key = base64.b64decode(dict(request.extra_headers).get(b"sec-websocket-key", b""), validate=True)
        except binascii.Error:
            key = b""
        if len(key) != 16:
            return self._reject(conn, "bad Sec-WebSocket-Key")
        conn.write(ws.send(AcceptConnection()))
        member.ws = ws
        with self.lock:
            self.count += 1
            member.name = f"guest{self.count}"
            self.members[conn] = member.name
        welcome = {"type": "welcome", "name": member.name, "loop": conn.event_loop.index}
        conn.write(frame(0x1, json.dumps(welcome).encode()))
        self.broadcast({"type": "joined", "name": member.name})
        return self._websocket(conn, member, conn.next()) if conn.inbound_buffered() else None

    def _reject(self, conn: netloop.Conn, why: str) -> netloop.Action:
        log.debug("ws_chat: refused an upgrade from %r: %s", conn.remote_addr, why)
        return answer(
            conn, "400 Bad Request", f"400 Bad Request: {why}\n".encode(), extra="Sec-WebSocket-Version: 13\r\n"
        )

    def _websocket(self, conn: netloop.Conn, member: Member, data: bytes) -> netloop.Action | None:
        ws = member.ws
        assert ws is not None
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, TextMessage):
                member.size += len(event.data)
                member.fragments += 1
                if member.size > MAX_MESSAGE:
                    return self._close(conn, ws, TOO_BIG, "message too big")
                if member.fragments > MAX_FRAGMENTS:  # empty frames cost nothing to send: count them too
                    return self._close(conn, ws, POLICY, "too many fragments")
                if event.data:
                    member.parts.append(event.data)
                if event.message_finished:
                    conn.end_message()
                    text = "".join(member.parts)
                    member.parts, member.size, member.fragments = [], 0, 0
                    self._said(conn, member, text)
                else:
                    conn.start_message()  # a fragmented message must end within read_timeout too
            elif isinstance(event, BytesMessage):
                return self._close(conn, ws, UNSUPPORTED, "text messages only")
            elif isinstance(event, Ping):
                conn.write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                # The peer's close (or wsproto's verdict on a protocol error): answer it, then close the TCP side.
                if ws.state.name not in ("CLOSED", "LOCAL_CLOSING"):
                    conn.write(ws.send(event.response()))
                return netloop.Action.CLOSE
        return None

    def _close(self, conn: netloop.Conn, ws: WSConnection, code: int, reason: str) -> netloop.Action:
        log.info("ws_chat: closing %r with %d: %s", conn.remote_addr, code, reason)
        conn.write(ws.send(CloseConnection(code=code, reason=reason)))
        return netloop.Action.CLOSE

    def _said(self, conn: netloop.Conn, member: Member, text: str) -> None:
        if text.startswith("/nick "):
            new = text[6:].strip()[:MAX_NAME] or "nobody"
            with self.lock:
                old, member.name = member.name, new
                self.members[conn] = new
            self.broadcast({"type": "renamed", "from": old, "to": new})
            return
        self.broadcast({"type": "message", "from": member.name, "text": text})

    def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every member, on whichever loop it is (one encoded frame for all)."""
        self._to_all(frame(0x1, json.dumps(message).encode()))

    def _to_all(self, data: bytes) -> None:
        with self.lock:
            members = list(self.members)
        for conn in members:
            try:
                conn.async_write(data)
            except netloop.EngineStoppedError:
                pass  # the engine is stopping: nobody left to tell

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        with self.lock:
            name = self.members.pop(conn, None)
        if name is not None:
            if isinstance(err, netloop.OutboundLimitError):
                log.info("ws_chat: %s stopped reading; cut off", name)
            self.broadcast({"type": "left", "name": name})

    def on_shutdown(self, engine: netloop.Engine) -> None:
        self._to_all(frame(0x8, struct.pack("!H", GOING_AWAY) + b"server shutting down"))


def start(host: str = "127.0.0.1", port: int = 0, *, loops: int = 2, **options: Any) -> netloop.Engine:
    """Serve the chat in the background; ``engine.addrs`` tells the port. ``options`` override ``LIMITS``."""
    return netloop.start(WsChat(), address(host, port), num_event_loop=loops, **{**LIMITS, **options})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--loops", type=int, default=2, help="event loops (threads); 0 means one per CPU")
    parser.add_argument("--read-timeout", type=float, default=10.0, help="seconds a request or message may take")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log.info("WebSocket chat on http://%s:%d/", args.host, args.port)
    options = {**LIMITS, "read_timeout": args.read_timeout, "multicore": args.loops == 0}
    netloop.run(WsChat(), address(args.host, args.port), num_event_loop=args.loops, **options)


if __name__ == "__main__":
    main()
