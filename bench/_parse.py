"""Parsers for what the load generators print: wrk's report, redis-benchmark's CSV or quiet lines, echo_load.

Each parser takes the text and returns numbers, raising ValueError when the text is not what it expects.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class WrkReport:
    """The totals of one wrk run."""

    requests: int
    duration_s: float
    requests_per_s: float
    socket_errors: int
    non_2xx: int


def parse_wrk(text: str) -> WrkReport:
    """The totals in wrk's report (``N requests in 5.00s``, ``Requests/sec:``, error lines)."""
    totals = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b", text, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.MULTILINE)
    if not totals or not rate:
        raise ValueError(f"not a wrk report: {text[-300:]!r}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkReport(
        requests=int(totals[1]),
        duration_s=float(totals[2]) * _TIME_UNITS[totals[3]],
        requests_per_s=float(rate[1]),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
    )


def parse_redis_benchmark(text: str) -> dict[str, float]:
    """Requests per second by test name, from redis-benchmark's ``--csv`` or ``-q`` output, in run order."""
    rates: dict[str, float] = {}
    if text.lstrip().startswith('"'):
        for row in csv.reader(text.splitlines()):
            # the header row (redis-benchmark 7+) names its columns; data rows start with the test's name
            if len(row) >= 2 and row[0] != "test":
                rates[row[0]] = float(row[1])
    else:
        # -q rewrites a progress line with '\r' before printing the final one
        for line in re.split(r"[\r\n]+", text):
            found = re.match(r"\s*(.+?): ([\d.]+) requests per second", line)
            if found:
                rates[found[1]] = float(found[2])
    if not rates:
        raise ValueError(f"no results in redis-benchmark output: {text[-300:]!r}")
    return rates


@dataclass(frozen=True)
class LoadResult:
    """The measured phase of one echo_load run."""

    units: int
    elapsed_s: float
    bytes: int


def parse_ready(line: str) -> int:
    """The connection count in echo_load's ``ready N`` line."""
    words = line.split()
    if len(words) != 2 or words[0] != "ready":
        raise ValueError(f"expected 'ready N' from echo_load, got {line!r}")
    return int(words[1])


def parse_result(line: str) -> LoadResult:
    """The numbers in echo_load's ``result UNITS ELAPSED_NS BYTES`` line."""
    words = line.split()
    if len(words) != 4 or words[0] != "result":
        raise ValueError(f"expected 'result UNITS ELAPSED_NS BYTES' from echo_load, got {line!r}")
    return LoadResult(int(words[1]), int(words[2]) / 1e9, int(words[3]))
