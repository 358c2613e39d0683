"""The benchmark harness: its parsers, /proc readers, statistics and report, and one tiny end-to-end run."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import _loadgen
from bench.__main__ import main, parse_args, select_workloads, settings_from
from bench._errors import BenchError
from bench._parse import parse_ready, parse_redis_benchmark, parse_result, parse_wrk
from bench._proc import CpuTimes, cpu_times, parse_rss, parse_stat, pinned, rss_bytes
from bench._report import markdown, record
from bench._runner import Entry, Outcome
from bench._servers import server_argv, unavailable
from bench._stats import Sample, ratios_by_metric, ratios_to_best, round_ratios, summarise
from bench._tls import TlsFiles
from bench._workloads import WORKLOADS, Settings, requests_for

WRK_REPORT = """\
Running 5s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.92ms  294.56us   2.98ms   72.00%
    Req/Sec    51.03k     1.64k   54.19k    90.91%
  254321 requests in 5.00s, 31.29MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 7
Requests/sec:  50864.20
Transfer/sec:      6.26MB
"""

REDIS_CSV = """\
"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"PING_INLINE","86956.52","0.057","0.008","0.047","0.111","0.151","0.303"
"PING_MBULK","105263.16","0.042","0.016","0.039","0.063","0.079","0.391"
"SET","100000.00","0.043","0.016","0.039","0.063","0.087","0.263"
"GET","95238.10","0.042","0.016","0.039","0.063","0.079","0.279"
"""

REDIS_QUIET = (
    "PING_INLINE: rps=0.0 (overall: 51000.0) avg_msec=0.045 (overall: 0.045)   \r"
    "PING_INLINE: 105263.16 requests per second, p50=0.047 msec\n"
    "SET: 99009.90 requests per second, p50=0.047 msec\n"
    "MSET (10 keys): 50000.00 requests per second, p50=0.100 msec\n"
)


def stat_line(comm: str, utime: int, stime: int) -> str:
    # fields 3..13, then utime (14) and stime (15), then the rest
    return f"4242 ({comm}) S 1 4242 4242 0 -1 4194560 2000 0 0 0 {utime} {stime} 0 0 20 0 1 0 123 4096 100"


def test_wrk_report_totals_and_errors() -> None:
    report = parse_wrk(WRK_REPORT)
    assert report.requests == 254321
    assert report.duration_s == pytest.approx(5.0)
    assert report.requests_per_s == pytest.approx(50864.20)
    assert report.socket_errors == 3
    assert report.non_2xx == 7


def test_wrk_report_duration_units_and_clean_run() -> None:
    text = "  1200 requests in 900.50ms, 1.00MB read\nRequests/sec:   1332.59\n"
    report = parse_wrk(text)
    assert report.duration_s == pytest.approx(0.9005)
    assert (report.socket_errors, report.non_2xx) == (0, 0)
    assert parse_wrk("  60 requests in 1.00m, 1KB read\nRequests/sec: 1.00\n").duration_s == pytest.approx(60.0)


def test_wrk_report_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="not a wrk report"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_redis_benchmark_csv_with_header() -> None:
    rates = parse_redis_benchmark(REDIS_CSV)
    assert list(rates) == ["PING_INLINE", "PING_MBULK", "SET", "GET"]
    assert rates["SET"] == pytest.approx(100000.0)


def test_redis_benchmark_csv_without_header() -> None:
    assert parse_redis_benchmark('"PING_INLINE","1234.50"\n"GET","99.00"\n') == {"PING_INLINE": 1234.5, "GET": 99.0}


def test_redis_benchmark_quiet_output_skips_progress_lines() -> None:
    rates = parse_redis_benchmark(REDIS_QUIET)
    assert rates == {"PING_INLINE": 105263.16, "SET": 99009.90, "MSET (10 keys)": 50000.0}


def test_redis_benchmark_without_results_is_an_error() -> None:
    with pytest.raises(ValueError, match="no results"):
        parse_redis_benchmark("Could not connect to Redis at 127.0.0.1:1: Connection refused\n")


def test_echo_load_lines() -> None:
    assert parse_ready("ready 64") == 64
    result = parse_result("result 1000 2500000000 1024000")
    assert (result.units, result.elapsed_s, result.bytes) == (1000, 2.5, 1024000)
    with pytest.raises(ValueError):
        parse_ready("result 1 2 3")
    with pytest.raises(ValueError):
        parse_result("ready 64")


def test_stat_fields_after_a_comm_with_spaces_and_parentheses() -> None:
    times = parse_stat(stat_line("py (x) y", 250, 75), clock_ticks=100)
    assert times == CpuTimes(2.5, 0.75)
    assert times.total == pytest.approx(3.25)
    assert parse_stat(stat_line("a", 300, 100), 100) - times == CpuTimes(0.5, 0.25)


def test_stat_rejects_a_truncated_line() -> None:
    with pytest.raises(ValueError):
        parse_stat("4242 (python) S 1 2 3")


def test_own_cpu_times_match_the_kernels_times() -> None:
    sum(i * i for i in range(300_000))  # spend some user time
    mine, expected = cpu_times(os.getpid()), os.times()
    # both read the same counters; /proc rounds to clock ticks and the second read is a little later
    assert mine.user == pytest.approx(expected.user, abs=0.05)
    assert mine.system == pytest.approx(expected.system, abs=0.05)
    assert mine.user > 0


def test_rss_parsing_and_growth() -> None:
    assert parse_rss("Name:\tpython\nVmRSS:\t   2048 kB\nVmSwap:\t0 kB\n") == 2 * 1024 * 1024
    with pytest.raises(ValueError):
        parse_rss("Name:\tpython\n")
    before = rss_bytes(os.getpid())
    block = b"x" * (32 << 20)  # written through, so resident
    assert rss_bytes(os.getpid()) - before > 24 << 20
    del block


def test_pinned_child_runs_on_one_cpu_with_raised_fd_limit() -> None:
    cpu = max(os.sched_getaffinity(0))
    script = "import os, resource; print(sorted(os.sched_getaffinity(0)), *resource.getrlimit(resource.RLIMIT_NOFILE))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, preexec_fn=pinned(cpu)
    ).stdout.split(maxsplit=1)
    assert out[0] == f"[{cpu}]"
    soft, hard = out[1].split()
    assert soft == hard


def test_cpu_per_unit_and_medians() -> None:
    samples = [
        Sample(100.0, 1000, CpuTimes(0.002, 0.001)),
        Sample(300.0, 2000, CpuTimes(0.002, 0.004)),
        Sample(200.0, 1000, CpuTimes(0.001, 0.001)),
    ]
    assert samples[0].cpu_us_per_unit() == pytest.approx({"user": 2.0, "system": 1.0, "total": 3.0})
    medians = summarise(samples)
    assert medians == pytest.approx({"value": 200.0, "user": 1.0, "system": 1.0, "total": 3.0})
    assert summarise([Sample(5.0, 1, None), Sample(7.0, 1, CpuTimes(1, 1))]) == {"value": 6.0}
    assert summarise([]) == {}


def test_ratios_to_the_best() -> None:
    assert ratios_to_best({"a": 50.0, "b": 100.0}, higher_is_better=True) == {"a": 0.5, "b": 1.0}
    assert ratios_to_best({"a": 50.0, "b": 100.0}, higher_is_better=False) == {"a": 1.0, "b": 2.0}
    zero = ratios_to_best({"a": 0.0, "b": 3.0, "c": 0.0}, higher_is_better=False)
    assert zero["a"] == zero["c"] == 1.0
    assert math.isinf(zero["b"])


def test_ratios_by_metric_prefers_less_cpu_whatever_the_value_direction() -> None:
    medians = {
        "netloop": {"value": 1000.0, "user": 4.0, "system": 2.0, "total": 6.0},
        "uvloop": {"value": 2000.0, "user": 2.0, "system": 2.0, "total": 4.0},
        "redis": {"value": 4000.0},
    }
    ratios = ratios_by_metric(medians, higher_is_better=False)
    assert ratios["value"] == {"netloop": 1.0, "uvloop": 2.0, "redis": 4.0}
    assert ratios["total"] == {"netloop": 1.5, "uvloop": 1.0}
    assert ratios_by_metric(medians, higher_is_better=True)["value"]["netloop"] == 0.25


def test_redis_requests_sized_to_the_interval() -> None:
    # 100k/s and 50k/s: n requests each take n/100k + n/50k seconds
    assert requests_for({"PING": 100_000.0, "GET": 50_000.0}, 1.0) == 34_000
    assert requests_for({"PING": 10.0}, 1.0) == 1_000


def _outcome() -> Outcome:
    workload = next(w for w in WORKLOADS if w.key == "echo-1k")
    entries = {
        "netloop": Entry([Sample(1000.0, 5000, CpuTimes(0.01, 0.02)), Sample(1200.0, 6000, CpuTimes(0.012, 0.018))]),
        "asyncio": Entry([Sample(2000.0, 10000, CpuTimes(0.01, 0.01))]),
        "uvloop": Entry(error="uvloop server exited with status 1: boom | crash\ntraceback"),
    }
    return Outcome(workload, entries)


def test_markdown_table_rows() -> None:
    machine = {"cpu_model": "Test CPU", "cpu_count": 2, "kernel": "Linux 6", "python": "CPython 3.11", "command": "x"}
    text = markdown([_outcome()], Settings(), machine)
    lines = text.splitlines()
    assert "## echo-1k: echo ping-pong, 1 KiB messages, 64 connections" in lines
    header = next(line for line in lines if line.startswith("| contender"))
    assert header.count("vs best") == 4
    netloop = next(line for line in lines if line.startswith("| netloop"))
    # median 1,100 round-trips/s against 2,000; total CPU 5.5 µs against asyncio's 2.0
    assert netloop.split(" | ")[1:3] == ["1,100", "0.55x"]
    assert netloop.rstrip(" |").endswith("5.50 | 2.75x")
    failed = next(line for line in lines if line.startswith("| uvloop"))
    assert "failed: uvloop server exited with status 1: boom \\| crash" in failed
    assert failed.count("|") == header.count("|") + 1  # the escaped '|' is one more


def test_json_record_is_strict_json() -> None:
    data = record([_outcome()], Settings(), {"command": "python -m bench"})
    text = json.dumps(data, allow_nan=False)
    workload = json.loads(text)["workloads"][0]
    assert workload["key"] == "echo-1k"
    assert len(workload["contenders"]["netloop"]["rounds"]) == 2
    assert workload["contenders"]["asyncio"]["vs_best"]["value"] == 1.0
    assert workload["contenders"]["uvloop"]["error"].startswith("uvloop server exited")


def test_workload_selection_and_settings() -> None:
    assert [w.key for w in select_workloads(["echo", "bulk"])] == ["echo-1k", "echo-16k", "bulk"]
    assert [w.key for w in select_workloads(["http-p16"])] == ["http-p16"]
    assert len(select_workloads(None)) == len(WORKLOADS)
    with pytest.raises(SystemExit):
        select_workloads(["nope"])
    cpu = min(os.sched_getaffinity(0))
    args = parse_args(["--quick", "--rounds", "5", "--server-cpu", str(cpu), "--client-cpu", str(cpu)])
    settings = settings_from(args)
    assert (settings.rounds, settings.duration) == (5, Settings.quick().duration)


def test_tls_workload_selection() -> None:
    tls = ["tls-echo", "tls-http-p1", "tls-http-p16", "tls-resp-p1", "tls-resp-p16", "tls-handshake", "tls-idle"]
    assert [w.key for w in select_workloads(["tls"])] == tls
    assert [w.key for w in select_workloads(["tls-echo", "tls-http-p1"])] == ["tls-echo", "tls-http-p1"]
    assert all(w.tls for w in select_workloads(["tls"]))
    assert not any(w.tls for w in select_workloads(["echo", "http", "resp", "idle", "churn", "bulk"]))
    assert all("aiofastnet" in w.contenders for w in select_workloads(["tls"]))


def test_tls_server_commands() -> None:
    files = TlsFiles(Path("/c/cert.pem"), Path("/c/key.pem"))
    flags = ["--tls-cert", "/c/cert.pem", "--tls-key", "/c/key.pem"]
    assert server_argv("netloop", "echo", 9000, files)[-4:] == flags
    assert server_argv("aiofastnet", "http", 9000, files)[1:] == [
        "-m", "bench.servers.aio", "--loop", "aiofastnet", "--proto", "http", "--host", "127.0.0.1", "--port", "9000",
        *flags,
    ]  # fmt: skip
    redis = server_argv("redis", "resp", 6380, files)
    assert redis[redis.index("--tls-port") + 1] == "6380"
    assert redis[redis.index("--port") + 1] == "0"  # no plaintext listener beside the TLS one
    assert redis[redis.index("--tls-cert-file") + 1] == "/c/cert.pem"
    assert unavailable("asyncio", "http", tls=True) is None


def test_tls_notes_under_the_table() -> None:
    workload = next(w for w in WORKLOADS if w.key == "tls-echo")
    detail = {"client_busy": 0.5, "tls": "TLSv1.3 TLS_AES_256_GCM_SHA384"}
    entries = {
        "netloop": Entry([Sample(1000.0, 5000, CpuTimes(0.01, 0.02), detail)]),
        "aiofastnet": Entry([Sample(900.0, 4500, CpuTimes(0.01, 0.02), detail | {"client_busy": 0.25})]),
    }
    machine = {"cpu_model": "Test CPU", "cpu_count": 2, "kernel": "Linux 6", "python": "CPython 3.11", "command": "x"}
    lines = markdown([Outcome(workload, entries)], Settings(), machine).splitlines()
    assert "Load generator CPU (median share of its one core): netloop 50%, aiofastnet 25%." in lines
    assert "TLS negotiated: TLSv1.3 TLS_AES_256_GCM_SHA384." in lines


def test_round_ratios_to_redis_under_the_table() -> None:
    workload = next(w for w in WORKLOADS if w.key == "respcmd-zadd-p16")
    rounds = [(100.0, 200.0), (150.0, 200.0), (90.0, 100.0)]  # netloop, redis: ratios 0.5, 0.75, 0.9
    entries = {
        "netloop": Entry([Sample(n, 1000, CpuTimes(0.01, 0.0)) for n, _ in rounds]),
        "redis": Entry([Sample(r, 1000, CpuTimes(0.01, 0.0)) for _, r in rounds]),
    }
    machine = {"cpu_model": "Test CPU", "cpu_count": 2, "kernel": "Linux 6", "python": "CPython 3.11", "command": "x"}
    lines = markdown([Outcome(workload, entries)], Settings(), machine).splitlines()
    # the ratio of the medians would be 100 / 200 = 0.50x; the median of the rounds' ratios is 0.75x
    assert "Median of the rounds' ratios to redis-server: netloop 0.75x." in lines
    netloop = next(line for line in lines if line.startswith("| netloop"))
    assert netloop.split(" | ")[1:3] == ["100", "0.50x"]
    assert round_ratios({"netloop": entries["netloop"].samples}, "redis") == {}


def test_server_commands() -> None:
    assert server_argv("asyncio", "resp", 6380)[1:] == [
        "-m", "bench.servers.aio", "--loop", "asyncio", "--proto", "resp", "--host", "127.0.0.1", "--port", "6380"
    ]  # fmt: skip
    assert server_argv("netloop", "http", 8080)[1:] == [
        "-m", "bench.servers.netloop_http", "--host", "127.0.0.1", "--port", "8080", "--loops", "1"
    ]  # fmt: skip
    assert "--appendonly" in server_argv("redis", "resp", 6380)
    with pytest.raises(ValueError):
        server_argv("redis", "echo", 1)
    assert unavailable("redis", "http") == "redis-server does not speak http"
    assert unavailable("asyncio", "echo") is None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler for echo_load")
def test_end_to_end_echo_against_asyncio(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    argv = ["--only", "echo-1k", "--contenders", "asyncio", "--rounds", "1", "--duration", "0.3"]
    argv += ["--server-cpu", str(cpus[0]), "--client-cpu", str(cpus[-1]), "--out", str(tmp_path), "--no-chart"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "latest.json").read_text())
    (workload,) = data["workloads"]
    asyncio = workload["contenders"]["asyncio"]
    assert asyncio["error"] is None
    (sample,) = asyncio["rounds"]
    assert sample["units"] > 100
    assert sample["value"] == pytest.approx(sample["units"] / sample["detail"]["elapsed_s"])
    assert 0 < asyncio["median"]["total"] < 10_000  # µs of server CPU per round-trip
    assert _loadgen.BUILD_DIR.joinpath("echo_load").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("openssl") is None, reason="needs cc and openssl")
def test_end_to_end_tls_against_netloop(tmp_path: Path) -> None:
    try:
        _loadgen.build_echo_load(tls=True)
    except BenchError as error:
        pytest.skip(f"no TLS echo_load here (libssl-dev?): {error}")
    cpus = sorted(os.sched_getaffinity(0))
    argv = ["--only", "tls-echo,tls-handshake,tls-idle", "--contenders", "netloop", "--rounds", "1"]
    argv += ["--duration", "0.3", "--idle-connections", "40", "--server-cpu", str(cpus[0])]
    argv += ["--client-cpu", str(cpus[-1]), "--out", str(tmp_path), "--no-chart"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "latest.json").read_text())
    by_key = {w["key"]: w["contenders"]["netloop"] for w in data["workloads"]}
    assert set(by_key) == {"tls-echo", "tls-handshake", "tls-idle"}
    for key, netloop in by_key.items():
        assert netloop["error"] is None, key
        (sample,) = netloop["rounds"]
        assert sample["detail"]["tls"].startswith("TLSv1."), key
    assert by_key["tls-echo"]["rounds"][0]["units"] > 50
    assert by_key["tls-handshake"]["rounds"][0]["units"] > 5  # each one a new connection and a full handshake
    assert 0 < by_key["tls-handshake"]["rounds"][0]["detail"]["client_busy"] <= 1.5
    assert by_key["tls-idle"]["rounds"][0]["units"] == 40


def test_hotpath_benchmark_runs_the_real_loop(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import hotpath

    hotpath.main(["--rounds", "20"])
    lines = capsys.readouterr().out.splitlines()
    floor = float(lines[1].split(":")[1].split()[0])
    ours = float(lines[2].split(":")[1].split()[0])
    # Both paths did the work (a positive time each) and netloop's has more to do than the bare loop's.
    assert 0 < floor < ours


def test_resp_session_benchmark_times_real_replies() -> None:
    from bench import resp_session
    from resp_server.session import RespSession
    from resp_server.store import KeyValueStore

    session = RespSession(KeyValueStore())
    for request in resp_session.REQUESTS.values():
        reply, close = session.receive(request * 16)
        assert reply and not close and not reply.startswith(b"-")  # each request is one the server answers
        assert resp_session.ns_per_command(session, request, 1, reads=10, repeats=1) > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("wrk") is None, reason="needs cc and wrk")
def test_timeouts_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import timeouts

    cpus = sorted(os.sched_getaffinity(0))
    argv = ["--rounds", "1", "--duration", "0.5", "--idle", "200", "--few", "2"]
    assert timeouts.main([*argv, "--server-cpu", str(cpus[0]), "--client-cpu", str(cpus[-1])]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| echo") or "HTTP" in line]
    assert len(rows) == 2
    for row in rows:
        ratio = float(row.split("|")[6].split()[0])
        assert 0 < ratio < 100  # both variants answered requests and used CPU


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_instructions_benchmark_counts_a_request(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import instructions

    assert instructions.main(["--quick", "--functions", "3"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| netloop |"))
    per_request = float(row.split("|")[2].replace(",", ""))
    # An echo round-trip costs thousands of instructions in user space, not zero and not millions.
    assert 1_000 < per_request < 200_000, out
    # The per-function view: three rows, each a C function (file:function) with its instructions per request.
    functions = re.findall(r"^\| `[\w.-]+:[^`]+` \| [\d,]+ \|$", out, re.MULTILINE)
    assert len(functions) == 3, out


def test_asgi_server_commands() -> None:
    netloop_asgi = server_argv("netloop-asgi", "asgi-bare", 8000)
    assert netloop_asgi[1:5] == ["-m", "netloop.asgi", "bench.asgi_apps:bare", "--host"]
    assert "--no-access-log" in netloop_asgi
    assert server_argv("uvicorn", "asgi-starlette", 8000)[1:4] == ["-m", "uvicorn", "bench.asgi_apps:starlette"]
    granian = server_argv("granian", "asgi-bare_json", 8000)
    assert granian[-1] == "bench.asgi_apps:bare_json"
    assert granian[granian.index("--workers") + 1] == "1"
    assert server_argv("hypercorn", "asgi-bare", 8000)[-1] == "bench.asgi_apps:bare"
    with pytest.raises(ValueError):
        server_argv("uvicorn", "asgi-nothing", 8000)
    assert unavailable("uvicorn", "echo") == "uvicorn serves ASGI apps only"
    assert unavailable("netloop-asgi", "asgi-bare", tls=True) == "no TLS workload for the ASGI servers"
    keys = [w.key for w in WORKLOADS if w.group == "asgi"]
    apps = ("bare", "bare-json", "starlette", "starlette-json")
    assert keys == [f"asgi-{app}-p{depth}" for app in apps for depth in (1, 16)]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
def test_end_to_end_asgi_netloop_against_uvicorn(tmp_path: Path) -> None:
    for module in ("uvicorn", "uvloop", "httptools"):  # uvicorn runs on uvloop and httptools here
        pytest.importorskip(module)
    cpus = sorted(os.sched_getaffinity(0))
    argv = ["--only", "asgi-bare-json-p16", "--contenders", "netloop-asgi,uvicorn", "--rounds", "1", "--duration", "1"]
    argv += ["--connections", "8", "--server-cpu", str(cpus[0]), "--client-cpu", str(cpus[-1])]
    assert main([*argv, "--out", str(tmp_path), "--no-chart"]) == 0
    data = json.loads((tmp_path / "latest.json").read_text())
    (workload,) = data["workloads"]
    for name in ("netloop-asgi", "uvicorn"):
        entry = workload["contenders"][name]
        assert entry["error"] is None, name
        (sample,) = entry["rounds"]
        assert sample["units"] > 100, name  # wrk's requests, every one a 2xx (a non-2xx fails the sample)
        assert 0 < entry["median"]["total"] < 10_000, name  # µs of server CPU per request


def test_asgi_memory_benchmark_counts_idle_connections(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("httptools")
    from bench import asgi_memory

    assert asgi_memory.main(["--servers", "netloop-asgi", "--connections", "200", "--warm", "20"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("netloop-asgi")]
    per_connection = float(line.split()[-2])
    assert 0 < per_connection < 64  # KiB: an idle kept-alive connection holds some memory, not a buffer's worth
