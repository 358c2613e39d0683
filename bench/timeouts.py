"""What timeouts cost: CPU per request with 10 vs 15,000 idle connections holding timeouts, and HTTP with and without.

    python -m bench.timeouts                       # 5 interleaved rounds of 5 s each
    python -m bench.timeouts --rounds 7 --duration 5 --idle 15000
    python -m bench.timeouts --quick               # smoke run

Two comparisons, each a ratio of the server's CPU time per request (utime + stime from /proc/PID/stat, divided by
the requests answered), measured side by side and interleaved round by round, the server pinned to one CPU and the
load generator to the other; the figure is the median of the rounds' ratios:

- **idle**: the echo example under ``python -m netloop.serve`` with ``--idle-timeout 300 --read-timeout 300``,
  1 KiB ping-pong on 16 connections, while 10 or ``--idle`` (15,000) more connections sit idle, each holding its
  timeouts in the timing wheel. Target: at most 1.1.
- **http**: the benchmark's HTTP server (wrk, 64 connections, no pipelining) with ``--idle-timeout 30
  --read-timeout 10`` against the same server without them. Target: at most 1.03.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._errors import BenchError
from bench._loadgen import EchoLoad, build_echo_load, wrk
from bench._proc import cpu_times, pinned
from bench._servers import HOST, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
SETUP_TIMEOUT_S = 120.0
ACTIVE_CONNECTIONS = 16
SOURCE_SPAN = 8_000  # idle connections per 127.0.0.x source address
ECHO = "examples.echo:Echo"
HTTP = "bench.servers.netloop_http:make_handler"


@dataclass(frozen=True)
class Measure:
    rate: float  # requests per second
    cpu_per_request: float  # server seconds per request


@contextlib.contextmanager
def server(target: str, flags: Sequence[str], cpu: int) -> Iterator[tuple[int, int]]:
    """``python -m netloop.serve target`` pinned to ``cpu``; yields (port, pid) once it answers connections."""
    port = free_port()
    argv = [sys.executable, "-m", "netloop.serve", target, "--bind", f"tcp://{HOST}:{port}", "--log-level", "error"]
    process = subprocess.Popen([*argv, *flags], cwd=ROOT, preexec_fn=pinned(cpu), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise BenchError(f"server exited: {process.stderr.read().decode() if process.stderr else ''}")
            try:
                socket.create_connection((HOST, port), timeout=1.0).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"server not listening on {port}") from None
            time.sleep(0.05)  # polling the port is the readiness signal
        yield port, process.pid
    finally:
        stop_process(process)


def echo_round(
    binary: Path, flags: Sequence[str], idle: int, duration: float, server_cpu: int, client_cpu: int
) -> Measure:
    with server(ECHO, flags, server_cpu) as (port, pid):
        sources = str(max(1, math.ceil(idle / SOURCE_SPAN)))
        holder = ["idle", HOST, str(port), "-c", str(idle), "-m", "64", "-s", sources]
        with EchoLoad(binary, holder, client_cpu) as held:
            held.ready(SETUP_TIMEOUT_S)
            args = ["pingpong", HOST, str(port), "-c", str(ACTIVE_CONNECTIONS), "-m", "1024", "-d", str(duration)]
            with EchoLoad(binary, args, client_cpu) as load:
                load.ready(SETUP_TIMEOUT_S)
                before = cpu_times(pid)
                load.go()
                result = load.result(duration + 60)
                used = cpu_times(pid) - before
    if result.units == 0:
        raise BenchError("no round-trip completed")
    return Measure(result.units / result.elapsed_s, used.total / result.units)


def http_round(flags: Sequence[str], duration: float, server_cpu: int, client_cpu: int) -> Measure:
    with server(HTTP, [*flags, "--ticker"], server_cpu) as (port, pid):
        before = cpu_times(pid)
        report = wrk(f"http://{HOST}:{port}/", 64, max(1, round(duration)), 1, client_cpu)
        used = cpu_times(pid) - before
    if report.requests == 0 or report.non_2xx or report.socket_errors:
        raise BenchError(f"wrk: {report}")
    return Measure(report.requests_per_s, used.total / report.requests)


def _raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard or (hard == resource.RLIM_INFINITY and soft < needed):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        raise BenchError(f"{needed} descriptors needed, the limit is {soft} (hard {hard})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--idle", type=int, default=15_000, help="idle connections in the crowded variant")
    parser.add_argument("--few", type=int, default=10, help="idle connections in the quiet variant")
    parser.add_argument("--only", choices=("idle", "http"), default=None)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 s, 1,000 idle connections")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.idle = 2, 1.0, 1_000
    _raise_descriptor_limit(args.idle + 1_000)
    timeouts = ["--idle-timeout", "300", "--read-timeout", "300"]
    lines = []
    if args.only in (None, "idle"):
        binary = build_echo_load()
        ratios, quiet, crowded = [], [], []
        for i in range(args.rounds):
            pair = [(args.few, quiet), (args.idle, crowded)]
            if i % 2:
                pair.reverse()  # interleaved, and in turn first
            for idle, into in pair:
                into.append(echo_round(binary, timeouts, idle, args.duration, args.server_cpu, args.client_cpu))
            ratios.append(crowded[-1].cpu_per_request / quiet[-1].cpu_per_request)
            print(f"idle round {i + 1}: {ratios[-1]:.3f}", file=sys.stderr)
        lines.append(
            _row(f"echo 1 KiB, {args.idle:,} vs {args.few} idle connections with timeouts", quiet, crowded, ratios)
        )
    if args.only in (None, "http"):
        http_timeouts = ["--idle-timeout", "30", "--read-timeout", "10"]
        ratios, plain, timed = [], [], []
        for i in range(args.rounds):
            pair = [([], plain), (http_timeouts, timed)]
            if i % 2:
                pair.reverse()
            for flags, into in pair:
                into.append(http_round(flags, args.duration, args.server_cpu, args.client_cpu))
            ratios.append(timed[-1].cpu_per_request / plain[-1].cpu_per_request)
            print(f"http round {i + 1}: {ratios[-1]:.3f}", file=sys.stderr)
        lines.append(_row("HTTP p1 (wrk, 64 connections), idle+read timeouts vs none", plain, timed, ratios))
    print("| comparison | base req/s | base CPU µs/req | with req/s | with CPU µs/req | CPU ratio (median of rounds) |")
    print("|---|---:|---:|---:|---:|---:|")
    for line in lines:
        print(line)
    return 0


def _row(title: str, base: list[Measure], other: list[Measure], ratios: list[float]) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    return (
        f"| {title} | {med([m.rate for m in base]):,.0f} | {med([m.cpu_per_request for m in base]) * 1e6:.1f} | "
        f"{med([m.rate for m in other]):,.0f} | {med([m.cpu_per_request for m in other]) * 1e6:.1f} | "
        f"{med(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)}) |"
    )


if __name__ == "__main__":
    sys.exit(main())
