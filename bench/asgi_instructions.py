"""ASGI servers' user-space instructions per request (callgrind): netloop.asgi against uvicorn, the same apps.

    python -m bench.asgi_instructions                               # bare and Starlette apps, every server
    python -m bench.asgi_instructions --apps bare --servers netloop-asgi,uvicorn --short 500 --long 3000

The method is ``bench.instructions``'s: each server runs under ``valgrind --tool=callgrind``, started fresh for each
run, while the same deterministic client sends a fixed number of ``GET /`` requests over 16 connections, one (or
``--depth`` pipelined) at a time, waiting for the whole answer before the next. Each server is measured with
``--short`` and ``--long`` requests: the difference of the two counts over the difference of the request counts is
the cost of one request, start-up and shutdown cancelled out. Valid on a busy machine: instructions, not time.

Servers: ``netloop-asgi`` (``python -m netloop.asgi`` on the compiled core), ``netloop-asgi-pure`` (the pure-Python
core), ``uvicorn`` (its defaults: uvloop and httptools when installed). Apps: ``bench.asgi_apps``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench._errors import BenchError
from bench._servers import HOST, free_port
from bench.instructions import counted_run

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("netloop-asgi", "netloop-asgi-pure", "uvicorn")
APPS = ("bare", "starlette")


def server_argv(server: str, app: str, port: int) -> list[str]:
    target = f"bench.asgi_apps:{app}"
    where = ["--host", HOST, "--port", str(port)]
    if server.startswith("netloop-asgi"):
        return [sys.executable, "-m", "netloop.asgi", target, *where, "--no-access-log", "--log-level", "warning"]
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", target, *where, "--no-access-log", "--log-level", "warning"]
    raise ValueError(f"unknown server {server!r}")


def measure(server: str, app: str, depth: int, requests: int, out: Path) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT))
    env["NETLOOP_PURE"] = "1" if server == "netloop-asgi-pure" else "0"
    port = free_port()
    return counted_run(server, server_argv(server, app, port), env, ROOT, port, "http", depth, requests, out)


def per_request(server: str, app: str, depth: int, short: int, long: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        counts = [measure(server, app, depth, n, Path(scratch) / f"{server}-{app}-{n}.out") for n in (short, long)]
    return (counts[1] - counts[0]) / (long - short)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--depth", type=int, default=1, help="pipelined requests per exchange")
    parser.add_argument("--short", type=int, default=1000)
    parser.add_argument("--long", type=int, default=5000)
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, float]] = []
    for app in args.apps.split(","):
        for server in args.servers.split(","):
            try:
                cost = per_request(server, app, args.depth, args.short, args.long)
            except BenchError as exc:
                print(f"{server} {app}: {exc}", file=sys.stderr)
                continue
            rows.append((app, server, cost))
            print(f"{app:10} {server:18} {cost:12,.0f} instructions/request", flush=True)
    print("\n| app | server | instructions per request |\n|---|---|---|")
    for app, server, cost in rows:
        print(f"| {app} | {server} | {cost:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
