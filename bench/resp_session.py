"""What the RESP example's sans-I/O session costs per command, without sockets.

    python -m bench.resp_session

Feeds ``RespSession.receive`` the requests redis-benchmark sends for ``-t ping,set,get`` (inline and multibulk PING,
SET, GET), one at a time and 16 to a read, and prints the best-of-5 nanoseconds per command. Every contender of the
RESP workload runs this same session, so this is the part of their cost that the transport does not change.
"""

from __future__ import annotations

import sys
import time

from resp_server.session import RespSession
from resp_server.store import KeyValueStore

REQUESTS = {
    "ping_inline": b"PING\r\n",
    "ping_mbulk": b"*1\r\n$4\r\nPING\r\n",
    "set": b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$3\r\nxxx\r\n",
    "get": b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n",
}


def ns_per_command(session: RespSession, data: bytes, depth: int, reads: int = 20_000, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(reads):
            session.receive(data)
        best = min(best, time.perf_counter() - start)
    return best / (reads * depth) * 1e9


def main() -> None:
    session = RespSession(KeyValueStore())
    print(f"CPython {sys.version.split()[0]}, ns per command, best of 5")
    for name, request in REQUESTS.items():
        row = [f"{ns_per_command(session, request * depth, depth):6.0f}" for depth in (1, 16)]
        print(f"{name:12s} depth 1: {row[0]}   depth 16: {row[1]}")


if __name__ == "__main__":
    main()
