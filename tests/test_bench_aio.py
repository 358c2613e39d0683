"""``python -m bench``'s asyncio workloads: their contenders' servers, the lines under their tables, one real run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bench.__main__ import main, select_workloads
from bench._aio import AIO_CONTENDERS, aio_notes
from bench._proc import CpuTimes
from bench._report import markdown
from bench._runner import Entry, Outcome
from bench._servers import CONTENDERS, server_argv, server_env, unavailable
from bench._stats import Sample
from bench._workloads import WORKLOADS, Settings

MACHINE = {"cpu_model": "Test CPU", "cpu_count": 2, "kernel": "Linux 6", "python": "CPython 3.11", "command": "x"}


def test_aio_workloads_and_their_contenders() -> None:
    echo, http = select_workloads(["aio"])
    assert (echo.key, echo.tool, echo.proto) == ("aio-echo-1k", "echo_load", "echo")
    assert echo.contenders == (
        "aio-protocol-netloop",
        "aio-protocol-uvloop",
        "aio-streams-netloop",
        "aio-streams-uvloop",
    )
    assert (http.key, http.tool, http.proto) == ("aio-http-p1", "wrk", "http")
    assert http.contenders == (
        "aio-protocol-netloop",
        "aio-protocol-uvloop",
        "aio-async-handler",
        "aio-callback-handler",
    )
    assert set(AIO_CONTENDERS) <= set(CONTENDERS)
    assert echo in select_workloads(None) and http in select_workloads(None)  # a plain run has them, as ASGI's
    assert not any(c in AIO_CONTENDERS for w in WORKLOADS if w.group != "aio" for c in w.contenders)


def test_aio_server_commands() -> None:
    assert server_argv("aio-streams-uvloop", "echo", 9000)[1:] == [
        "-m", "bench.servers.aio_styles", "--style", "streams-uvloop", "--proto", "echo",
        "--host", "127.0.0.1", "--port", "9000",
    ]  # fmt: skip
    handler = server_argv("aio-async-handler", "http", 9000)
    assert handler[handler.index("--style") + 1 :][:3] == ["async-handler", "--proto", "http"]
    assert unavailable("aio-protocol-netloop", "http") is None
    assert unavailable("aio-streams-netloop", "http") == "aio-streams-netloop serves echo only"
    assert unavailable("aio-callback-handler", "echo") == "aio-callback-handler serves http only"
    assert unavailable("aio-protocol-netloop", "resp") == "aio-protocol-netloop serves echo and http only"
    assert unavailable("aio-protocol-netloop", "echo", tls=True) == "no TLS workload for the asyncio styles"
    # the netloop-side styles run on the compiled core whatever the caller's shell says
    assert server_env("aio-async-handler")["NETLOOP_PURE"] == "0"


def _samples(rounds: list[tuple[float, float]]) -> list[Sample]:
    """Samples of 1,000 units each from (value, server CPU µs per unit) pairs."""
    return [Sample(value, 1000, CpuTimes(us * 1000 / 1e6, 0.0)) for value, us in rounds]


def test_aio_notes_are_medians_of_paired_rounds() -> None:
    samples = {
        # ratios to uvloop per round: rate 1.2, 0.9, 1.5 (median 1.2); CPU 0.5, 1.0, 0.8 (median 0.8)
        "aio-protocol-netloop": _samples([(120.0, 5.0), (90.0, 10.0), (150.0, 8.0)]),
        "aio-protocol-uvloop": _samples([(100.0, 10.0), (100.0, 10.0), (100.0, 10.0)]),
        # the async handler's premium per round: 20, 30, 25 µs (median 25); rate ratios 0.4, 0.5, 0.3
        "aio-async-handler": _samples([(40.0, 30.0), (50.0, 41.0), (30.0, 37.0)]),
        "aio-callback-handler": _samples([(100.0, 10.0), (100.0, 11.0), (100.0, 12.0)]),
    }
    assert aio_notes(samples, "request") == [
        "Protocol on netloop's loop against uvloop (median of the rounds' ratios): 1.20x the rate, 0.80x the server "
        "CPU per request.",
        "`async def on_traffic` over a plain `def on_traffic` (median of the rounds' differences): +25.00 µs of server "
        "CPU per request; 0.40x the rate.",
    ]
    # a contender that failed after one round: only that round pairs up; a missing partner gives no line
    short = {"aio-streams-netloop": _samples([(50.0, 4.0)]), "aio-streams-uvloop": _samples([(40.0, 5.0)] * 3)}
    assert aio_notes(short, "round-trip") == [
        "streams on netloop's loop against uvloop (median of the rounds' ratios): 1.25x the rate, 0.80x the server "
        "CPU per round-trip."
    ]
    assert aio_notes({"aio-protocol-netloop": samples["aio-protocol-netloop"]}, "request") == []


def test_aio_notes_under_the_table() -> None:
    workload = next(w for w in WORKLOADS if w.key == "aio-http-p1")
    entries = {
        "aio-async-handler": Entry(_samples([(40.0, 30.0)])),
        "aio-callback-handler": Entry(_samples([(100.0, 10.0)])),
        "aio-protocol-uvloop": Entry(error="uvloop server exited with status 1"),
    }
    lines = markdown([Outcome(workload, entries)], Settings(), MACHINE).splitlines()
    premium = next(line for line in lines if line.startswith("`async def on_traffic`"))
    assert "+20.00 µs of server CPU per request; 0.40x the rate" in premium
    assert not any("against uvloop" in line for line in lines)  # uvloop failed: no ratio to it


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("wrk") is None, reason="needs cc and wrk")
def test_end_to_end_aio_workloads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    contenders = "aio-protocol-netloop,aio-streams-netloop,aio-async-handler,aio-callback-handler"
    argv = ["--only", "aio", "--contenders", contenders, "--rounds", "1", "--duration", "0.3", "--connections", "8"]
    argv += ["--server-cpu", str(cpus[0]), "--client-cpu", str(cpus[-1]), "--out", str(tmp_path), "--no-chart"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "latest.json").read_text())
    ran = {(w["key"], name): entry for w in data["workloads"] for name, entry in w["contenders"].items()}
    assert set(ran) == {
        ("aio-echo-1k", "aio-protocol-netloop"),
        ("aio-echo-1k", "aio-streams-netloop"),
        ("aio-http-p1", "aio-protocol-netloop"),
        ("aio-http-p1", "aio-async-handler"),
        ("aio-http-p1", "aio-callback-handler"),
    }
    for (key, name), entry in ran.items():
        assert entry["error"] is None, (key, name)
        (sample,) = entry["rounds"]
        assert sample["units"] > 50, (key, name)  # echoes checked by echo_load, 2xx answers by wrk
        assert 0 < entry["median"]["total"] < 10_000, (key, name)  # µs of server CPU per unit
    out = capsys.readouterr().out
    assert "`async def on_traffic` over a plain `def on_traffic`" in out
