"""The workloads: what load each applies to a running server, and how one measured interval becomes a Sample."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench import _loadgen
from bench._aio import AIO_ECHO, AIO_HTTP, aio_notes
from bench._asgi import ASGI_CONTENDERS
from bench._errors import BenchError
from bench._proc import CpuTimes, cpu_times, rss_bytes, tree_cpu_times, waited_children_cpu
from bench._servers import HOST, Server
from bench._stats import Sample
from bench._tls import TlsFiles

SETUP_TIMEOUT_S = 120.0
"""How long a load generator may take to open and warm its connections."""

RESULT_GRACE_S = 30.0
"""How long past the interval's planned end a load generator may take to report."""

REDIS_TESTS = "ping,set,get"
REDIS_TYPE_TESTS = "lpush,lpop,hset,sadd"
"""redis-benchmark's tests on lists, hashes and sets (a workload of their own, so the ping/set/get figures stay
comparable across versions)."""
REDIS_COMMANDS = ("set", "get", "hset", "zadd", "sadd")
"""The commands measured one workload each (``respcmd-*``), so each gets its own median and ratio to redis-server."""
COMMAND_KEYSPACE = 100_000
"""redis-benchmark's ``-r`` for the ``respcmd-*`` workloads: random keys, fields and members (and ZADD scores)."""
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
    """What measurements share during one run: the settings, the built echo_loads, the run's TLS certificate,
    sized request counts."""

    settings: Settings
    echo_load: Path | None = None
    echo_load_tls: Path | None = None
    tls: TlsFiles | None = None
    redis_requests: dict[tuple[str, int, bool, str], int] = field(default_factory=dict)


Measure = Callable[[Context, Server], Sample]
Notes = Callable[[Mapping[str, Sequence[Sample]], str], list[str]]
"""Lines for under a workload's table, from each contender's samples (in round order) and the workload's unit."""


@dataclass(frozen=True)
class Workload:
    """One workload: its name for ``--only`` and the results, how to read its numbers, and its measurement.

    ``title`` is filled in from the Settings' fields; ``unit`` is what server CPU time is divided by. A ``tls``
    workload's servers serve TLS with the run's certificate, and its load generator speaks TLS to them. ``notes``,
    when given, adds the workload's own comparisons under its table.
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
    tls: bool = False
    notes: Notes | None = None

    @property
    def group(self) -> str:
        """The family ``--only`` may name instead of the key (``echo`` for ``echo-1k``, ``tls`` for ``tls-echo``)."""
        return self.key.split("-")[0]

    def describe(self, settings: Settings) -> str:
        """The title with the settings' numbers in it."""
        return self.title.format_map(vars(settings))


def _sources(connections: int) -> str:
    return str(max(1, math.ceil(connections / SOURCE_ADDRESS_SPAN)))


Detail = dict[str, float | int | str]


def _negotiated(server: Server) -> Detail:
    return {"tls": server.negotiated} if server.negotiated else {}


def _detail(server: Server, client: CpuTimes, seconds: float, /, **more: float | int | str) -> Detail:
    """A sample's detail: ``more``, how busy the load generator kept its CPU over the ``seconds`` measured
    (``client_busy``, 1.0 is all of it: the load generator, not the server, may then be what limits the rate)
    and, over TLS, what was negotiated."""
    busy = client.total / seconds if seconds > 0 else 0.0
    return {**more, "client_busy": busy, **_negotiated(server)}


def _echo_load_argv(ctx: Context, server: Server, args: list[str]) -> tuple[Path, list[str]]:
    """The echo_load binary and its arguments for ``args`` (mode first) against ``server``: TLS (``-t``) when the
    server speaks it."""
    binary = ctx.echo_load_tls if server.tls else ctx.echo_load
    if binary is None:
        raise BenchError(f"echo_load{'_tls' * bool(server.tls)} is not built")
    return binary, [args[0], HOST, str(server.port), *args[1:], *(["-t"] if server.tls else [])]


def _echo_load(ctx: Context, server: Server, args: list[str], timeout: float, per_unit: float = 1.0) -> Sample:
    """Runs echo_load's measured phase against ``server``, bracketing it with the server's CPU times."""
    binary, argv = _echo_load_argv(ctx, server, args)
    with _loadgen.EchoLoad(binary, argv, ctx.settings.client_cpu) as load:
        load.ready(SETUP_TIMEOUT_S)
        before, client_before = cpu_times(server.pid), cpu_times(load.pid)
        load.go()
        result = load.result(timeout)
        used, client = cpu_times(server.pid) - before, cpu_times(load.pid) - client_before
    if result.units == 0 or result.elapsed_s <= 0:
        raise BenchError(f"echo_load completed nothing in {result.elapsed_s:.2f} s")
    units = result.units * per_unit
    detail = _detail(server, client, result.elapsed_s, elapsed_s=result.elapsed_s)
    return Sample(units / result.elapsed_s, units, used, detail)


