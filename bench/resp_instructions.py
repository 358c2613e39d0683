"""Instructions per RESP command (callgrind): resp_server on both cores beside redis-server, one command at a time.

    python -m bench.resp_instructions                                   # SET GET HSET ZADD SADD, every server
    python -m bench.resp_instructions --only hset,zadd --servers netloop --functions 20
    python -m bench.resp_instructions --tree ../other-checkout --servers netloop   # that tree's resp_server

The method is ``bench.instructions``'s: each server runs under ``valgrind --tool=callgrind``, started fresh for each
run, while a deterministic client on 16 connections, in turn, sends ``--depth`` pipelined commands (16 by default)
and waits for all their replies before the next batch. Each server is measured with ``--short`` and ``--long``
commands: the difference of the two counts over the difference of the command counts is the cost of one command,
start-up and shutdown cancelled out. Valid on a busy machine: instructions, not time.

The commands are redis-benchmark's with ``-r``: ``SET key:N xxx``, ``GET key:N`` (on an empty keyspace, as
``-t get`` alone sends it), ``HSET myhash element:N xxx``, ``ZADD myzset N element:N``, ``SADD myset element:N``,
N a fixed pseudo-random sequence below 100,000, so the hash and the sets grow as under ``python -m bench``'s
``respcmd-*`` workloads. redis-server's count is user-space instructions too: its kernel work, like the Python
servers', is not counted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._errors import BenchError
from bench._servers import free_port, server_argv, server_env, unavailable
from bench.instructions import CONNECTIONS, START_TIMEOUT_S, Count, _connect, counted_run, function_costs

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("netloop", "netloop-pure", "redis")
KEYSPACE = 100_000
_STRIDE = 48_271
"""The member sequence's step: coprime to KEYSPACE, so the sequence visits every number below it once per lap."""

Formatter = Callable[[int], list[bytes]]
COMMANDS: dict[str, Formatter] = {
    "set": lambda n: [b"SET", b"key:%012d" % n, b"xxx"],
    "get": lambda n: [b"GET", b"key:%012d" % n],
    "hset": lambda n: [b"HSET", b"myhash", b"element:%012d" % n, b"xxx"],
    "zadd": lambda n: [b"ZADD", b"myzset", b"%d" % n, b"element:%012d" % n],
    "sadd": lambda n: [b"SADD", b"myset", b"element:%012d" % n],
}


def encode(args: list[bytes]) -> bytes:
    """One command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def complete_replies(data: bytes) -> int:
    """How many whole replies ``data`` holds (simple strings, integers, bulk strings; an error raises)."""
    count = pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return count
        if data[pos : pos + 1] == b"-":
            raise BenchError(f"the server answered {data[pos:end]!r}")
        if data[pos : pos + 1] == b"$" and data[pos + 1 : pos + 2] != b"-":
            after = end + 2 + int(data[pos + 1 : end]) + 2
            if after > len(data):
                return count
            pos = after
        else:
            pos = end + 2
        count += 1


def batches(command: str, depth: int, requests: int) -> list[bytes]:
    """The pipelined writes of one run: ``requests // depth`` batches of ``depth`` commands."""
    form = COMMANDS[command]
    stream = [encode(form(i * _STRIDE % KEYSPACE)) for i in range(requests - requests % depth)]
    return [b"".join(stream[i : i + depth]) for i in range(0, len(stream), depth)]


def send(port: int, writes: list[bytes], depth: int) -> None:
    """Sends ``writes`` round robin over CONNECTIONS connections, each awaiting its ``depth`` replies."""
    deadline = time.monotonic() + START_TIMEOUT_S
    conns = [_connect(port, deadline) for _ in range(CONNECTIONS)]
    try:
        for i, batch in enumerate(writes):
            sock = conns[i % CONNECTIONS]
            sock.sendall(batch)
            data = b""
            while complete_replies(data) < depth:
                chunk = sock.recv(65536)
                if not chunk:
                    raise BenchError("the server closed a connection")
                data += chunk
    finally:
        for sock in conns:
            sock.close()


