"""TCP proxy: every accepted connection is piped to an upstream server dialled on the same event loop.

    python -m examples.proxy --listen tcp://127.0.0.1:8000 --upstream tcp://127.0.0.1:9000 [--loops N]

Bytes flow both ways with backpressure: when one side has more than ``high_water`` bytes waiting to be sent, the
proxy stops reading the other side until they drain below half of that, so a slow reader slows the writer down
instead of growing the proxy's memory. Bytes a client sends while the upstream is still connecting are kept and
sent once it connects. When either side ends, the other is closed after its pending bytes are flushed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging

import netloop

log = logging.getLogger("examples.proxy")

# While a side is paused, how often the proxy looks whether its peer's outbound bytes drained.
RESUME_CHECK = 0.005


class Side:
    """``conn.context`` of either end of a pipe: the other end, and whether reading this end is paused."""

    __slots__ = ("paused", "peer", "upstream")

    def __init__(self, peer: netloop.Conn, upstream: bool) -> None:
        self.peer = peer
        self.upstream = upstream
        self.paused = False


class Proxy(netloop.EventHandler):
    """Pipes each accepted connection to ``upstream`` (an address such as ``tcp://10.0.0.5:9000``)."""

    def __init__(self, upstream: str, high_water: int = 256 * 1024, connect_timeout: float | None = 5.0) -> None:
        if high_water < 1:
            raise ValueError(f"high_water must be positive, got {high_water}")
        self.upstream = upstream
        self.high_water = high_water
        self.low_water = high_water // 2
        self.connect_timeout = connect_timeout

    def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
        print("listening on", *engine.addrs, "->", self.upstream, flush=True)
        return None

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        if conn.context is not None:
            return None  # the upstream end connected; what the client sent meanwhile is on its way
        # Never blocks: the upstream end comes back still connecting and opens on a later turn of this loop.
        upstream = conn.event_loop.register(self.upstream, self.connect_timeout)
        conn.context = Side(upstream, upstream=False)
        upstream.context = Side(conn, upstream=True)
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        side: Side = conn.context
        peer = side.peer
        if peer.closed:
            return netloop.Action.CLOSE
        peer.write(conn.next())
        if peer.outbound_buffered() > self.high_water and not side.paused:
            # The peer can't keep up: leave the rest in the kernel, which slows the sender down.
            side.paused = True
            conn.pause_reading()
            conn.event_loop.call_later(RESUME_CHECK, self._resume_when_drained, conn)
        return None

    def _resume_when_drained(self, conn: netloop.Conn) -> None:
        side: Side = conn.context
        if conn.closed or side.peer.closed:
            return
        if side.peer.outbound_buffered() > self.low_water:
            conn.event_loop.call_later(RESUME_CHECK, self._resume_when_drained, conn)
            return
        side.paused = False
        conn.resume_reading()

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        side: Side | None = conn.context
        if side is None:
            return None
        if side.upstream and err is not None:
            log.warning("upstream %s: %s", self.upstream, err)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    handler = Proxy(args.upstream, args.high_water, args.connect_timeout)
    netloop.run(handler, args.listen, num_event_loop=args.loops)


if __name__ == "__main__":
    main()