def pingpong(ctx: Context, server: Server, message_size: int) -> Sample:
    """Round-trips per second: each connection sends a message and waits for its whole echo, repeatedly."""
    s = ctx.settings
    args = ["pingpong", "-c", str(s.connections), "-m", str(message_size), "-d", str(s.duration)]
    return _echo_load(ctx, server, args, s.duration + RESULT_GRACE_S)


def churn(ctx: Context, server: Server) -> Sample:
    """Connections per second, each: connect, one 64-byte echo, close (with RST, so no TIME_WAIT piles up).

    Over TLS each connection is a full handshake (the client offers no session to resume), and the client sends
    close_notify before the RST.
    """
    s = ctx.settings
    args = ["churn", "-c", str(s.churn_in_flight), "-m", "64", "-d", str(s.duration)]
    return _echo_load(ctx, server, args, s.duration + RESULT_GRACE_S)


def bulk(ctx: Context, server: Server) -> Sample:
    """MB per second of one connection streaming ``bulk_mib`` MiB through the echo and reading it back."""
    total = ctx.settings.bulk_mib << 20
    # allow down to 1 MB/s before calling the server stuck
    return _echo_load(ctx, server, ["bulk", "-b", str(total)], total / 1e6 + RESULT_GRACE_S, per_unit=1e-6)


def idle(ctx: Context, server: Server) -> Sample:
    """Bytes of server RSS per open idle connection, each having exchanged one echo (after its handshake, over TLS)."""
    n = ctx.settings.idle_connections
    binary, argv = _echo_load_argv(ctx, server, ["idle", "-c", str(n), "-m", "64", "-s", _sources(n)])
    before = rss_bytes(server.pid)
    with _loadgen.EchoLoad(binary, argv, ctx.settings.client_cpu) as load:
        opened = load.ready(SETUP_TIMEOUT_S)
        after = rss_bytes(server.pid)
    detail = {"rss_before": before, "rss_after": after, **_negotiated(server)}
    return Sample((after - before) / opened, opened, None, detail)


def http(ctx: Context, server: Server, depth: int, path: str = "/") -> Sample:
    """Requests per second from wrk (one thread), ``depth`` requests pipelined per write (``https://`` over TLS).

    Server CPU counts its worker processes too (granian serves from one).
    """
    s = ctx.settings
    url = f"{'https' if server.tls else 'http'}://{HOST}:{server.port}{path}"
    before, client_before = tree_cpu_times(server.pid), waited_children_cpu()
    report = _loadgen.wrk(url, s.connections, max(1, round(s.duration)), depth, s.client_cpu)
    used, client = tree_cpu_times(server.pid) - before, waited_children_cpu() - client_before
    if report.requests == 0:
        raise BenchError("wrk completed no request")
    if report.non_2xx:
        raise BenchError(f"{report.non_2xx} of wrk's {report.requests} responses were not 2xx or 3xx")
    detail = _detail(
        server, client, report.duration_s, duration_s=report.duration_s, socket_errors=report.socket_errors
    )
    return Sample(report.requests_per_s, report.requests, used, detail)


def requests_for(rates: Mapping[str, float], seconds: float) -> int:
    """redis-benchmark's ``-n`` (per test) so that all the tests at ``rates`` take about ``seconds``.

    Rounded up to a thousand, at least a thousand.
    """
    per_test = seconds / sum(1.0 / r for r in rates.values())
    return max(1_000, math.ceil(per_test / 1_000) * 1_000)


def resp(ctx: Context, server: Server, pipeline: int, tests: str = REDIS_TESTS, keyspace: int | None = None) -> Sample:
    """Requests per second over redis-benchmark's ``tests`` (ping, set and get unless told), ``pipeline`` requests
    in flight, keys random below ``keyspace`` when it is given.

    Over TLS (``--tls``) each test opens its connections anew, so the interval holds their handshakes as well.
    """
    s = ctx.settings
    run = partial(
        _loadgen.redis_benchmark,
        server.port,
        s.connections,
        pipeline=pipeline,
        tests=tests,
        cpu=s.client_cpu,
        tls=server.tls,
        keyspace=keyspace,
    )
    key = (server.contender, pipeline, server.tls is not None, tests)
    if key not in ctx.redis_requests:
        # redis-benchmark counts requests, not seconds: a first unrecorded run sizes the measured ones
        warmup = run(CALIBRATION_REQUESTS * pipeline, timeout=SETUP_TIMEOUT_S)
        ctx.redis_requests[key] = requests_for(warmup, s.duration)
    n = ctx.redis_requests[key]
    before, client_before = cpu_times(server.pid), waited_children_cpu()
    rates = run(n, timeout=10 * s.duration + RESULT_GRACE_S)
    used, client = cpu_times(server.pid) - before, waited_children_cpu() - client_before
    units = n * len(rates)
    elapsed = sum(n / rate for rate in rates.values())
    detail = _detail(server, client, elapsed, **{f"{test} rps": rate for test, rate in rates.items()})
    return Sample(units / elapsed, units, used, detail)


