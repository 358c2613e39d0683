"""WebSocket for ASGI (wsproto): the connection after an HTTP/1.1 upgrade, the app running as one task.

Inbound frames are parsed in ``on_traffic`` and queued for the app's ``receive``; reading is held while more than
``QUEUE_HIGH_WATER`` bytes of messages wait for the app. A message past ``ws_max_size`` closes with 1009.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from netloop._conn import Conn
from netloop._errors import ConnClosedError
from netloop.aio import drain
from netloop.asgi._types import Message

if TYPE_CHECKING:
    from netloop.asgi._handler import ServerState

QUEUE_HIGH_WATER = 1 << 20
"""Message bytes waiting for the app before the connection's reading is held."""


class WebSocketProtocol:
    """``conn.context`` after a WebSocket upgrade."""

    def __init__(
        self,
        server: ServerState,
        conn: Conn,
        loop: asyncio.AbstractEventLoop,
        client: Any,
        server_addr: Any,
        headers: list[tuple[bytes, bytes]],
        url: bytes,
        http_version: str,
    ) -> None:
        self.server = server
        self.conn = conn
        self.loop = loop
        self.ws = WSConnection(ConnectionType.SERVER)
        self.queue: deque[Message] = deque()
        self.queued = 0
        self.held = False
        self.waiter: asyncio.Future[None] | None = None
        self.fragments: list[Any] = []
        self.fragment_size = 0
        self.accepted = False
        self.closed_sent = False
        self.disconnected = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_timer: asyncio.TimerHandle | None = None
        config = server.config
        parsed = httptools.parse_url(url)
        raw_path = parsed.path
        path = raw_path.decode("ascii", "replace")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = config.root_path
        protocols = [
            p.strip().decode("latin-1")
            for name, value in headers
            if name == b"sec-websocket-protocol"
            for p in value.split(b",")
            if p.strip()
        ]
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": http_version,
            "scheme": "wss" if server.scheme == "https" else "ws",
            "server": server_addr,
            "client": client,
            "root_path": root,
            "path": root + path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": parsed.query or b"",
            "headers": headers,
            "subprotocols": protocols,
            "state": server.state.copy(),
            "extensions": {},
        }
        if server.forwarded is not None and server.forwarded.trusts(client):
            server.forwarded.rewrite(self.scope)

    def start(self, data: bytes) -> None:
        self.data_received(data)

    # -- netloop events -------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        try:
            ws.receive_data(data)
            events = list(ws.events())
        except RemoteProtocolError as exc:
            self._protocol_error(exc)
            return
        for event in events:
            if isinstance(event, Request):
                self.push({"type": "websocket.connect"})
                self.server.tasks += 1
                self.loop.create_task(self.run())
            elif isinstance(event, (TextMessage, BytesMessage)):
                self._message(event)
            elif isinstance(event, Ping):
                self._send(event.response())
            elif isinstance(event, Pong):
                timer = self.pong_timer
                if timer is not None:
                    timer.cancel()
                    self.pong_timer = None
            elif isinstance(event, CloseConnection):
                if ws.state == ConnectionState.REMOTE_CLOSING:
                    self._send(event.response())
                self._disconnect(event.code, event.reason or "")
                self.conn.close()

    def eof_received(self) -> bool:
        self._disconnect(1006)
        return True

    def connection_lost(self) -> None:
        for timer in (self.ping_timer, self.pong_timer):
            if timer is not None:
                timer.cancel()
        self._disconnect(1006)

    def shutdown(self) -> None:
        if self.accepted and not self.closed_sent:
            self._close(1012, "")
        else:
            self.conn.close()

    # -- inbound ----------------------------------------------------------------------------------------------

    def _message(self, event: TextMessage | BytesMessage) -> None:
        data = event.data
        self.fragment_size += len(data)
        if self.fragment_size > self.server.config.ws_max_size:
            self._close(1009, "Message too big")
            self._disconnect(1009)
            return
        self.fragments.append(data)
        if not event.message_finished:
            return
        fragments, self.fragments = self.fragments, []
        size, self.fragment_size = self.fragment_size, 0
        if isinstance(event, TextMessage):
            self.push({"type": "websocket.receive", "text": "".join(fragments)}, size)
        else:
            self.push({"type": "websocket.receive", "bytes": b"".join(fragments)}, size)

    def push(self, message: Message, size: int = 0) -> None:
        self.queue.append(message)
        self.queued += size
        if self.queued > QUEUE_HIGH_WATER and not self.held:
            self.held = True
            self.conn.pause_reading()
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _disconnect(self, code: int, reason: str = "") -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self.close_code = code
        self.close_reason = reason
        self.push({"type": "websocket.disconnect", "code": code, "reason": reason})

    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        if not self.accepted:
            hint = exc.event_hint
            if hint is not None:
                self._send(hint)  # the handshake's own refusal (400, 426)
        elif not self.closed_sent:
            self._close(1002, "Protocol error")
        self._disconnect(1002)
        self.conn.close()

    async def receive(self) -> Message:
        if not self.queue and self.disconnected and self.close_code is not None:
            # asked again after the disconnect
            return {"type": "websocket.disconnect", "code": self.close_code, "reason": self.close_reason}
        while not self.queue:
            waiter = self.waiter = self.loop.create_future()
            await waiter
        message = self.queue.popleft()
        if message["type"] == "websocket.receive":
            self.queued -= len(message.get("text") or message.get("bytes") or b"")
            if self.held and self.queued <= QUEUE_HIGH_WATER // 2:
                self.held = False
                if not self.conn.closed:
                    self.conn.resume_reading()
        return message

    # -- outbound ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        server = self.server
        try:
            await server.app(self.scope, self.receive, self.send)
        except Exception as exc:
            server.log_app_error_ws(exc)
            if not self.accepted:
                self._reject(500)
            elif not self.closed_sent:
                self._close(1011, "")
        else:
            if not self.accepted and not self.closed_sent:
                server.log_app_error_ws(RuntimeError("ASGI callable returned without sending handshake."))
                self._reject(500)
            elif not self.closed_sent:
                self._close(1000, "")
        finally:
            server.tasks -= 1

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.closed_sent or self.conn.closed:
            raise ConnClosedError(f"websocket closed: {kind} not sent")
        if not self.accepted:
            if kind == "websocket.accept":
                headers = list(message.get("headers") or [])
                self._send(AcceptConnection(subprotocol=message.get("subprotocol"), extra_headers=headers))
                self.accepted = True
                interval = self.server.config.ws_ping_interval
                if interval:
                    self.ping_timer = self.loop.call_later(interval, self._ping)
            elif kind == "websocket.close":
                self._reject(403)
            else:
                raise RuntimeError(f"Expected ASGI message 'websocket.accept' or 'websocket.close', got {kind!r}")
            return
        if kind == "websocket.send":
            text = message.get("text")
            if text is not None:
                self._send(TextMessage(data=text))
            else:
                self._send(BytesMessage(data=message.get("bytes") or b""))
            conn = self.conn
            if conn.outbound_buffered():
                await drain(conn)
        elif kind == "websocket.close":
            self._close(int(message.get("code") or 1000), message.get("reason") or "")
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', got {kind!r}")

    def _send(self, event: Any) -> None:
        try:
            data = self.ws.send(event)
        except LocalProtocolError:
            return  # the connection is closing: nothing more goes out
        self._write(data)

    def _write(self, data: bytes) -> None:
        if not self.conn.closed:
            try:
                self.conn.write(data)
            except ConnClosedError:
                pass

    def _reject(self, status: int) -> None:
        self.closed_sent = True
        self._send(RejectConnection(status_code=status, headers=[(b"content-length", b"0")], has_body=False))
        self.conn.close()

    def _close(self, code: int, reason: str) -> None:
        self.closed_sent = True
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._send(CloseConnection(code=code, reason=reason))
        self.conn.close()

    def _ping(self) -> None:
        self.ping_timer = None
        if self.closed_sent or self.conn.closed or self.ws.state != ConnectionState.OPEN:
            return
        self._send(Ping(payload=b"netloop"))
        config = self.server.config
        if config.ws_ping_timeout and self.pong_timer is None:
            self.pong_timer = self.loop.call_later(config.ws_ping_timeout, self._pong_missed)
        if config.ws_ping_interval:
            self.ping_timer = self.loop.call_later(config.ws_ping_interval, self._ping)

    def _pong_missed(self) -> None:
        self.pong_timer = None
        if not self.closed_sent:
            self._close(1011, "keepalive ping timeout")
        self._disconnect(1011)
