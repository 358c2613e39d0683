"""Server CPU per request, epoll against the io_uring experiment, in interleaved rounds (time-based: a quiet machine).

    python -m bench.uring.compare                        # 5 rounds of 5 s: echo-1k, http-p1, http-p16, nothing-p1
    python -m bench.uring.compare --rounds 1 --duration 1 --only echo-1k --tree /tmp/uring

Three variants of the compiled core serve each workload: ``epoll`` (this tree as shipped), ``io_uring`` (the
experiment: receives through the ring, sends by ``send(2)``) and ``io_uring-send`` (the same tree with
``NETLOOP_URING_SEND=1``: sends as SQEs). Every round runs each workload once per variant, the variants' order
rotated from round to round, each on a freshly started server pinned to ``--server-cpu`` with its load generator on
``--client-cpu``: ``python -m bench``'s servers, load generators and measurement (``nothing-p1`` is wrk, no
pipelining, against ``bench.servers.responder --style nothing``). After each measurement the server is checked to
run the variant's loop: the compiled core loaded from the variant's tree, an io_uring ring open or not.

Reported per workload and variant: the medians of requests/s and of server CPU µs per request (user, system,
total), and for the io_uring variants the median over rounds of their figure divided by epoll's in the same round.
The experiment's tree is built in a temporary folder unless ``--tree`` names one (built there if it has no module).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

from bench.__main__ import RESULTS_DIR, settings_from
from bench._errors import BenchError
from bench._loadgen import build_echo_load
from bench._report import _number, _ratio, machine_info
from bench._servers import ROOT, Server
from bench._stats import METRICS, Sample, summarise
from bench._workloads import WORKLOADS, Context, Settings, Workload, http
from bench.instructions import RESPONDERS, responder_argv
from bench.uring.build import built, make

LAUNCH = Path(__file__).resolve().with_name("launch.py")
RING_LINK = "anon_inode:[io_uring]"
"""What /proc/PID/fd/N links to for an io_uring instance."""


@dataclass(frozen=True)
class Variant:
    """One way the compiled core serves: from the experiment's tree or this one, sends as SQEs or not."""

    name: str
    uring: bool
    send: bool


VARIANTS = (Variant("epoll", False, False), Variant("io_uring", True, False), Variant("io_uring-send", True, True))
BASE = VARIANTS[0]

RESPONDER = Workload(
    "nothing-p1",
    "the responder (`next()` and one fixed write) under wrk, {connections} connections, no pipelining",
    "requests/s",
    "request",
    "nothing",
    ("netloop",),
    "wrk",
    partial(http, depth=1),
)
CHOICES = {w.key: w for w in (*WORKLOADS, RESPONDER) if "netloop" in w.contenders and not w.tls}
"""The workloads a variant can serve: ``python -m bench``'s plaintext netloop ones, and the responder."""
DEFAULT = ("echo-1k", "http-p1", "http-p16", "nothing-p1")


@dataclass
class Runs:
    """One variant's samples on one workload by round (from 1), and the error that stopped it, if one did."""

    samples: dict[int, Sample] = field(default_factory=dict)
    error: str | None = None


Results = dict[str, dict[str, Runs]]
"""Workload key to variant name to its runs."""


def order(round_no: int) -> tuple[Variant, ...]:
    """The variants in round ``round_no``'s order (from 1): rotated by one each round, so none is always first."""
    shift = (round_no - 1) % len(VARIANTS)
    return VARIANTS[shift:] + VARIANTS[:shift]


def figures(sample: Sample) -> dict[str, float]:
    """The sample's rate (``value``) and server CPU µs per request (``user``, ``system``, ``total``)."""
    return {"value": sample.value, **sample.cpu_us_per_unit()}


def round_ratio(own: Mapping[int, Sample], base: Mapping[int, Sample], metric: str) -> float | None:
    """The median, over the rounds both ran, of ``own``'s ``metric`` divided by ``base``'s in the same round."""
    pairs = [(figures(own[r]), figures(base[r])) for r in sorted(own.keys() & base.keys())]
    ratios = [o[metric] / b[metric] for o, b in pairs if metric in o and b.get(metric, 0.0) > 0]
    return statistics.median(ratios) if ratios else None