def measure(server: str, command: str, depth: int, requests: int, out: Path, tree: Path) -> int:
    """``server``'s total instruction count (callgrind's Ir) serving ``requests`` ``command``s from ``tree``."""
    port = free_port()
    env = server_env(server)
    env["PYTHONHASHSEED"] = "0"  # the same dict layouts, so the same lookups, in every run
    env["PYTHONPATH"] = str(tree)
    writes = batches(command, depth, requests)
    argv = server_argv(server, "resp", port)
    return counted_run(
        server, argv, env, tree, port, "resp", depth, requests, out, client=lambda p, _: send(p, writes, depth)
    )


def count(server: str, command: str, depth: int, short: int, long: int, tree: Path, functions: int) -> Count:
    with tempfile.TemporaryDirectory() as scratch:
        runs = []
        for n in (short, long):
            out = Path(scratch) / f"{server}-{command}-{n}.out"
            runs.append((measure(server, command, depth, n, out, tree), out))
        result = Count(server, command, runs[0][0], runs[1][0], (short, long))
        if functions:
            before, after = function_costs(runs[0][1]), function_costs(runs[1][1])
            span = long - short
            diff = {name: (after.get(name, 0) - before.get(name, 0)) / span for name in set(before) | set(after)}
            result.functions = dict(sorted(diff.items(), key=lambda kv: -kv[1])[:functions])
    return result


def report(results: list[Count], depth: int) -> None:
    print(f"\n| command (pipeline {depth}) | server | instructions / command | vs redis-server |")
    print("|---|---|---:|---:|")
    for command in dict.fromkeys(r.workload for r in results):
        rows = [r for r in results if r.workload == command]
        base = next((r.per_request for r in rows if r.server == "redis"), None)
        for r in rows:
            ratio = f"{r.per_request / base:.2f}x" if base else "-"
            print(f"| {command.upper()} | {r.server} | {r.per_request:,.0f} | {ratio} |")
    for r in results:
        if r.functions:
            print(f"\n{r.server}, {r.workload.upper()}: self instructions per command by function\n")
            print("| function | per command |\n|---|---:|")
            for name, cost in r.functions.items():
                print(f"| `{name}` | {cost:,.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.resp_instructions",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--only", default=",".join(COMMANDS), help=f"commands: {', '.join(COMMANDS)}")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"servers: {', '.join(SERVERS)}")
    parser.add_argument("--depth", type=int, default=16, help="commands pipelined per write")
    parser.add_argument("--short", type=int, default=1_600, help="commands in the short run")
    parser.add_argument("--long", type=int, default=9_600, help="commands in the long run")
    parser.add_argument("--functions", type=int, default=0, metavar="K", help="show the K costliest functions")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose resp_server and netloop run")
    args = parser.parse_args(argv)
    commands = [c for c in args.only.split(",") if c]
    servers = [s for s in args.servers.split(",") if s]
    for name in commands:
        if name not in COMMANDS:
            parser.error(f"unknown command {name!r}")
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    if args.depth < 1 or args.long <= args.short or args.short % args.depth or args.long % args.depth:
        parser.error("--long must exceed --short, and both must be multiples of --depth")
    tree = args.tree.resolve()
    # Byte-compile first: a server that compiles its modules under valgrind may not listen within the start timeout.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "resp_server", "netloop"], cwd=tree, check=False)
    results: list[Count] = []
    for command in commands:
        for server in servers:
            why = unavailable(server, "resp")
            if why:
                print(f"{command}: {server} skipped: {why}", file=sys.stderr)
                continue
            result = count(server, command, args.depth, args.short, args.long, tree, args.functions)
            print(f"{command}: {server}: {result.per_request:,.0f} instructions/command", file=sys.stderr, flush=True)
            results.append(result)
    report(results, args.depth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
