"""The run's report: a markdown table per workload, the JSON record of every round, and a PNG chart."""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import os
import platform
import shlex
import ssl
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench._runner import Outcome
from bench._stats import METRICS, Sample, ratios_by_metric, round_ratios, summarise
from bench._workloads import Settings

_TOOL_VERSIONS = {
    "wrk": ["wrk", "-v"],
    "redis-server": ["redis-server", "--version"],
    "redis-benchmark": ["redis-benchmark", "--version"],
    "cc": ["cc", "--version"],
    "openssl": ["openssl", "version"],
}


def _first_line(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(argv: Sequence[str]) -> dict[str, Any]:
    """What the numbers were measured on and with: CPU, kernel, Python, tool versions, the command line."""
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
    except OSError:
        load = []
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "netloop_commit": _commit(),
        "uvloop": _package_version("uvloop"),
        "aiofastnet": _package_version("aiofastnet"),
        "python_ssl": ssl.OPENSSL_VERSION,
        "tools": {name: _first_line(cmd) for name, cmd in _TOOL_VERSIONS.items()},
        "load_average_at_start": load,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench", *argv]),
    }


def medians(outcome: Outcome) -> dict[str, dict[str, float]]:
    """Each contender's medians on the workload, for contenders that completed every round."""
    return {name: summarise(e.samples) for name, e in outcome.entries.items() if e.samples and not e.error}


def _number(x: float) -> str:
    if not math.isfinite(x):
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def _ratio(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.2f}x"


def _section(outcome: Outcome, settings: Settings) -> list[str]:
    w = outcome.workload
    lines = [f"## {w.key}: {w.describe(settings)}", ""]
    if outcome.skipped:
        return [*lines, f"Skipped: {outcome.skipped}", ""]
    if not outcome.entries:
        return [*lines, "No contender selected.", ""]
    table = medians(outcome)
    ratios = ratios_by_metric(table, w.higher_is_better)
    with_cpu = any("total" in m for m in table.values())
    headers = [w.metric] + ([f"{part} µs/{w.unit}" for part in ("user", "sys", "total")] if with_cpu else [])
    lines.append("| contender | " + " | ".join(f"{h} | vs best" for h in headers) + " |")
    lines.append("|---|" + "---:|---:|" * len(headers))
    metrics = METRICS if with_cpu else METRICS[:1]
    for name, entry in outcome.entries.items():
        if name not in table:
            error = (entry.error or "no samples").splitlines()[0].replace("|", "\\|")
            lines.append(f"| {name} | failed: {error} |" + " |" * (2 * len(headers) - 1))
            continue
        cells = []
        for metric in metrics:
            value = table[name].get(metric)
            cells += ["—", "—"] if value is None else [_number(value), _ratio(ratios[metric].get(name))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines + _notes(outcome)


def _notes(outcome: Outcome) -> list[str]:
    """Lines under a table: how busy the load generator was, the workload's own comparisons, and what TLS the
    servers negotiated."""
    done = {name: e.samples for name, e in outcome.entries.items() if e.samples and not e.error}
    notes = []
    busy = {
        name: statistics.median(float(s.detail["client_busy"]) for s in samples)
        for name, samples in done.items()
        if all("client_busy" in s.detail for s in samples)
    }
    if busy:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in busy.items())
        notes.append(f"Load generator CPU (median share of its one core): {shares}.")
    against_redis = round_ratios(done, "redis")
    if against_redis:
        shares = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in against_redis.items())
        notes.append(f"Median of the rounds' ratios to redis-server: {shares}.")
    if outcome.workload.notes:
        notes += outcome.workload.notes(done, outcome.workload.unit)
    negotiated = {str(s.detail["tls"]) for samples in done.values() for s in samples if "tls" in s.detail}
    if negotiated:
        notes.append(f"TLS negotiated: {', '.join(sorted(negotiated))}.")
    return [*notes, ""] if notes else []


def markdown(outcomes: Sequence[Outcome], settings: Settings, machine: Mapping[str, Any]) -> str:
    """The report as markdown: how it was measured, then one table per workload."""
    lines = [
        "# netloop benchmark",
        "",
        f"- machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs, {machine['kernel']}, {machine['python']}",
        f"- servers pinned to CPU {settings.server_cpu}, load generators to CPU {settings.client_cpu}",
        f"- median of {settings.rounds} round{'s' * (settings.rounds != 1)} of {settings.duration:g} s;"
        " contenders interleaved in each round",
        "- CPU is the server process's, per unit of work; \"vs best\" divides by the best contender's number",
        f"- command: `{machine['command']}`",
        "",
    ]
    for outcome in outcomes:
        lines += _section(outcome, settings)
    return "\n".join(lines)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _sample_record(sample: Sample) -> dict[str, Any]:
    record: dict[str, Any] = {"value": sample.value, "units": sample.units}
    if sample.cpu is not None:
        record |= {"user_s": sample.cpu.user, "system_s": sample.cpu.system}
    return record | {"us_per_unit": sample.cpu_us_per_unit(), "detail": dict(sample.detail)}


def record(outcomes: Sequence[Outcome], settings: Settings, machine: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the run measured, as JSON-ready data: machine, settings, every round, medians, ratios."""
    workloads = []
    for outcome in outcomes:
        w = outcome.workload
        table = medians(outcome)
        ratios = ratios_by_metric(table, w.higher_is_better)
        contenders = {
            name: {
                "error": entry.error,
                "rounds": [_sample_record(s) for s in entry.samples],
                "median": table.get(name, {}),
                "vs_best": {m: _finite(r[name]) for m, r in ratios.items() if name in r},
            }
            for name, entry in outcome.entries.items()
        }
        workloads.append(
            {
                "key": w.key,
                "title": w.describe(settings),
                "metric": w.metric,
                "unit": w.unit,
                "higher_is_better": w.higher_is_better,
                "skipped": outcome.skipped,
                "contenders": contenders,
            }
        )
    return {"machine": dict(machine), "settings": asdict(settings), "workloads": workloads}


def chart(outcomes: Sequence[Outcome], path: Path) -> str:
    """Draws each workload's medians as bars into a PNG at ``path``; says what it did (or why it did not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import EngFormatter
    except ImportError:
        return "matplotlib is not installed: no chart"
    drawn = [(o, medians(o)) for o in outcomes]
    drawn = [(o, m) for o, m in drawn if m]
    if not drawn:
        return "nothing measured: no chart"
    columns = min(3, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.2 * rows), squeeze=False)
    for ax, (outcome, table) in zip(axes.flat, drawn, strict=False):
        w = outcome.workload
        names = list(table)
        values = [table[n]["value"] for n in names]
        bars = ax.barh(names, values, color=["#d62728" if n == "netloop" else "#7f7f7f" for n in names])
        labels = [
            f"{_number(table[n]['value'])}" + (f"  ({_number(table[n]['total'])} µs)" if "total" in table[n] else "")
            for n in names
        ]
        ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
        ax.set_title(f"{w.key} ({w.metric}{', lower is better' if not w.higher_is_better else ''})", fontsize=9)
        ax.invert_yaxis()
        ax.margins(x=0.45)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    for ax in axes.flat[len(drawn) :]:
        ax.set_visible(False)
    figure.suptitle("netloop benchmark: medians (server CPU µs per unit in brackets)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"chart written to {path.name}"
