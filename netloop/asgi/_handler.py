"""The netloop event handler that serves an ASGI application: one protocol object per connection in ``conn.context``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any, Protocol

from netloop._conn import Conn
from netloop._engine import Engine
from netloop._handler import Action, EventHandler
from netloop.asgi._config import Config, access_log, log
from netloop.asgi._cycle import Cycle, Rejected
from netloop.asgi._forwarded import TrustedProxies
from netloop.asgi._http import HttpProtocol
from netloop.asgi._lifespan import Lifespan, StartupFailed
from netloop.asgi._types import ASGIApp


class ConnProtocol(Protocol):
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool: ...
    def connection_lost(self) -> None: ...
    def shutdown(self) -> None: ...


class ServerState:
    """What every connection of one server shares: the app, the settings, the counts, the lifespan's state."""

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        self.config = config
        self.scheme = config.scheme
        self.forwarded = TrustedProxies(config.forwarded_allow_ips) if config.proxy_headers else None
        self.ws_enabled = config.ws and _has_wsproto()
        self.state: dict[str, Any] = {}
        self.tasks = 0  # requests whose app call has not returned
        self.connections = 0
        self.protocols: set[ConnProtocol] = set()
        self.access = config.access_log
        self.stopping = False  # on_shutdown has run: no response keeps its connection alive

    def over_limit(self) -> bool:
        limit = self.config.limit_concurrency
        return limit is not None and (self.tasks >= limit or self.connections > limit)

    def log_access(self, cycle: Cycle) -> None:
        if self.access and access_log.isEnabledFor(logging.INFO):
            scope = cycle.scope
            client = scope["client"]
            response = cycle.response
            access_log.info(
                '%s - "%s %s HTTP/%s" %d',
                f"{client[0]}:{client[1]}" if client else "-",
                scope["method"],
                scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""),
                scope["http_version"],
                response.status if response is not None else 0,
            )

    def log_refused(self, proto: HttpProtocol, rejected: Rejected) -> None:
        if rejected.status >= 500:
            return
        log.warning("netloop.asgi: %s from %s: %s", rejected.status, proto.client, rejected.reason)

    def log_app_error(self, cycle: Cycle, exc: BaseException) -> None:
        log.error("netloop.asgi: exception in ASGI application", exc_info=exc)

    def log_app_error_ws(self, exc: BaseException) -> None:
        log.error("netloop.asgi: exception in ASGI application (websocket)", exc_info=exc)

    def upgrade_websocket(self, proto: HttpProtocol, rest: bytes) -> None:
        from netloop.asgi._websocket import WebSocketProtocol

        ws = WebSocketProtocol(
            self,
            proto.conn,
            proto.loop,
            proto.client,
            proto.server_addr,
            proto.headers,
            proto.url,
            proto.parser.get_http_version(),
        )
        self.protocols.discard(proto)
        self.protocols.add(ws)
        proto.conn.context = ws
        ws.start(proto.request_head() + rest)


def _has_wsproto() -> bool:
    try:
        import wsproto  # noqa: F401
    except ImportError:
        return False
    return True


class ASGIHandler(EventHandler):
    """Serve an ASGI 3.0 application (HTTP/1.1, WebSocket, lifespan) on netloop's engine.

    Start it with ``netloop.start(ASGIHandler(app), ...)`` or ``netloop.asgi.serve``: with the lifespan on,
    ``on_boot`` waits for the app's startup on loop 0, so loop 0 must run on a thread of its own (``netloop.run``
    keeps it on the calling thread and is refused).
    """

    def __init__(self, app: ASGIApp, config: Config | None = None) -> None:
        """``app``: the ASGI 3.0 callable; ``config``: the server's settings (``Config()`` by default)."""
        self.config = config or Config()
        self.server = ServerState(app, self.config)
        self.lifespan: Lifespan | None = None

    def on_boot(self, engine: Engine) -> Action | None:
        if self.config.lifespan == "off":
            return None
        if engine._core.kept is not None:
            raise RuntimeError("netloop.asgi: serve with netloop.start or netloop.asgi.serve, not netloop.run")
        if not engine._core.options.drain_timeout:
            log.warning("netloop.asgi: drain_timeout=0: a stop cuts requests in flight and the lifespan shutdown short")
        lifespan = self.lifespan = Lifespan(self.server, self.config)
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        engine.loops[0].submit(lifespan.begin, done)
        if not done.result():
            raise StartupFailed("netloop.asgi: the application's startup failed")
        return None

    def on_open(self, conn: Conn) -> Action | None:
        lifespan = self.lifespan
        if lifespan is not None and lifespan.keeper is not None and lifespan.is_keeper(conn):
            return None  # holds loop 0 while the app shuts down
        server = self.server
        server.connections += 1
        proto = HttpProtocol(server, conn, asyncio.get_running_loop())
        conn.context = proto
        server.protocols.add(proto)
        return None

    def on_traffic(self, conn: Conn) -> Action | None:
        conn.context.data_received(conn.next())
        return None

    def on_eof(self, conn: Conn) -> Action | None:
        proto = conn.context
        return Action.CLOSE if proto is None or proto.eof_received() else None

    def on_close(self, conn: Conn, err: BaseException | None) -> Action | None:
        proto = conn.context
        if proto is not None:
            server = self.server
            server.connections -= 1
            server.protocols.discard(proto)
            proto.connection_lost()
        return None

    def on_shutdown(self, engine: Engine) -> None:
        self.server.stopping = True
        for proto in list(self.server.protocols):
            try:
                proto.conn.event_loop.submit(proto.shutdown)  # type: ignore[attr-defined]
            except Exception:
                pass  # its loop has stopped: the connection closes with it
        lifespan = self.lifespan
        if lifespan is not None:
            lifespan.end(engine, self.config, engine._core.options.drain_timeout)
