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
    others go on.
    """
    ctx = Context(settings)
    build_error = None
    if any(w.tool == "echo_load" for w in workloads):
        try:
            ctx.echo_load = build_echo_load()
        except BenchError as error:
            build_error = str(error)
    with tempfile.TemporaryDirectory(prefix="netloop-bench-") as logs:
        return [_run_workload(ctx, w, contenders, Path(logs), log, build_error) for w in workloads]


def _run_workload(
    ctx: Context, workload: Workload, contenders: Sequence[str], logs: Path, log: Log, build_error: str | None
) -> Outcome:
    outcome = Outcome(workload)
    if workload.tool == "echo_load":
        outcome.skipped = build_error
    elif shutil.which(workload.tool) is None:
        outcome.skipped = f"{workload.tool} is not installed"
    if outcome.skipped:
        log(f"[{workload.key}] skipped: {outcome.skipped}")
        return outcome
    for name in workload.contenders:
        if name in contenders:
            reason = unavailable(name, workload.proto)
            outcome.entries[name] = Entry(error=f"unavailable: {reason}" if reason else None)
            if reason:
                log(f"[{workload.key}] {name} unavailable: {reason}")
    rounds = ctx.settings.rounds
    for round_no in range(1, rounds + 1):
        for name, entry in outcome.entries.items():
            if entry.error:
                continue
            try:
                with Server(name, workload.proto, ctx.settings.server_cpu, logs) as server:
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
