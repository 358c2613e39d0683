"""``python -m bench``: run the benchmark, print markdown tables, write results/latest.json and latest.png."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._report import chart, machine_info, markdown, record
from bench._runner import run
from bench._servers import CONTENDERS
from bench._workloads import WORKLOADS, Settings, Workload

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def select_workloads(only: Sequence[str] | None) -> list[Workload]:
    """The workloads named by key (``echo-1k``) or family (``echo``), in run order; all when ``only`` is None."""
    if only is None:
        return list(WORKLOADS)
    known = {w.key for w in WORKLOADS} | {w.group for w in WORKLOADS}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise SystemExit(f"unknown workload {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return [w for w in WORKLOADS if w.key in only or w.group in only]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; see ``python -m bench --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark netloop's example servers, plaintext and TLS, against asyncio, uvloop, aiofastnet and "
        "redis-server; netloop.asgi against other ASGI servers (--only asgi); asyncio on netloop's loop against "
        "uvloop (--only aio).",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short intervals, 2 rounds, small counts")
    parser.add_argument("--only", type=_names, help="workloads to run, e.g. echo,http-p16 (default: all)")
    parser.add_argument("--contenders", type=_names, default=list(CONTENDERS), help="default: all")
    parser.add_argument("--rounds", type=int, help="rounds per workload (default 3; 2 with --quick)")
    parser.add_argument("--duration", type=float, help="seconds per measured interval (default 5)")
    parser.add_argument("--connections", type=int, help="connections for echo, http and resp (default 64)")
    parser.add_argument("--idle-connections", type=int, help="open connections for idle (default 10000)")
    parser.add_argument("--churn-in-flight", type=int, help="connections in flight for churn (default 16)")
    parser.add_argument("--bulk-mib", type=int, help="MiB streamed by bulk (default 1024)")
    parser.add_argument("--server-cpu", type=int, help="CPU the servers are pinned to (default 0)")
    parser.add_argument("--client-cpu", type=int, help="CPU the load generators are pinned to (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.json and latest.png go")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """The Settings the command line asks for: --quick's defaults, then any explicit option."""
    base = Settings.quick() if args.quick else Settings()
    chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
    settings = dataclasses.replace(base, **{k: v for k, v in chosen.items() if v is not None})
    usable = os.sched_getaffinity(0)
    for cpu in (settings.server_cpu, settings.client_cpu):
        if cpu not in usable:
            raise SystemExit(f"CPU {cpu} is not available here (usable: {sorted(usable)})")
    if settings.rounds < 1 or settings.duration <= 0:
        raise SystemExit("--rounds and --duration must be positive")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; the exit status is 1 if any contender failed, else 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    settings = settings_from(args)
    workloads = select_workloads(args.only)
    unknown = [c for c in args.contenders if c not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contender {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    if settings.server_cpu == settings.client_cpu:
        print("warning: servers and load generators share one CPU; numbers will mislead", file=sys.stderr)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    machine = machine_info(argv)
    outcomes = run(workloads, args.contenders, settings, log)
    print(markdown(outcomes, settings, machine))
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "latest.json"
    results.write_text(json.dumps(record(outcomes, settings, machine), indent=2) + "\n")
    log(f"results written to {results}")
    if not args.no_chart:
        log(chart(outcomes, args.out / "latest.png"))
    failed = any(e.error and not e.error.startswith("unavailable") for o in outcomes for e in o.entries.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
