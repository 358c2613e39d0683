"""An engine's ``stats()`` in Prometheus's text format, served on an HTTP port of its own by a second netloop engine.

    python -m examples.metrics --port 9100 --app-port 8080 [--workers 2]   # an echo server and its metrics

In your own server::

    engine = netloop.start(MyHandler(), "tcp://0.0.0.0:8080", workers=4)
    metrics = examples.metrics.serve_metrics(engine, "tcp://0.0.0.0:9100")   # GET /metrics

Every counter of ``engine.stats()`` becomes a series per event loop (label ``loop``) or, with workers, per worker
process (label ``worker``): Prometheus sums them where you ask it to. Counters end in ``_total``; closes carry their
cause in the label ``cause``. A scrape computes the stats on a pool thread (with workers, the parent asks each worker,
which may take up to a second), so the metrics port's event loop never waits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import netloop

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST = 8192
"""The most bytes a scrape request's head may take."""

# (stats key, metric name, type, help); closed_<cause> keys become one metric with a cause label.
METRICS = (
    ("connections", "netloop_connections", "gauge", "Open connections."),
    ("accepted", "netloop_connections_accepted_total", "counter", "Connections accepted."),
    ("bytes_in", "netloop_received_bytes_total", "counter", "Bytes the handlers read (after TLS decryption)."),
    ("bytes_out", "netloop_sent_bytes_total", "counter", "Bytes written to the sockets (before TLS encryption)."),
    ("backpressure_pauses", "netloop_backpressure_pauses_total", "counter", "Reads paused by outbound pressure."),
    ("handler_errors", "netloop_handler_errors_total", "counter", "Handler callbacks that raised."),
    ("tls_handshake_failures", "netloop_tls_handshake_failures_total", "counter", "TLS handshakes that failed."),
    ("proxy_header_failures", "netloop_proxy_header_failures_total", "counter", "PROXY headers refused."),
    ("refused_max_connections", "netloop_refused_total", "counter", "Connections refused by max_connections."),
    ("refused_per_source", "netloop_refused_per_source_total", "counter", "Refused by max_connections_per_source."),
)
CAUSES = ("peer", "handler", "timeout", "limit", "error", "shutdown")

log = logging.getLogger(__name__)


def render(stats: dict[str, Any]) -> str:
    """``stats`` (an ``engine.stats()`` result) in Prometheus's text exposition format, version 0.0.4."""
    if "workers" in stats:
        parts = [(f'worker="{w["worker"]}"', w) for w in stats["workers"]]
    else:
        parts = [(f'loop="{loop["loop"]}"', loop) for loop in stats["loops"]]
    lines: list[str] = []
    for key, name, kind, text in METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{{{label}}} {part.get(key, 0)}" for label, part in parts]
    name = "netloop_connections_closed_total"
    lines += [f"# HELP {name} Connections closed, by cause.", f"# TYPE {name} counter"]
    for cause in CAUSES:
        lines += [f'{name}{{{label},cause="{cause}"}} {part.get("closed_" + cause, 0)}' for label, part in parts]
    return "\n".join(lines) + "\n"


def _response(status: bytes, body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> bytes:
    head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    return head % (status, content_type, len(body)) + body


class MetricsHandler(netloop.EventHandler):
    """Answers ``GET /metrics`` with ``render(stats())``, one request per connection; anything else gets 404/400."""

    def __init__(self, stats: Callable[[], dict[str, Any]], pool: netloop.WorkerPool | None = None) -> None:
        self.stats = stats
        self.pool = pool or netloop.WorkerPool(2, nonblocking=True)

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        head = conn.peek()
        # Only a head that ends within MAX_REQUEST counts: an oversized one gets 431 however its bytes arrive.
        end = head.find(b"\r\n\r\n", 0, MAX_REQUEST + 4)
        if end < 0:
            if len(head) >= MAX_REQUEST + 4:
                conn.write(_response(b"431 Request Header Fields Too Large", b"too large\n"))
                return netloop.Action.CLOSE
            return None
        conn.discard()
        request = head[:end].split(b"\r\n", 1)[0].split(b" ")
        if len(request) != 3 or not request[2].startswith(b"HTTP/1."):
            conn.write(_response(b"400 Bad Request", b"bad request\n"))
            return netloop.Action.CLOSE
        if request[0] not in (b"GET", b"HEAD") or request[1].split(b"?", 1)[0] != b"/metrics":
            conn.write(_response(b"404 Not Found", b"try /metrics\n"))
            return netloop.Action.CLOSE
        conn.pause_reading()  # one request per connection: the answer comes from a pool thread
        try:
            self.pool.submit(self._scrape, conn, request[0] == b"HEAD")
        except netloop.PoolOverloadError:
            conn.write(_response(b"503 Service Unavailable", b"busy\n"))
            return netloop.Action.CLOSE
        return None

    def _scrape(self, conn: netloop.Conn, head_only: bool) -> None:
        try:
            answer = _response(b"200 OK", render(self.stats()).encode(), CONTENT_TYPE)
        except Exception:
            log.exception("metrics: stats() failed")
            answer = _response(b"500 Internal Server Error", b"stats failed\n")
        if head_only:
            answer = answer[: answer.index(b"\r\n\r\n") + 4]
        conn.async_write(answer)
        conn.close()


def serve_metrics(engine: netloop.Engine, address: str = "tcp://127.0.0.1:9100") -> netloop.Engine:
    """Serve ``engine``'s stats on ``address`` (a second engine, one loop); stop it with its own ``stop()``."""
    return netloop.start(MetricsHandler(engine.stats), address, idle_timeout=10.0, max_connections=64)


class _Echo(netloop.EventHandler):
    def on_traffic(self, conn: netloop.Conn) -> None:
        conn.write(conn.next())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="the metrics port")
    parser.add_argument("--app-port", type=int, default=8080, help="the echo server's port")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = netloop.start(_Echo(), f"tcp://{args.host}:{args.app_port}", workers=args.workers)
    metrics = serve_metrics(app, f"tcp://{args.host}:{args.port}")
    log.info("echo on %s; metrics on http://%s:%d/metrics", app.addrs[0], args.host, args.port)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    metrics.stop()
    app.stop()


if __name__ == "__main__":
    main()
