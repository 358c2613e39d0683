"""Resident memory per idle keep-alive connection of an ASGI server: netloop.asgi against uvicorn, the same app.

    python -m bench.asgi_memory                                    # 2,000 connections, every server
    python -m bench.asgi_memory --connections 5000 --servers netloop-asgi,uvicorn

Each server (one process, ``bench.asgi_apps:bare``, keep-alive timeout long enough to outlast the run) is started
fresh; a warm-up of ``--warm`` connections makes one request each and stays open, then the server's VmRSS is read;
then ``--connections`` more connections make one request each and stay open, idle, and VmRSS is read again. The
growth over the connections added is the memory one idle kept-alive connection holds (its Python objects, buffers
and kernel-side nothing: socket buffers are not in RSS). RSS does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import gc
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench._errors import BenchError
from bench._proc import rss_bytes
from bench._servers import HOST, free_port
from bench.asgi_instructions import server_argv

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("netloop-asgi", "netloop-asgi-pure", "uvicorn")
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
ANSWER_END = b"Hello, World!"
START_TIMEOUT_S = 20.0
KEEP_ALIVE_S = "600"


def open_idle(count: int, port: int, timeout: float = 60.0) -> list[socket.socket]:
    """``count`` connections, each answered once and kept open (a few hundred at a time in flight)."""
    kept: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    deadline = time.monotonic() + timeout
    pending: dict[socket.socket, bytes] = {}
    started = 0
    while len(kept) < count:
        while started < count and len(pending) < 200:
            sock = socket.create_connection((HOST, port), timeout=timeout)
            sock.sendall(REQUEST)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            pending[sock] = b""
            started += 1
        for key, _ in selector.select(timeout=1.0):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            data = ready.recv(4096)
            if not data:
                raise BenchError("the server closed a connection before its answer")
            pending[ready] += data
            if pending[ready].endswith(ANSWER_END):
                selector.unregister(ready)
                del pending[ready]
                kept.append(ready)
        if time.monotonic() > deadline:
            raise BenchError(f"only {len(kept)} of {count} connections answered in {timeout} s")
    selector.close()
    return kept


def measure(server: str, warm: int, connections: int) -> tuple[int, int]:
    """(VmRSS after the warm-up, VmRSS after ``connections`` more idle ones), in bytes."""
    port = free_port()
    argv = [*server_argv(server, "bare", port), "--timeout-keep-alive", KEEP_ALIVE_S, "--lifespan", "off"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), NETLOOP_PURE="1" if server == "netloop-asgi-pure" else "0")
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                sockets += open_idle(1, port)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"{server} did not start") from None
                time.sleep(0.05)  # polling the port is the one readiness signal every server shares
        sockets += open_idle(warm, port)
        gc.collect()
        before = rss_bytes(process.pid)
        sockets += open_idle(connections, port)
        time.sleep(0.5)  # let the server finish the last requests' bookkeeping (timers, buffers given back)
        after = rss_bytes(process.pid)
        return before, after
    finally:
        for sock in sockets:
            sock.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=100, help="connections opened before the first reading")
    args = parser.parse_args(argv)
    print(f"{'server':<20} {'RSS before':>12} {'RSS after':>12} {'per connection':>15}")
    for server in args.servers.split(","):
        if server not in SERVERS:
            parser.error(f"unknown server {server!r}; one of {', '.join(SERVERS)}")
        try:
            before, after = measure(server, args.warm, args.connections)
        except BenchError as exc:
            print(f"{server:<20} failed: {exc}", file=sys.stderr)
            return 1
        per = (after - before) / args.connections
        print(f"{server:<20} {before / 2**20:>9.1f} MiB {after / 2**20:>9.1f} MiB {per / 1024:>11.2f} KiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
