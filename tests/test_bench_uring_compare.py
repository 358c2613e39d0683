"""bench.uring.compare: the rounds' order, per-round ratios, the table, and the launcher and loop check on real
processes (the time-based run itself is for a quiet machine: docs/performance.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench._errors import BenchError
from bench._proc import CpuTimes
from bench._servers import ROOT
from bench._stats import Sample
from bench._workloads import Settings
from bench.uring.build import built
from bench.uring.compare import (
    CHOICES,
    LAUNCH,
    VARIANTS,
    Runs,
    check_loop,
    markdown,
    order,
    round_ratio,
    summary,
    variant_server,
)


def sample(rate: float, requests: float, user_s: float, system_s: float) -> Sample:
    return Sample(rate, requests, CpuTimes(user_s, system_s))


def test_each_round_runs_every_variant_and_each_goes_first_once_in_three() -> None:
    rounds = [order(r) for r in range(1, 7)]
    assert all(sorted(v.name for v in o) == sorted(v.name for v in VARIANTS) for o in rounds)
    assert [o[0].name for o in rounds[:3]] == ["epoll", "io_uring", "io_uring-send"]
    assert rounds[3] == rounds[0]


def test_ratio_is_the_median_of_same_round_ratios_over_rounds_both_ran() -> None:
    # CPU µs per request by round: epoll 10, 20, 40; io_uring 9, 30 and a third round epoll did not pair
    epoll = {1: sample(1, 1e6, 6, 4), 2: sample(1, 1e6, 10, 10), 4: sample(1, 1e6, 20, 20)}
    uring = {1: sample(2, 1e6, 4, 5), 2: sample(2, 1e6, 10, 20), 3: sample(2, 1e6, 1, 1)}
    assert round_ratio(uring, epoll, "total") == pytest.approx((0.9 + 1.5) / 2)
    assert round_ratio(uring, epoll, "value") == pytest.approx(2.0)
    assert round_ratio(uring, {}, "total") is None


def test_table_has_a_row_per_variant_with_ratios_and_failures() -> None:
    runs = {
        "epoll": Runs({1: sample(100, 1e6, 2, 2)}),
        "io_uring": Runs({1: sample(120, 1e6, 1, 2)}),
        "io_uring-send": Runs(error="io_uring-send: the server had no io_uring ring; its output:\n..."),
    }
    settings = Settings(rounds=1, duration=2)
    record = summary(CHOICES["echo-1k"], runs, settings)
    assert record["variants"]["io_uring"]["ratio_to_epoll"]["total"] == pytest.approx(0.75)
    rows = markdown({"echo-1k": record}, settings).splitlines()
    assert "| echo-1k (per round-trip) | epoll | 100 round-trips/s | 2.00 | 2.00 | 4.00 | 1.00x | 1.00x |" in rows
    assert "| echo-1k (per round-trip) | io_uring | 120 round-trips/s | 1.00 | 2.00 | 3.00 | 0.75x | 1.20x |" in rows
    assert any(row.startswith("| echo-1k (per round-trip) | io_uring-send | failed: ") for row in rows)


def test_servers_run_the_variants_module_through_the_launcher(tmp_path: Path) -> None:
    settings = Settings()
    epoll, uring, send = (variant_server(v, tmp_path, CHOICES["nothing-p1"], settings, tmp_path) for v in VARIANTS)
    assert epoll.argv[1:4] == [str(LAUNCH), str(ROOT), "0"]
    assert (uring.argv[2:4], send.argv[2:4]) == ([str(tmp_path), "0"], [str(tmp_path), "1"])
    assert send.argv[4:8] == ["bench.servers.responder", "--style", "nothing", "--loop"]
    echo = variant_server(VARIANTS[1], tmp_path, CHOICES["echo-1k"], settings, tmp_path)
    assert echo.argv[4:] == ["examples.echo", "--host", "127.0.0.1", "--port", str(echo.port), "--loops", "1"]


def test_launcher_runs_the_other_trees_module_with_the_send_mode(tmp_path: Path) -> None:
    (tmp_path / "netloop").mkdir()
    (tmp_path / "netloop" / "__init__.py").write_text("")
    (tmp_path / "probe.py").write_text(
        "import os, sys, netloop\n"
        "print(netloop.__file__, os.getcwd(), os.environ['NETLOOP_URING_SEND'], *sys.argv, sep='\\n')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), NETLOOP_URING_SEND="0")
    done = subprocess.run(
        [sys.executable, str(LAUNCH), str(tmp_path), "1", "probe", "--flag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    imported, cwd, send, argv0, flag = done.stdout.splitlines()
    assert (imported, cwd, send, flag) == (str(tmp_path / "netloop" / "__init__.py"), str(tmp_path), "1", "--flag")
    assert argv0 == str(tmp_path / "probe.py")


@pytest.mark.skipif(not built(ROOT), reason="the compiled core is not built")
def test_loop_check_sees_the_trees_core_and_no_ring_on_epoll(tmp_path: Path) -> None:
    epoll, uring = VARIANTS[:2]
    with variant_server(
        epoll, tmp_path, CHOICES["echo-1k"], Settings(server_cpu=min(os.sched_getaffinity(0))), tmp_path
    ) as server:
        check_loop(server, epoll, tmp_path)
        with pytest.raises(BenchError, match="io_uring: the server had no io_uring ring"):
            check_loop(server, uring, ROOT)  # the shipped tree as the experiment's: epoll serves
        with pytest.raises(BenchError, match=f"should come from {tmp_path / 'netloop'}, came from: {ROOT}"):
            check_loop(server, uring, tmp_path)
