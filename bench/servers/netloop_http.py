"""The benchmark's HTTP/1.1 "Hello, World!" server on netloop (the TechEmpower "plaintext" test).

    python -m bench.servers.netloop_http --port 8080 [--host 127.0.0.1] [--loops N] [--reuse-port] [--parser NAME]
        [--tls-cert FILE --tls-key FILE]   (HTTPS; see python -m examples.certs)

The protocol lives in ``bench.http_proto`` (sans-I/O), the same session ``bench.servers.aio`` wraps in asyncio
and uvloop, so the contenders differ only in their transport. This module moves bytes between sockets and one
:class:`~bench.http_proto.HttpSession` per connection, and refreshes the Date cache once a second. The example
users copy is ``examples/http_server.py``.
"""

from __future__ import annotations

import argparse
import logging

import netloop
from bench.http_proto import (
    DATE_CACHE,
    MAX_BODY_SIZE,
    MAX_HEAD_SIZE,
    PARSERS,
    HttpSession,
    default_parser,
    make_parser,
)
from examples.certs import add_tls_flags, tls_context

DATE_REFRESH = 1.0
"""Seconds between refreshes of the Date header (its resolution is one second)."""

log = logging.getLogger(__name__)


def address(host: str, port: int) -> str:
    """The netloop TCP address of ``host`` (a name, IPv4 or IPv6 literal) and ``port``."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class HttpHandler(netloop.EventHandler):
    """Answers every request with ``Hello, World!``; start the engine with ``ticker=True`` to keep Date current.

    Each connection's :class:`~bench.http_proto.HttpSession` lives in ``conn.context``; every batch of
    responses a read completes goes out in one ``conn.write``.
    """

    def __init__(
        self,
        parser: str | None = None,
        max_head_size: int = MAX_HEAD_SIZE,
        max_body_size: int = MAX_BODY_SIZE,
        date_refresh: float = DATE_REFRESH,
    ) -> None:
        self.parser = default_parser() if parser is None else parser
        self.limits = (max_head_size, max_body_size)
        self.date_refresh = date_refresh
        self.draining = False
        # The loops' write_buffer_cap (the engine's options), read once a connection opens rather than per request.
        self.write_cap = netloop.Options().write_buffer_cap
        make_parser(self.parser)  # a bad parser name fails here, not on the first connection

    def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
        log.info("HTTP server (%s parser) listening on %s", self.parser, ", ".join(engine.addrs))
        return None

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.context = HttpSession(self.parser, *self.limits)
        self.write_cap = conn.event_loop.options.write_buffer_cap
        return None

    def on_shutdown(self, engine: netloop.Engine) -> None:
        """The engine is stopping (or a restart retires this worker): with ``drain_timeout``, each connection's
        next answer says ``Connection: close`` and ends it, so no keep-alive client loses a request."""
        self.draining = True

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        if conn.outbound_buffered() > self.write_cap:
            return None  # a client that pipelines without reading: its requests wait until on_drain
        out, close = conn.context.receive(conn.next(), self.draining)
        if out:
            conn.write(out)
        return netloop.Action.CLOSE if close else None

    def on_drain(self, conn: netloop.Conn) -> netloop.Action | None:
        """The client read enough of our answers: answer the requests that waited meanwhile."""
        return self.on_traffic(conn) if conn.inbound_buffered() else None

    def on_tick(self) -> float:
        DATE_CACHE.refresh()
        return self.date_refresh


def make_handler(
    parser: str | None = None,
    max_head_size: int = MAX_HEAD_SIZE,
    max_body_size: int = MAX_BODY_SIZE,
    date_refresh: float = DATE_REFRESH,
) -> HttpHandler:
    """The server's event handler, for ``netloop.start``/``netloop.run`` with ``ticker=True``.

    ``parser`` is ``"httptools"``, ``"python"`` or None (httptools when installed); ``date_refresh`` is the
    tick interval in seconds.
    """
    return HttpHandler(parser, max_head_size, max_body_size, date_refresh)


def start(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    loops: int = 1,
    reuse_port: bool = False,
    handler: HttpHandler | None = None,
) -> netloop.Engine:
    """Serve HTTP in the background; the running engine tells its real port in ``engine.addrs``."""
    return netloop.start(
        make_handler() if handler is None else handler,
        address(host, port),
        num_event_loop=loops,
        reuse_port=reuse_port,
        ticker=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--loops", type=int, default=1, help="event loops (threads); 0 means one per CPU")
    parser.add_argument("--reuse-port", action="store_true", help="one SO_REUSEPORT listener per loop")
    parser.add_argument("--parser", choices=PARSERS, help=f"request parser (default: {default_parser()})")
    add_tls_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    netloop.run(
        make_handler(args.parser),
        address(args.host, args.port),
        num_event_loop=args.loops,
        multicore=args.loops == 0,
        reuse_port=args.reuse_port,
        ticker=True,
        tls=tls_context(args),
    )


if __name__ == "__main__":
    main()