def variant_server(variant: Variant, tree: Path, workload: Workload, settings: Settings, logs: Path) -> Server:
    """The server ``python -m bench`` starts for ``workload``, run by launch.py from the variant's tree."""
    responder = workload.proto in RESPONDERS
    server = Server("netloop", "http" if responder else workload.proto, settings.server_cpu, logs)
    command = responder_argv("netloop", workload.proto, server.port) if responder else server.argv
    if command[1] != "-m":
        raise ValueError(f"not a python -m command: {command}")
    source = tree if variant.uring else ROOT
    server.argv = [sys.executable, str(LAUNCH), str(source), "1" if variant.send else "0", *command[2:]]
    server.log_path = logs / f"{variant.name}-{workload.key}-{server.port}.log"
    return server


def check_loop(server: Server, variant: Variant, tree: Path) -> None:
    """Raises BenchError unless ``server`` runs the compiled core from the variant's tree, with a ring iff io_uring."""
    source = (tree if variant.uring else ROOT) / "netloop"
    with open(f"/proc/{server.pid}/maps") as maps:
        # The core's own module, netloop/_speedups*.so (not netloop.aio's or resp_server's of the same name).
        paths = {Path(line.split()[-1]) for line in maps if "/_speedups" in line}
        loaded = {path.parent for path in paths if path.parent.name == "netloop"}
    if loaded != {source}:
        found = ", ".join(map(str, loaded)) or "none"
        raise BenchError(f"{variant.name}: the compiled core should come from {source}, came from: {found}")
    links = []
    for fd in os.listdir(f"/proc/{server.pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{server.pid}/fd/{fd}"))
        except FileNotFoundError:
            pass  # closed meanwhile
    if (RING_LINK in links) != variant.uring:
        state = "an io_uring ring open" if RING_LINK in links else "no io_uring ring"
        raise BenchError(f"{variant.name}: the server had {state}; its output:\n{server.log_tail()}")


def measure(ctx: Context, workload: Workload, variant: Variant, tree: Path, logs: Path) -> Sample:
    """One measurement of ``workload`` on a fresh server of ``variant``."""
    with variant_server(variant, tree, workload, ctx.settings, logs) as server:
        sample = workload.measure(ctx, server)
        check_loop(server, variant, tree)
    return sample


def run(ctx: Context, workloads: Sequence[Workload], tree: Path, log: Callable[[str], None]) -> Results:
    """Every round: each workload, each variant in the round's order. A variant that fails stops on that workload."""
    results: Results = {w.key: {v.name: Runs() for v in VARIANTS} for w in workloads}
    rounds = ctx.settings.rounds
    with tempfile.TemporaryDirectory(prefix="netloop-uring-") as logs:
        for round_no in range(1, rounds + 1):
            for workload in workloads:
                for variant in order(round_no):
                    runs = results[workload.key][variant.name]
                    if runs.error:
                        continue
                    where = f"[{workload.key}] round {round_no}/{rounds} {variant.name}"
                    try:
                        sample = measure(ctx, workload, variant, tree, Path(logs))
                    except BenchError as error:
                        runs.error = str(error)
                        log(f"{where} failed: {error}")
                        continue
                    runs.samples[round_no] = sample
                    cpu = sample.cpu_us_per_unit()
                    spent = f", {cpu['total']:.2f} µs/{workload.unit}" if cpu else ""
                    log(f"{where}: {sample.value:,.1f} {workload.metric}{spent}")
    return results


def summary(workload: Workload, runs: Mapping[str, Runs], settings: Settings) -> dict[str, Any]:
    """The workload's record: per variant its error, every round's figures, their medians and, for the io_uring
    variants, the median of per-round ratios to epoll (``value``: rate; ``user``, ``system``, ``total``: CPU)."""
    base = runs[BASE.name].samples
    variants: dict[str, Any] = {}
    for name, own in runs.items():
        rounds = {r: {**figures(s), "units": s.units, "detail": dict(s.detail)} for r, s in own.samples.items()}
        variants[name] = {"error": own.error, "rounds": rounds, "median": summarise(list(own.samples.values()))}
        if name != BASE.name:
            variants[name]["ratio_to_epoll"] = {m: round_ratio(own.samples, base, m) for m in METRICS}
    title = workload.describe(settings)
    return {"title": title, "metric": workload.metric, "unit": workload.unit, "variants": variants}


