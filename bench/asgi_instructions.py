"""ASGI servers' user-space instructions per request (callgrind): netloop.asgi against uvicorn, the same apps.

    python -m bench.asgi_instructions                               # bare and Starlette apps, every server
    python -m bench.asgi_instructions --apps bare --servers netloop-asgi,uvicorn --short 500 --long 3000
    python -m bench.asgi_instructions --apps bare --servers netloop-asgi --functions 30   # where the cost goes

The method is ``bench.instructions``'s: each server runs under ``valgrind --tool=callgrind``, started fresh for each
run, while the same deterministic client sends a fixed number of ``GET /`` requests over 16 connections, one (or
``--depth`` pipelined) at a time, waiting for the whole answer before the next. Each server is measured with
``--short`` and ``--long`` requests: the difference of the two counts over the difference of the request counts is
the cost of one request, start-up and shutdown cancelled out. Valid on a busy machine: instructions, not time.

Servers: ``netloop-asgi`` (``python -m netloop.asgi`` on the compiled core), ``netloop-asgi-pure`` (the pure-Python
core), ``uvicorn`` (its defaults: uvloop and httptools when installed). Apps: ``bench.asgi_apps``. ``--functions K``
adds each run's K costliest C functions (callgrind's self cost, per request the same way); ``--json`` keeps it all
(bench/results/asgi-instructions.json is such a file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import instructions
from bench._errors import BenchError
from bench._servers import HOST, free_port
from bench.instructions import counted_run, function_costs

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


def per_request(
    server: str, app: str, depth: int, short: int, long: int, functions: int = 0
) -> tuple[float, dict[str, float]]:
    """Instructions one request costs, and (``functions`` > 0) the ``functions`` costliest C functions' share."""
    with tempfile.TemporaryDirectory() as scratch:
        outs = [Path(scratch) / f"{server}-{app}-{n}.out" for n in (short, long)]
        counts = [measure(server, app, depth, n, out) for n, out in zip((short, long), outs, strict=True)]
        by_function: dict[str, float] = {}
        if functions:
            before, after = function_costs(outs[0]), function_costs(outs[1])
            diff = {name: (after.get(name, 0) - before.get(name, 0)) / (long - short) for name in {*before, *after}}
            by_function = dict(sorted(diff.items(), key=lambda kv: -kv[1])[:functions])
    return (counts[1] - counts[0]) / (long - short), by_function


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--depth", type=int, default=1, help="pipelined requests per exchange")
    parser.add_argument("--short", type=int, default=1000)
    parser.add_argument("--long", type=int, default=5000)
    parser.add_argument("--functions", type=int, default=0, metavar="K", help="show the K costliest C functions")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    parser.add_argument(
        "--start-timeout", type=float, default=instructions.START_TIMEOUT_S, help="seconds a server may take to listen"
    )
    args = parser.parse_args(argv)
    instructions.START_TIMEOUT_S = args.start_timeout  # a loaded machine runs valgrind's start-up slower
    rows: list[dict[str, Any]] = []
    for app in args.apps.split(","):
        for server in args.servers.split(","):
            try:
                cost, by_function = per_request(server, app, args.depth, args.short, args.long, args.functions)
            except BenchError as exc:
                print(f"{server} {app}: {exc}", file=sys.stderr)
                continue
            rows.append({"app": app, "server": server, "per_request": cost, "functions": by_function})
            print(f"{app:10} {server:18} {cost:12,.0f} instructions/request", flush=True)
    print("\n| app | server | instructions per request |\n|---|---|---|")
    for row in rows:
        print(f"| {row['app']} | {row['server']} | {row['per_request']:,.0f} |")
    for row in rows:
        if row["functions"]:
            print(f"\n{row['server']}, {row['app']}: self instructions per request by function\n")
            print("| function | per request |\n|---|---:|")
            for name, cost in row["functions"].items():
                print(f"| `{name}` | {cost:,.0f} |")
    if args.json:
        settings = {"depth": args.depth, "requests": [args.short, args.long], "python": sys.version.split()[0]}
        args.json.write_text(json.dumps({"settings": settings, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
