"""A Redis-compatible (RESP2 and RESP3) key-value server on netloop; redis-cli, redis-benchmark and redis-py work
with it.

    python -m resp_server --port 6379 [--host 127.0.0.1] [--loops N] [--reuse-port]
        [--max-queued N] [--max-reply-items N] [--read-timeout S]
        [--tls-cert FILE --tls-key FILE]   (redis-cli --tls --cacert ...; see python -m examples.certs)

The protocol lives in :mod:`resp_server.session` (sans-I/O); this module only moves bytes between sockets and
one :class:`~resp_server.session.RespSession` per connection.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading

import netloop
from examples.certs import add_tls_flags, tls_context
from resp_server.blocking import expire_blocked
from resp_server.notifications import publish_events
from resp_server.server_state import PUBSUB_LIMIT, ServerState, local_name
from resp_server.session import MAX_QUEUED, RespSession
from resp_server.store import MAX_REPLY_ITEMS, KeyValueStore

EXPIRE_INTERVAL = 0.1
"""Seconds between active-expiry passes (Redis's default hz of 10)."""

FEED = 16 * 1024
"""The most request bytes handed to a session at once: what it holds parsed ahead of its replies stays small."""

log = logging.getLogger(__name__)


class Session(RespSession):
    """A connection's :class:`~resp_server.session.RespSession`, and whether its peer has sent all it will."""

    __slots__ = ("ended",)

    def __init__(self, store: KeyValueStore, server: ServerState | None = None, max_queued: int = MAX_QUEUED) -> None:
        super().__init__(store, server=server, max_queued=max_queued)
        self.ended = False


class RespHandler(netloop.EventHandler):
    """Serves RESP with one keyspace shared by every connection (and every loop).

    With several loops the connections' events run on several threads, so each batch of commands runs
    under one lock: a command, and a MULTI/EXEC block, sees the keyspace as if it were alone. With one loop
    every event, the ticker's included, runs on that loop's thread, and the lock is left out.

    Pipelined requests are answered only while the connection's outbound bytes stay under the loop's
    high-water mark (``write_buffer_cap``): past it, the rest waits (unread in the connection, or held by the
    session) until ``on_drain``, so a client that sends without reading costs the server a bounded amount.
    """

    def __init__(self, store: KeyValueStore | None = None, *, max_queued: int = MAX_QUEUED) -> None:
        """Serve ``store`` (a fresh one by default); start the engine with ``ticker=True`` for active expiry.
        ``max_queued`` caps the commands one MULTI queues; the store's ``max_reply_items`` caps replies."""
        self.store = KeyValueStore() if store is None else store
        self.max_queued = max_queued
        self.state = ServerState()
        self._lock: threading.Lock | None = threading.Lock()  # None once on_boot has seen a single loop
        self.high_water = netloop.Options().write_buffer_cap  # the engine's own, from on_boot
        self.deadlines = False  # whether requests have a read deadline (read_timeout), from on_boot

    def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
        # No connection is served before on_boot returns, so the lock can still be dropped here.
        if len(engine.loops) == 1:
            self._lock = None
        self.high_water = engine.loops[0].options.write_buffer_cap
        self.deadlines = engine.loops[0].options.read_timeout is not None
        port = engine.addrs[0].rsplit(":", 1)[-1]
        self.state.port = int(port) if port.isdigit() else 0
        self.state.config[b"port"] = port.encode()
        log.info("RESP server listening on %s", ", ".join(engine.addrs))
        return None

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        with self._lock or contextlib.nullcontext():
            session = Session(self.store, self.state, self.max_queued)
        session.addr = local_name(conn.remote_addr)
        session.laddr = local_name(conn.local_addr)
        session.fd = conn.fd
        session.push = conn.async_write  # pub/sub messages, from whichever loop publishes
        session.kill = conn.close  # CLIENT KILL, from whichever loop asks
        session.wake = conn.wake  # a blocking command was answered: serve what the client sent meanwhile
        conn.context = session
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        session = conn.context
        if isinstance(session, Session):
            with self._lock or contextlib.nullcontext():
                session.close()
            if isinstance(err, netloop.OutboundLimitError) and (session.channels or session.patterns):
                log.warning("RESP: subscriber %s stopped reading; cut off at %d bytes", session.addr, PUBSUB_LIMIT)
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        if conn.inbound_buffered() > FEED:
            return self._serve(conn)
        session: Session = conn.context
        lock = self._lock
        if lock is None:  # a branch rather than a null context: this runs once per read
            out, close = session.serve(conn.next(), self.high_water)
        else:
            with lock:
                out, close = session.serve(conn.next(), self.high_water)
        if out:
            if isinstance(out, bytes):
                conn.write(out)
            else:
                conn.writev(out)
        if close:
            return netloop.Action.CLOSE
        if self.deadlines:
            _mark_request(conn, session)
        return self._serve(conn) if session.busy else None

    def on_drain(self, conn: netloop.Conn) -> netloop.Action | None:
        return self._serve(conn)

    def on_eof(self, conn: netloop.Conn) -> netloop.Action | None:
        session: Session = conn.context
        if session.busy or conn.inbound_buffered():
            session.ended = True  # answer what is held back first; _serve closes once it is done
            return None
        return netloop.Action.CLOSE

    def _serve(self, conn: netloop.Conn) -> netloop.Action | None:
        """Answer what waits (held by the session, then unread in ``conn``) while outbound stays under the mark."""
        session: Session = conn.context
        lock = self._lock or contextlib.nullcontext()
        while True:
            room = self.high_water - conn.outbound_buffered()
            if room <= 0:
                return None  # on_drain goes on
            if session.busy:
                data = b""
            else:
                size = conn.inbound_buffered()
                if not size:
                    return netloop.Action.CLOSE if session.ended else None
                data = conn.next(min(size, FEED))
            with lock:
                out, close = session.serve(data, room)
            if out:
                if isinstance(out, bytes):
                    conn.write(out)
                else:
                    conn.writev(out)
            if close:
                return netloop.Action.CLOSE
            if self.deadlines and data:
                _mark_request(conn, session)

    def on_tick(self) -> float:
        with self._lock or contextlib.nullcontext():
            self.store.active_expire()
            if self.store.events:
                publish_events(self.state, self.store, None)
            if self.state.blocked:
                expire_blocked(list(self.state.blocked), self.store.clock())
        return EXPIRE_INTERVAL


def _mark_request(conn: netloop.Conn, session: Session) -> None:
    """Tell netloop where a request starts and ends, so that ``read_timeout`` runs from its first byte: the session
    takes every byte into its parser, so netloop never sees a partial request left unread."""
    if session.in_request:
        conn.start_message()
    else:
        conn.end_message()


def address(host: str, port: int) -> str:
    """The netloop TCP address of ``host`` (a name, IPv4 or IPv6 literal) and ``port``."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def start(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    loops: int = 1,
    reuse_port: bool = False,
    store: KeyValueStore | None = None,
    max_queued: int = MAX_QUEUED,
    read_timeout: float | None = None,
) -> netloop.Engine:
    """Serve RESP in the background; the running engine tells its real port in ``engine.addrs``. With
    ``read_timeout``, a request must arrive whole within that many seconds of its first byte."""
    return netloop.start(
        RespHandler(store, max_queued=max_queued),
        address(host, port),
        num_event_loop=loops,
        reuse_port=reuse_port,
        ticker=True,
        write_buffer_limit=PUBSUB_LIMIT,
        read_timeout=read_timeout,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m resp_server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--loops", type=int, default=1, help="event loops (threads); they share one keyspace")
    parser.add_argument("--reuse-port", action="store_true", help="one SO_REUSEPORT listener per loop")
    parser.add_argument(
        "--max-queued", type=int, default=MAX_QUEUED, help="most commands one MULTI block queues (default %(default)s)"
    )
    parser.add_argument(
        "--max-reply-items",
        type=int,
        default=MAX_REPLY_ITEMS,
        help="most items in a reply whose size a request picks: LRANGE, SRANDMEMBER -N... (default %(default)s)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="close a connection whose request is not whole S seconds after its first byte (slowloris; 0: never;"
        " default %(default)s)",
    )
    add_tls_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    netloop.run(
        RespHandler(KeyValueStore(max_reply_items=args.max_reply_items), max_queued=args.max_queued),
        address(args.host, args.port),
        num_event_loop=args.loops,
        reuse_port=args.reuse_port,
        ticker=True,
        tls=tls_context(args),
        write_buffer_limit=PUBSUB_LIMIT,
        read_timeout=args.read_timeout or None,
    )


if __name__ == "__main__":
    main()