_ECHO = ("netloop", "netloop-pure", "asyncio", "uvloop")
_RESP = (*_ECHO, "redis")
_TLS = (*_ECHO, "aiofastnet")
_TLS_RESP = (*_TLS, "redis")

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
    *(
        Workload(
            f"asgi-{name}-p{depth}",
            f"ASGI {title} (wrk), {{connections}} connections, "
            + ("no pipelining" if depth == 1 else f"{depth} requests pipelined"),
            "requests/s",
            "request",
            proto,
            ASGI_CONTENDERS,
            "wrk",
            partial(http, depth=depth, path=path),
        )
        for name, title, proto, path in (
            ("bare", "bare app, plaintext", "asgi-bare", "/"),
            ("bare-json", "bare app, JSON", "asgi-bare_json", "/"),
            ("starlette", "Starlette app, plaintext", "asgi-starlette", "/"),
            ("starlette-json", "Starlette app, JSON", "asgi-starlette", "/json"),
        )
        for depth in (1, 16)
    ),
    Workload(
        "aio-echo-1k",
        "asyncio echo ping-pong, 1 KiB messages, {connections} connections: Protocol and streams, on netloop's loop "
        "and on uvloop",
        "round-trips/s",
        "round-trip",
        "echo",
        AIO_ECHO,
        "echo_load",
        partial(pingpong, message_size=1024),
        notes=aio_notes,
    ),
    Workload(
        "aio-http-p1",
        "asyncio HTTP plaintext (wrk), {connections} connections, no pipelining: a Protocol on netloop's loop and on "
        "uvloop, async and plain on_traffic",
        "requests/s",
        "request",
        "http",
        AIO_HTTP,
        "wrk",
        partial(http, depth=1),
        notes=aio_notes,
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
        "resp-types-p1",
        "RESP lpush/lpop/hset/sadd (redis-benchmark), {connections} connections, no pipelining",
        "requests/s",
        "request",
        "resp",
        _RESP,
        "redis-benchmark",
        partial(resp, pipeline=1, tests=REDIS_TYPE_TESTS),
    ),
    Workload(
        "resp-types-p16",
        "RESP lpush/lpop/hset/sadd (redis-benchmark), {connections} connections, pipeline 16",
        "requests/s",
        "request",
        "resp",
        _RESP,
        "redis-benchmark",
        partial(resp, pipeline=16, tests=REDIS_TYPE_TESTS),
    ),
    *(
        Workload(
            f"respcmd-{command}-p16",
            f"RESP {command.upper()} alone (redis-benchmark -r {COMMAND_KEYSPACE:,}), {{connections}} connections, "
            "pipeline 16",
            "requests/s",
            "request",
            "resp",
            _RESP,
            "redis-benchmark",
            partial(resp, pipeline=16, tests=command, keyspace=COMMAND_KEYSPACE),
        )
        for command in REDIS_COMMANDS
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
    Workload(
        "tls-echo",
        "TLS echo ping-pong, 1 KiB messages, {connections} connections",
        "round-trips/s",
        "round-trip",
        "echo",
        _TLS,
        "echo_load_tls",
        partial(pingpong, message_size=1024),
        tls=True,
    ),
    Workload(
        "tls-http-p1",
        "HTTPS plaintext (wrk), {connections} connections, no pipelining",
        "requests/s",
        "request",
        "http",
        _TLS,
        "wrk",
        partial(http, depth=1),
        tls=True,
    ),
    Workload(
        "tls-http-p16",
        "HTTPS plaintext (wrk), {connections} connections, 16 requests pipelined",
        "requests/s",
        "request",
        "http",
        _TLS,
        "wrk",
        partial(http, depth=16),
        tls=True,
    ),
    Workload(
        "tls-resp-p1",
        "RESP over TLS (redis-benchmark --tls), {connections} connections, no pipelining",
        "requests/s",
        "request",
        "resp",
        _TLS_RESP,
        "redis-benchmark",
        partial(resp, pipeline=1),
        tls=True,
    ),
    Workload(
        "tls-resp-p16",
        "RESP over TLS (redis-benchmark --tls), {connections} connections, pipeline 16",
        "requests/s",
        "request",
        "resp",
        _TLS_RESP,
        "redis-benchmark",
        partial(resp, pipeline=16),
        tls=True,
    ),
    Workload(
        "tls-handshake",
        "full TLS handshakes: connect, handshake, one 64-byte echo, close; {churn_in_flight} in flight",
        "handshakes/s",
        "handshake",
        "echo",
        _TLS,
        "echo_load_tls",
        churn,
        tls=True,
    ),
    Workload(
        "tls-idle",
        "server RSS growth per TLS connection with {idle_connections:,} idle TLS connections open",
        "bytes/conn",
        "connection",
        "echo",
        _TLS,
        "echo_load_tls",
        idle,
        higher_is_better=False,
        tls=True,
    ),
)
"""Every workload, in the order they run and are reported."""
