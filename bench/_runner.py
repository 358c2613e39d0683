"""Runs the chosen workloads: every contender once per round, rounds interleaved, failures recorded."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench._errors import BenchError
from bench._loadgen import build_echo_load
from bench._servers import Server, unavailable
from bench._stats import Sample
from bench._tls import make_certificate, redis_benchmark_lacks_tls
from bench._workloads import Context, Settings, Workload

Log = Callable[[str], None]


@dataclass
class Entry:
    """One contender's samples on one workload, and the error that stopped it, if one did."""

    samples: list[Sample] = field(default_factory=list)
    error: str | None = None


@dataclass
class Outcome:
    """One workload's entries by contender (in the workload's order), or why it was skipped as a whole."""

    workload: Workload
    entries: dict[str, Entry] = field(default_factory=dict)
    skipped: str | None = None


def run(workloads: Sequence[Workload], contenders: Sequence[str], settings: Settings, log: Log) -> list[Outcome]:
    """Runs ``workloads`` for the ``contenders`` among each one's own, and returns what came out.

    Within a workload, round r runs every contender once (A, B, C), then round r+1 does the same; each
    measurement gets a freshly started server. A contender that fails stops for that workload; the
    others go on. TLS workloads share one throw-away certificate, made in the run's temporary directory.
    """
    ctx = Context(settings)
    missing: dict[str, str] = {}  # why a workload's tool, or TLS, cannot be had
    tools = {w.tool for w in workloads}
    try:
        if "echo_load" in tools:
            ctx.echo_load = build_echo_load()
    except BenchError as error:
        missing["echo_load"] = str(error)
    try:
        if "echo_load_tls" in tools:
            ctx.echo_load_tls = build_echo_load(tls=True)
    except BenchError as error:
        missing["echo_load_tls"] = str(error)
    with tempfile.TemporaryDirectory(prefix="netloop-bench-") as logs:
        if any(w.tls for w in workloads):
            try:
                ctx.tls = make_certificate(Path(logs) / "tls")
            except BenchError as error:
                missing["tls"] = str(error)
        return [_run_workload(ctx, w, contenders, Path(logs), log, missing) for w in workloads]


def _skip_reason(workload: Workload, missing: dict[str, str]) -> str | None:
    """Why ``workload`` cannot run on this machine at all, or None when it can."""
    if workload.tool in missing:
        return missing[workload.tool]
    if workload.tls and "tls" in missing:
        return missing["tls"]
    if not workload.tool.startswith("echo_load") and shutil.which(workload.tool) is None:
        return f"{workload.tool} is not installed"
    if workload.tls and workload.tool == "redis-benchmark":
        return redis_benchmark_lacks_tls()
    return None


def _run_workload(
    ctx: Context, workload: Workload, contenders: Sequence[str], logs: Path, log: Log, missing: dict[str, str]
) -> Outcome:
    outcome = Outcome(workload)
    outcome.skipped = _skip_reason(workload, missing)
    if outcome.skipped:
        log(f"[{workload.key}] skipped: {outcome.skipped}")
        return outcome
    for name in workload.contenders:
        if name in contenders:
            reason = unavailable(name, workload.proto, workload.tls)
            outcome.entries[name] = Entry(error=f"unavailable: {reason}" if reason else None)
            if reason:
                log(f"[{workload.key}] {name} unavailable: {reason}")
    rounds = ctx.settings.rounds
    for round_no in range(1, rounds + 1):
        for name, entry in outcome.entries.items():
            if entry.error:
                continue
            try:
                tls = ctx.tls if workload.tls else None
                with Server(name, workload.proto, ctx.settings.server_cpu, logs, tls) as server:
                    sample = workload.measure(ctx, server)
            except BenchError as error:
                entry.error = str(error)
                log(f"[{workload.key}] round {round_no}/{rounds} {name} failed: {error}")
                continue
            entry.samples.append(sample)
            cpu = sample.cpu_us_per_unit()
            spent = f", {cpu['total']:.2f} µs/{workload.unit}" if cpu else ""
            log(f"[{workload.key}] round {round_no}/{rounds} {name}: {sample.value:,.1f} {workload.metric}{spent}")
    return outcome
