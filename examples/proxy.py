"""TCP proxy: every accepted connection is piped to an upstream server dialled on the same event loop.

    python -m examples.proxy --listen tcp://127.0.0.1:8000 --upstream tcp://127.0.0.1:9000 [--loops N]
        [--tls-cert FILE --tls-key FILE]   (clients speak TLS to the proxy, the upstream plaintext)

Bytes flow both ways with backpressure: when one side has more than the engine's ``write_buffer_cap`` bytes
waiting to be sent (``--high-water``), the proxy stops reading the other side, and resumes it in that side's
``on_drain`` (its bytes fell to half the cap), so a slow reader slows the writer down instead of growing the proxy's
memory. No polling. The engine runs with ``backpressure_pause=False``, so the core does not also stop reading a side
whose own queue is full: that would deadlock when both directions fill at once. Bytes a client sends while the
upstream is still connecting are kept and sent once it connects. When either side ends, the other is closed after
its pending bytes are flushed; when either half-closes (``on_eof``), the other side's write half is shut after
its queued bytes, and the other direction carries on.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import threading
import time

import netloop
from examples.certs import add_tls_flags, tls_context

log = logging.getLogger("examples.proxy")

# The same warning (a dead upstream fails every client alike) is logged once per this many seconds.
WARN_EVERY = 10.0


class RateLimitedLog:
    """Logs a message the first time, then at most once per ``every`` seconds, saying how many were suppressed."""

    def __init__(self, logger: logging.Logger, every: float) -> None:
        self.logger = logger
        self.every = every
        self.lock = threading.Lock()  # loops are threads
        self.last: dict[str, tuple[float, int]] = {}  # message -> (when last logged, suppressed since)

    def warn(self, message: str) -> None:
        now = time.monotonic()
        with self.lock:
            when, suppressed = self.last.get(message, (-math.inf, 0))
            if now - when < self.every:
                self.last[message] = (when, suppressed + 1)
                return
            self.last[message] = (now, 0)
        more = f" ({suppressed} more like it suppressed)" if suppressed else ""
        self.logger.warning("%s%s", message, more)


class Side:
    """``conn.context`` of either end of a pipe: the other end, and whether reading this end is paused."""

    __slots__ = ("paused", "peer", "upstream")

    def __init__(self, peer: netloop.Conn, upstream: bool) -> None:
        self.peer = peer
        self.upstream = upstream
        self.paused = False


class Proxy(netloop.EventHandler):
    """Pipes each accepted connection to ``upstream`` (an address such as ``tcp://10.0.0.5:9000``)."""

    def __init__(self, upstream: str, connect_timeout: float | None = 5.0) -> None:
        self.upstream = upstream
        self.connect_timeout = connect_timeout
        self.warnings = RateLimitedLog(log, WARN_EVERY)

    def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
        print("listening on", *engine.addrs, "->", self.upstream, flush=True)
        return None

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        if conn.context is not None:
            return None  # the upstream end connected; what the client sent meanwhile is on its way
        # Never blocks: the upstream end comes back still connecting and opens on a later turn of this loop.
        upstream = conn.event_loop.dial(self.upstream, self.connect_timeout)
        conn.context = Side(upstream, upstream=False)
        upstream.context = Side(conn, upstream=True)
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        side: Side = conn.context
        peer = side.peer
        if peer.closed:
            return netloop.Action.CLOSE
        peer.write(conn.next())
        if not side.paused and peer.outbound_buffered() > peer.event_loop.options.write_buffer_cap:
            # The peer can't keep up: leave the rest in the kernel, which slows the sender down. The core now
            # holds the peer's outbound above its high-water mark, so the peer's on_drain comes.
            side.paused = True
            conn.pause_reading()
        return None

    def on_eof(self, conn: netloop.Conn) -> netloop.Action | None:
        """``conn``'s end half-closed: pass its FIN on once the bytes queued for the peer are out, and keep carrying
        the other direction (the pair closes when both ends have ended)."""
        peer: netloop.Conn = conn.context.peer
        if peer.closed:
            return netloop.Action.CLOSE
        peer.shutdown_write()
        return None

    def on_drain(self, conn: netloop.Conn) -> netloop.Action | None:
        """``conn``'s outbound bytes drained to half the cap: read its peer again."""
        side: Side | None = conn.context
        if side is None:
            return None
        other: Side = side.peer.context
        if other.paused and not side.peer.closed:
            other.paused = False
            side.peer.resume_reading()
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        side: Side | None = conn.context
        if side is None:
            return None
        if side.upstream and err is not None:
            self.warnings.warn(f"upstream {self.upstream}: {err}")
        if not side.peer.closed:
            # The loop is going away when this raises, and closes the peer itself.
            with contextlib.suppress(netloop.EngineStoppedError):
                side.peer.close()
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="tcp://127.0.0.1:8000", help="address to accept clients on")
    parser.add_argument("--upstream", required=True, help="address of the server to pipe them to")
    parser.add_argument("--loops", type=int, default=1, help="event loops (threads)")
    parser.add_argument("--high-water", type=int, default=256 * 1024, help="bytes queued before pausing a side")
    parser.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to connect to the upstream")
    add_tls_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    handler = Proxy(args.upstream, args.connect_timeout)
    options = {
        "num_event_loop": args.loops,
        "write_buffer_cap": args.high_water,
        "backpressure_pause": False,  # the pair's flow control is the handler's (see on_traffic)
        "tls": tls_context(args),
    }
    netloop.run(handler, args.listen, **options)


if __name__ == "__main__":
    main()
