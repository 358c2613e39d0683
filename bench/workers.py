"""Worker-process scaling: the echo and HTTP examples under ``workers=N``, throughput for each N.

    python -m bench.workers                                   # workers 1 and 2, echo and HTTP, 5 s x 3 rounds
    python -m bench.workers --workers 1,2,4,8,16 --server-cpus 0-11 --client-cpus 12-15
    python -m bench.workers --quick                           # smoke run: 1 s x 1 round

Each measurement starts a fresh server (``python -m bench.workers serve``: the example's handler under
``netloop.run(..., workers=N)``, one event loop per worker) pinned with ``taskset`` to the server CPUs. The load
comes from one load generator per client CPU, pinned there, the connections split between them: echo_load
(echo: 1 KiB ping-pong) or a single-threaded wrk (HTTP: ``GET /``, no pipelining). The markdown table gives the
median of the rounds and the speed-up over the first worker count.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench._errors import BenchError
from bench._loadgen import EchoLoad, build_echo_load, wrk
from bench._servers import HOST, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0
SETUP_TIMEOUT_S = 60.0
RESULT_GRACE_S = 30.0
MESSAGE_SIZE = 1024
PROTOS = ("echo", "http")


def cpu_list(text: str) -> list[int]:
    """CPUs from ``taskset`` syntax: ``0-3,8``."""
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def default_cpus(count: int) -> tuple[list[int], list[int]]:
    """(server CPUs, client CPUs): a quarter of the CPUs for the load from 4 up; below that they overlap."""
    if count >= 4:
        clients = max(1, count // 4)
        return list(range(count - clients)), list(range(count - clients, count))
    return list(range(count)), [count - 1]


def split(total: int, parts: int) -> list[int]:
    """``total`` connections over ``parts`` load generators, as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@contextlib.contextmanager
def server(proto: str, workers: int, balancing: str, cpus: Sequence[int]) -> Iterator[int]:
    """A running ``serve`` process on a free port (yields the port); stopped with SIGTERM, as an operator would."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.workers", "serve", proto, str(workers), str(port), balancing]
    argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield port
    finally:
        stop_process(proc)


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0):
            return
        time.sleep(0.05)
    raise BenchError(f"the server did not listen on port {port} within {START_TIMEOUT_S:.0f} s")


def echo_rate(binary: Path, port: int, connections: int, seconds: float, cpus: Sequence[int]) -> float:
    """Round-trips per second over every echo_load (one per client CPU)."""
    with contextlib.ExitStack() as stack:
        loads = []
        for share, cpu in zip(split(connections, len(cpus)), cpus, strict=True):
            args = ["pingpong", HOST, str(port), "-c", str(share), "-m", str(MESSAGE_SIZE), "-d", str(seconds)]
            loads.append(stack.enter_context(EchoLoad(binary, args, cpu)))
        for load in loads:
            load.ready(SETUP_TIMEOUT_S)
        for load in loads:
            load.go()
        results = [load.result(seconds + RESULT_GRACE_S) for load in loads]
    return sum(r.units / r.elapsed_s for r in results if r.elapsed_s > 0)


def http_rate(port: int, connections: int, seconds: float, cpus: Sequence[int]) -> float:
    """Requests per second over every wrk (one per client CPU, run at the same time)."""
    url = f"http://{HOST}:{port}/"
    whole = max(1, round(seconds))
    with ThreadPoolExecutor(len(cpus)) as pool:
        shares = zip(split(connections, len(cpus)), cpus, strict=True)
        runs = [pool.submit(wrk, url, n, whole, 1, cpu) for n, cpu in shares]
        return sum(run.result().requests_per_s for run in runs)


def measure(args: argparse.Namespace) -> dict[str, dict[int, list[float]]]:
    """Rates by protocol and worker count, one per round; worker counts interleave within a round."""
    binary = build_echo_load() if "echo" in args.protos else None
    rates: dict[str, dict[int, list[float]]] = {p: {n: [] for n in args.workers} for p in args.protos}
    for round_no in range(1, args.rounds + 1):
        for proto in args.protos:
            for workers in args.workers:
                with server(proto, workers, args.balancing, args.server_cpus) as port:
                    time.sleep(args.warmup)  # the workers finish booting; the first connections warm up
                    if proto == "echo":
                        assert binary is not None
                        rate = echo_rate(binary, port, args.connections, args.duration, args.client_cpus)
                    else:
                        rate = http_rate(port, args.connections, args.duration, args.client_cpus)
                rates[proto][workers].append(rate)
                print(f"round {round_no}: {proto} workers={workers}: {rate:,.0f}/s", file=sys.stderr)
    return rates


def report(args: argparse.Namespace, rates: dict[str, dict[int, list[float]]]) -> str:
    units = {"echo": f"round-trips/s ({MESSAGE_SIZE} B)", "http": "requests/s"}
    lines = [
        f"`{shlex.join(['python', '-m', 'bench.workers', *args.argv])}` on {os.cpu_count()} CPUs "
        f"({cpu_model()}); server CPUs {args.server_cpus}, client CPUs {args.client_cpus}, "
        f"{args.connections} connections, {args.balancing}, median of {args.rounds} x {args.duration:g} s",
        "",
        "| protocol | workers | throughput | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for proto, by_workers in rates.items():
        base = statistics.median(by_workers[args.workers[0]])
        for workers, samples in by_workers.items():
            rate = statistics.median(samples)
            lines.append(f"| {proto}, {units[proto]} | {workers} | {rate:,.0f} | {rate / base:.2f}x |")
    return "\n".join(lines)


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def serve(proto: str, workers: int, port: int, balancing: str) -> None:
    """The server side of one measurement: the example handler with ``workers`` processes."""
    import netloop

    options: dict[str, Any] = {"workers": workers, "worker_balancing": balancing}
    handler: netloop.EventHandler
    if proto == "echo":
        from examples.echo import Echo

        handler = Echo()
    else:
        from bench.servers.netloop_http import make_handler

        handler = make_handler()
        options["ticker"] = True  # the Date header's refresh
    netloop.run(handler, f"tcp://{HOST}:{port}", **options)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    server_cpus, client_cpus = default_cpus(os.cpu_count() or 1)
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=lambda t: [int(n) for n in t.split(",")], default=[1, 2])
    parser.add_argument("--protos", type=lambda t: t.split(","), default=list(PROTOS))
    parser.add_argument("--balancing", choices=["reuse-port", "parent"], default="reuse-port")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured interval")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds between start and measuring")
    parser.add_argument("--server-cpus", type=cpu_list, default=server_cpus)
    parser.add_argument("--client-cpus", type=cpu_list, default=client_cpus)
    parser.add_argument("--quick", action="store_true", help="1 s intervals, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup = 1.0, 1, 0.3
    unknown = set(args.protos) - set(PROTOS)
    if unknown:
        parser.error(f"unknown protocol(s) {', '.join(sorted(unknown))}; choose from {', '.join(PROTOS)}")
    args.argv = list(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        _, proto, workers, port, balancing = argv
        serve(proto, int(workers), int(port), balancing)
        return 0
    args = parse_args(argv)
    try:
        print(report(args, measure(args)))
    except BenchError as exc:
        print(f"bench.workers: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
