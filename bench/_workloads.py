"""The workloads: what load each applies to a running server, and how one measured interval becomes a Sample."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench import _loadgen
from bench._errors import BenchError
from bench._proc import cpu_times, rss_bytes
from bench._servers import HOST, Server
from bench._stats import Sample

SETUP_TIMEOUT_S = 120.0
"""How long a load generator may take to open and warm its connections."""

RESULT_GRACE_S = 30.0
"""How long past the interval's planned end a load generator may take to report."""

REDIS_TESTS = "ping,set,get"
CALIBRATION_REQUESTS = 2_000
"""redis-benchmark requests per test (times the pipeline depth) in the unrecorded sizing run."""

SOURCE_ADDRESS_SPAN = 8_000
"""Connections per 127.0.0.x source address, well inside one address's ephemeral port range."""


@dataclass(frozen=True)
class Settings:
    """What one benchmark run does; ``quick()`` gives the smoke-run variant."""

    duration: float = 5.0
    rounds: int = 3
    connections: int = 64
    idle_connections: int = 10_000
    churn_in_flight: int = 16
    bulk_mib: int = 1024
    server_cpu: int = 0
    client_cpu: int = 1

    @classmethod
    def quick(cls) -> Settings:
        """Short intervals, fewer rounds and smaller counts: a whole run in well under two minutes."""
        return cls(duration=0.7, rounds=2, idle_connections=1_000, bulk_mib=256)


@dataclass
class Context:
    """What measurements share during one run: the settings, the built echo_load, sized request counts."""

    settings: Settings
    echo_load: Path | None = None
    redis_requests: dict[tuple[str, int], int] = field(default_factory=dict)


Measure = Callable[[Context, Server], Sample]


@dataclass(frozen=True)
class Workload:
    """One workload: its name for ``--only`` and the results, how to read its numbers, and its measurement.

    ``title`` is filled in from the Settings' fields; ``unit`` is what server CPU time is divided by.
    """

    key: str
    title: str
    metric: str
    unit: str
    proto: str
    contenders: tuple[str, ...]
    tool: str
    measure: Measure
    higher_is_better: bool = True

    @property
    def group(self) -> str:
        """The family ``--only`` may name instead of the key (``echo`` for ``echo-1k``)."""
        return self.key.split("-")[0]

    def describe(self, settings: Settings) -> str:
        """The title with the settings' numbers in it."""
        return self.title.format_map(vars(settings))


def _sources(connections: int) -> str:
    return str(max(1, math.ceil(connections / SOURCE_ADDRESS_SPAN)))


def _echo_load(ctx: Context, server: Server, args: list[str], timeout: float, per_unit: float = 1.0) -> Sample:
    """Runs echo_load's measured phase against ``server``, bracketing it with the server's CPU times."""
    if ctx.echo_load is None:
        raise BenchError("echo_load is not built")
    argv = [args[0], HOST, str(server.port), *args[1:]]
    with _loadgen.EchoLoad(ctx.echo_load, argv, ctx.settings.client_cpu) as load:
        load.ready(SETUP_TIMEOUT_S)
        before = cpu_times(server.pid)
        load.go()
        result = load.result(timeout)
        used = cpu_times(server.pid) - before
    if result.units == 0 or result.elapsed_s <= 0:
        raise BenchError(f"echo_load completed nothing in {result.elapsed_s:.2f} s")
    units = result.units * per_unit
    return Sample(units / result.elapsed_s, units, used, {"elapsed_s": result.elapsed_s})


def pingpong(ctx: Context, server: Server, message_size: int) -> Sample:
    """Round-trips per second: each connection sends a message and waits for its whole echo, repeatedly."""
    s = ctx.settings
    args = ["pingpong", "-c", str(s.connections), "-m", str(message_size), "-d", str(s.duration)]
    return _echo_load(ctx, server, args, s.duration + RESULT_GRACE_S)


def churn(ctx: Context, server: Server) -> Sample:
    """Connections per second, each: connect, one 64-byte echo, close (with RST, so no TIME_WAIT piles up)."""
    s = ctx.settings
    args = ["churn", "-c", str(s.churn_in_flight), "-m", "64", "-d", str(s.duration)]
    return _echo_load(ctx, server, args, s.duration + RESULT_GRACE_S)


def bulk(ctx: Context, server: Server) -> Sample:
    """MB per second of one connection streaming ``bulk_mib`` MiB through the echo and reading it back."""
    total = ctx.settings.bulk_mib << 20
    # allow down to 1 MB/s before calling the server stuck
    return _echo_load(ctx, server, ["bulk", "-b", str(total)], total / 1e6 + RESULT_GRACE_S, per_unit=1e-6)


def idle(ctx: Context, server: Server) -> Sample:
    """Bytes of server RSS per open idle connection, each having exchanged one echo."""
    if ctx.echo_load is None:
        raise BenchError("echo_load is not built")
    n = ctx.settings.idle_connections
    argv = ["idle", HOST, str(server.port), "-c", str(n), "-m", "64", "-s", _sources(n)]
    before = rss_bytes(server.pid)
    with _loadgen.EchoLoad(ctx.echo_load, argv, ctx.settings.client_cpu) as load:
        opened = load.ready(SETUP_TIMEOUT_S)
        after = rss_bytes(server.pid)
    return Sample((after - before) / opened, opened, None, {"rss_before": before, "rss_after": after})


