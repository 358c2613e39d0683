"""A tiny HTTP-like responder for the leak soaks, run as its own program so that its memory is its own.

    python -m bench._responder --port 8080 [--tls-cert FILE --tls-key FILE] [--no-gc]

``GET /N`` answers ``N`` bytes made fresh for the response (one write, as a file served from memory is), on a
keep-alive connection. ``GET /stats`` answers JSON: the connections the engine holds (``open``), the ``Conn``
objects still alive (``live``), ``len(gc.get_objects())`` (``objects``), resident memory (``rss``) and the full
collections run so far, all read without a collection of its own. ``--no-gc`` turns the cyclic collector off, so a
connection that only a collection would free stays alive and shows in ``live``.
"""

from __future__ import annotations

import argparse
import gc
import json
import ssl
import sys
import weakref
from collections.abc import Sequence

import netloop

HEAD_LIMIT = 8192


def rss() -> int:
    """This process's resident memory in bytes (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Responder(netloop.EventHandler):
    """Answers ``GET /N`` with ``N`` fresh bytes and ``GET /stats`` with the process's counts; anything else gets
    a 400 and a close."""

    def __init__(self) -> None:
        self.engine: netloop.Engine | None = None
        self.live: weakref.WeakSet[netloop.Conn] = weakref.WeakSet()

    def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
        self.engine = engine
        return None

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        self.live.add(conn)
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        while conn.inbound_buffered():
            data = conn.peek()
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return netloop.Action.CLOSE if len(data) > HEAD_LIMIT else None
            conn.discard(end + 4)
            parts = data[: data.find(b"\r\n")].split()
            if len(parts) != 3 or parts[0] != b"GET":
                conn.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return netloop.Action.CLOSE
            path = parts[1]
            if path == b"/stats":
                body = json.dumps(self.stats()).encode()
            elif path[1:].isdigit():
                body = b"x" * int(path[1:])  # fresh memory for each response: a leaked one shows in RSS
            else:
                conn.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                continue
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            conn.write(body)
        return None

    def stats(self) -> dict[str, int]:
        assert self.engine is not None
        return {
            "open": self.engine.count_connections(),
            "live": len(self.live),
            "objects": len(gc.get_objects()),
            "rss": rss(),
            "full_collections": gc.get_stats()[2]["collections"],
            "tls_handshake_failures": self.engine.stats()["tls_handshake_failures"],
        }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._responder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--no-gc", action="store_true", help="turn the cyclic garbage collector off")
    args = parser.parse_args(argv)
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    if args.no_gc:
        gc.disable()
    netloop.run(Responder(), f"tcp://{args.host}:{args.port}", tls=tls)


if __name__ == "__main__":
    main(sys.argv[1:])
