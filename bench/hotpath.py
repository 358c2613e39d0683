"""The pure-Python cost of one request on netloop's hot path, with the kernel taken out.

    python -m bench.hotpath [--size BYTES] [--rounds N]

``EventLoop.run`` serves 64 echo connections whose socket methods are C built-ins that return at once (``recv``
is a dict lookup that hands back the same payload, ``send`` is ``len``) and whose poller reports every connection
readable on each poll. What is left is the interpreter's work per request: the loop, the inlined read path,
``on_traffic``, ``next`` and ``write``. The floor beside it is the smallest Python epoll echo loop over the same
stand-ins (look the socket up, ``recv``, ``send``). Both are best-of-7 wall-clock times; the syscalls a real server
makes are not in either figure.
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import netloop
from netloop._conn_variants import conn_class
from netloop._eventloop import EventLoop
from netloop._poller import IN

CONNECTIONS = 64


class Echo(netloop.EventHandler):
    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.write(conn.next())
        return None


class StandInSocket:
    """What a connection needs of a socket, as C callables that cost no system call."""

    def __init__(self, fd: int, payload: bytes, read_size: int) -> None:
        self._fd = fd
        self.recv = {read_size: payload}.get
        self.send = len
        self.sendmsg = len

    def fileno(self) -> int:
        return self._fd


def netloop_rounds(payload: bytes, rounds: int) -> Callable[[], None]:
    """A function that runs ``EventLoop.run`` for ``rounds`` polls of every connection."""
    read_size = 256 * 1024
    events = [(fd, IN) for fd in range(CONNECTIONS)]
    left = [0]
    loop: Any = types.SimpleNamespace(
        handler=Echo(),
        read_size=read_size,
        high_water=1 << 20,
        low_water=1 << 19,
        write_limit=0,
        now=0.0,
        timeouts=None,
        linger=5.0,
        inline_reads=True,
        bytes_in=0,
        bytes_out=0,
        _handlers={},
        readers={},
        _tasks=collections.deque(),
        _timers=[],
        _wake_lock=threading.Lock(),
        _sleeping=False,
        _running=True,
        thread_id=None,
    )

    def poll(timeout: float) -> list[tuple[int, int]]:
        left[0] -= 1
        if not left[0]:
            loop._running = False
        return events

    loop.poller = types.SimpleNamespace(poll=poll)
    for fd in range(CONNECTIONS):
        conn = conn_class(False, False)(loop, StandInSocket(fd, payload, read_size), ("127.0.0.1", 1))  # type: ignore[arg-type]
        loop._handlers[fd] = conn._on_io
        loop.readers[fd] = conn

    def run() -> None:
        left[0] = rounds
        loop._running = True
        EventLoop._serve(loop)

    return run


def bare_rounds(payload: bytes, rounds: int) -> Callable[[], None]:
    """The floor: the smallest Python echo loop over the same stand-ins."""
    read_size = 256 * 1024
    events = [(fd, IN) for fd in range(CONNECTIONS)]
    socks = {fd: StandInSocket(fd, payload, read_size) for fd in range(CONNECTIONS)}

    def run() -> None:
        for _ in range(rounds):
            for fd, _ev in events:
                sock = socks[fd]
                data = sock.recv(read_size)
                if data:
                    sock.send(data)

    return run


def best_ns_per_request(run: Callable[[], None], rounds: int, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / (rounds * CONNECTIONS) * 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="payload bytes per request (default 1024)")
    parser.add_argument("--rounds", type=int, default=20_000, help="polls per measurement (default 20000)")
    args = parser.parse_args(argv)
    payload = b"x" * args.size
    floor = best_ns_per_request(bare_rounds(payload, args.rounds), args.rounds)
    ours = best_ns_per_request(netloop_rounds(payload, args.rounds), args.rounds)
    print(f"CPython {sys.version.split()[0]}, {args.size}-byte echo, {CONNECTIONS} connections, best of 7")
    print(f"bare Python epoll loop: {floor:6.0f} ns/request")
    print(f"netloop EventLoop.run:  {ours:6.0f} ns/request ({ours - floor:+.0f} ns)")


if __name__ == "__main__":
    main()