def markdown(records: Mapping[str, Mapping[str, Any]], settings: Settings) -> str:
    """One table: a row per workload and variant, medians over the rounds and per-round ratios to epoll."""
    lines = [
        f"Server CPU per request, epoll against io_uring: {settings.rounds} round(s) of {settings.duration:g} s, "
        "medians; ratios are medians of per-round ratios to epoll.",
        "",
        "| workload | variant | rate | user µs | system µs | total µs | total / epoll | rate / epoll |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, record in records.items():
        for name, entry in record["variants"].items():
            where = f"{key} (per {record['unit']})"
            if entry["error"]:
                lines.append(f"| {where} | {name} | failed: {entry['error'].splitlines()[0]} | | | | | |")
                continue
            median = entry["median"]
            cpu = [_number(median[m]) if m in median else "—" for m in ("user", "system", "total")]
            ratio = entry.get("ratio_to_epoll", {"total": 1.0, "value": 1.0})
            rate = f"{_number(median['value'])} {record['metric']}" if median else "—"
            lines.append(
                f"| {where} | {name} | {rate} | {' | '.join(cpu)} | {_ratio(ratio['total'])} | "
                f"{_ratio(ratio['value'])} |"
            )
    return "\n".join(lines)


@contextmanager
def experiment_tree(tree: Path | None, log: Callable[[str], None]) -> Iterator[Path]:
    """``tree`` (built there first when it holds no built module) or, without it, one built in a temporary folder."""
    if tree is not None:
        if not built(tree):
            log(f"built {make(tree)}")
        yield tree
        return
    with tempfile.TemporaryDirectory(prefix="netloop-uring-tree-") as scratch:
        tree = Path(scratch).resolve()  # as /proc/PID/maps names it
        log(f"built {make(tree)}")
        yield tree


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.uring.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured interval (default 5)")
    parser.add_argument("--only", default=",".join(DEFAULT), help=f"workloads, comma-separated: {', '.join(CHOICES)}")
    parser.add_argument("--tree", type=Path, help="the experiment's tree (python -m bench.uring.build makes one)")
    parser.add_argument("--connections", type=int, help="connections (default 64)")
    parser.add_argument("--server-cpu", type=int, help="CPU the servers are pinned to (default 0)")
    parser.add_argument("--client-cpu", type=int, help="CPU the load generators are pinned to (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where uring-compare.json goes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the comparison; the exit status is 1 if any variant failed, else 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    chosen = {f.name: getattr(args, f.name, None) for f in fields(Settings)}
    settings = settings_from(argparse.Namespace(quick=False, **chosen))
    keys = [k for k in args.only.split(",") if k]
    unknown = [k for k in keys if k not in CHOICES]
    if unknown:
        raise SystemExit(f"unknown workload {', '.join(unknown)}; choose from {', '.join(CHOICES)}")
    workloads = [CHOICES[k] for k in keys]
    absent = sorted({w.tool for w in workloads if w.tool != "echo_load" and shutil.which(w.tool) is None})
    if absent:
        raise SystemExit(f"not installed: {', '.join(absent)}")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    ctx = Context(settings)
    try:
        if any(w.tool == "echo_load" for w in workloads):
            ctx.echo_load = build_echo_load()
        with experiment_tree(args.tree.resolve() if args.tree else None, log) as tree:
            results = run(ctx, workloads, tree, log)
    except BenchError as error:
        raise SystemExit(str(error)) from None
    records = {w.key: summary(w, results[w.key], settings) for w in workloads}
    print(markdown(records, settings))
    machine = {**machine_info(argv), "command": shlex.join(["python", "-m", "bench.uring.compare", *argv])}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "uring-compare.json"
    document = {"machine": machine, "settings": vars(settings), "workloads": records}
    path.write_text(json.dumps(document, indent=2) + "\n")
    log(f"results written to {path}")
    return 1 if any(r.error for runs in results.values() for r in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