def http(ctx: Context, server: Server, depth: int) -> Sample:
    """Requests per second from wrk (one thread), ``depth`` requests pipelined per write."""
    s = ctx.settings
    before = cpu_times(server.pid)
    report = _loadgen.wrk(
        f"http://{HOST}:{server.port}/", s.connections, max(1, round(s.duration)), depth, s.client_cpu
    )
    used = cpu_times(server.pid) - before
    if report.requests == 0:
        raise BenchError("wrk completed no request")
    if report.non_2xx:
        raise BenchError(f"{report.non_2xx} of wrk's {report.requests} responses were not 2xx or 3xx")
    detail = {"duration_s": report.duration_s, "socket_errors": report.socket_errors}
    return Sample(report.requests_per_s, report.requests, used, detail)


def requests_for(rates: Mapping[str, float], seconds: float) -> int:
    """redis-benchmark's ``-n`` (per test) so that all the tests at ``rates`` take about ``seconds``.

    Rounded up to a thousand, at least a thousand.
    """
    per_test = seconds / sum(1.0 / r for r in rates.values())
    return max(1_000, math.ceil(per_test / 1_000) * 1_000)


def resp(ctx: Context, server: Server, pipeline: int) -> Sample:
    """Requests per second over redis-benchmark's ping, set and get tests, ``pipeline`` requests in flight."""
    s = ctx.settings
    run = partial(
        _loadgen.redis_benchmark, server.port, s.connections, pipeline=pipeline, tests=REDIS_TESTS, cpu=s.client_cpu
    )
    key = (server.contender, pipeline)
    if key not in ctx.redis_requests:
        # redis-benchmark counts requests, not seconds: a first unrecorded run sizes the measured ones
        warmup = run(CALIBRATION_REQUESTS * pipeline, timeout=SETUP_TIMEOUT_S)
        ctx.redis_requests[key] = requests_for(warmup, s.duration)
    n = ctx.redis_requests[key]
    before = cpu_times(server.pid)
    rates = run(n, timeout=10 * s.duration + RESULT_GRACE_S)
    used = cpu_times(server.pid) - before
    units = n * len(rates)
    elapsed = sum(n / rate for rate in rates.values())
    return Sample(units / elapsed, units, used, {f"{test} rps": rate for test, rate in rates.items()})


_ECHO = ("netloop", "asyncio", "uvloop")
_RESP = (*_ECHO, "redis")

WORKLOADS = (
    Workload(
        "echo-1k",
        "echo ping-pong, 1 KiB messages, {connections} connections",
        "round-trips/s",
        "round-trip",
        "echo",
        _ECHO,
        "echo_load",
        partial(pingpong, message_size=1024),
    ),
    Workload(
        "echo-16k",
        "echo ping-pong, 16 KiB messages, {connections} connections",
        "round-trips/s",
        "round-trip",
        "echo",
        _ECHO,
        "echo_load",
        partial(pingpong, message_size=16 * 1024),
    ),
    Workload(
        "http-p1",
        "HTTP plaintext (wrk), {connections} connections, no pipelining",
        "requests/s",
        "request",
        "http",
        _ECHO,
        "wrk",
        partial(http, depth=1),
    ),
    Workload(
        "http-p16",
        "HTTP plaintext (wrk), {connections} connections, 16 requests pipelined",
        "requests/s",
        "request",
        "http",
        _ECHO,
        "wrk",
        partial(http, depth=16),
    ),
    Workload(
        "resp-p1",
        "RESP ping/set/get (redis-benchmark), {connections} connections, no pipelining",
        "requests/s",
        "request",
        "resp",
        _RESP,
        "redis-benchmark",
        partial(resp, pipeline=1),
    ),
    Workload(
        "resp-p16",
        "RESP ping/set/get (redis-benchmark), {connections} connections, pipeline 16",
        "requests/s",
        "request",
        "resp",
        _RESP,
        "redis-benchmark",
        partial(resp, pipeline=16),
    ),
    Workload(
        "idle",
        "server RSS growth per connection with {idle_connections:,} idle connections open",
        "bytes/conn",
        "connection",
        "echo",
        _ECHO,
        "echo_load",
        idle,
        higher_is_better=False,
    ),
    Workload(
        "churn",
        "connection churn: connect, one 64-byte echo, close; {churn_in_flight} in flight",
        "connections/s",
        "connection",
        "echo",
        _ECHO,
        "echo_load",
        churn,
    ),
    Workload(
        "bulk",
        "one connection streams {bulk_mib} MiB through the echo server",
        "MB/s",
        "MB",
        "echo",
        _ECHO,
        "echo_load",
        bulk,
    ),
)
"""Every workload, in the order they run and are reported."""
