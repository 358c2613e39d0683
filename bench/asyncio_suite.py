"""CPython's own asyncio tests against an event loop: asyncio's default, netloop's (netloop.aio) or uvloop's.

    python -m bench.asyncio_suite [--loops default,netloop,uvloop] [--modules test_queues,...] [--json FILE]
        [--timeout SECONDS] [--failures]

Each (module, loop) pair runs in a fresh interpreter (``--one MODULE LOOP``) with ``unittest``, from the
``test.test_asyncio`` package of the interpreter that runs this script. For a loop other than the default the
event loop policy is that loop's, and every test class that makes its loop itself (``create_event_loop``,
``new_loop``) makes that loop instead. ``test_events`` and ``test_sock_lowlevel`` run only their epoll selector
class (the Unix selector loop's cases), once per loop. Tests that build ``asyncio.SelectorEventLoop(...)`` in their
own body, or use the test suite's mock-time ``TestLoop``, still run on those: the ``on loop`` column counts the
tests during which at least one loop of the loop under test was created. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import subprocess
import sys
import time
import unittest
from pathlib import Path
from typing import Any

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODULES = [
    "test_events",
    "test_futures",
    "test_tasks",
    "test_queues",
    "test_locks",
    "test_waitfor",
    "test_timeouts",
    "test_sock_lowlevel",
    "test_streams",
    "test_server",
]
LOOPS = ["default", "netloop", "uvloop"]

# Modules whose loop-specific cases are repeated once per selector: only the epoll class runs.
ONLY_CLASS = {"test_events": "EPollEventLoopTests", "test_sock_lowlevel": "EPollEventLoopTests"}

# The methods through which a test class makes its own loop.
LOOP_MAKERS = ("create_event_loop", "new_loop")


class _Counting(unittest.TextTestResult):
    """Also counts the tests during which a loop of the kind under test was made."""

    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_loop = 0
        self._before = 0

    def startTest(self, test: unittest.TestCase) -> None:
        self._before = _Counting.made
        super().startTest(test)

    def stopTest(self, test: unittest.TestCase) -> None:
        if _Counting.made > self._before:
            self.on_loop += 1
        super().stopTest(test)


def _loop_factory(kind: str) -> tuple[Any, Any]:
    """(a function that makes a loop, a policy) for ``kind``; counts the loops it makes."""
    if kind == "netloop":
        import netloop.aio

        base: Any = netloop.aio.Loop
        policy: Any = netloop.aio.EventLoopPolicy
    else:
        import uvloop

        base = uvloop.Loop
        policy = uvloop.EventLoopPolicy

    def make(*args: Any) -> Any:
        _Counting.made += 1
        return base()

    class Policy(policy):  # type: ignore[misc, valid-type]
        def new_event_loop(self) -> Any:
            return make()

    return make, Policy


def run_one(module_name: str, kind: str, stream: io.TextIOBase | None = None) -> dict[str, Any]:
    """Run one test module against ``kind`` in this process; the counts (and failing test ids)."""
    import asyncio

    module = importlib.import_module(f"test.test_asyncio.{module_name}")
    loader = unittest.TestLoader()
    only = ONLY_CLASS.get(module_name)
    suite = loader.loadTestsFromTestCase(getattr(module, only)) if only else loader.loadTestsFromModule(module)
    if kind != "default":
        make, policy = _loop_factory(kind)
        for name in dir(module):
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, unittest.TestCase):
                for maker in LOOP_MAKERS:
                    if maker in vars(cls):
                        setattr(cls, maker, lambda self, *args: make())
        asyncio.set_event_loop_policy(policy())
    else:
        real = asyncio.SelectorEventLoop.__init__

        def counted(self: Any, *args: Any, **kwargs: Any) -> None:
            _Counting.made += 1
            real(self, *args, **kwargs)

        asyncio.SelectorEventLoop.__init__ = counted  # type: ignore[method-assign]
    started = time.monotonic()
    runner = unittest.TextTestRunner(stream=stream or io.StringIO(), resultclass=_Counting, verbosity=0)
    result = runner.run(suite)
    assert isinstance(result, _Counting)
    # A test counts once: an error (in the test, its setUp or its cleanups) wins over a failure.
    errored = {test.id() for test, _ in result.errors}
    failed = {test.id() for test, _ in result.failures} | {test.id() for test in result.unexpectedSuccesses}
    failed -= errored
    skipped = {test.id() for test, _ in result.skipped + result.expectedFailures} - errored - failed
    return {
        "module": module_name,
        "loop": kind,
        "python": sys.version.split()[0],
        "run": result.testsRun,
        "passed": result.testsRun - len(failed) - len(errored) - len(skipped),
        "failed": len(failed),
        "errors": len(errored),
        "skipped": len(skipped),
        "on_loop": result.on_loop,
        "seconds": round(time.monotonic() - started, 1),
        "failing": sorted(errored | failed),
    }


def _missing(module_name: str, kind: str, why: str) -> dict[str, Any]:
    return {"module": module_name, "loop": kind, "python": sys.version.split()[0], "missing": why}


def run_isolated(module_name: str, kind: str, timeout: float) -> dict[str, Any]:
    """``run_one`` in a fresh interpreter (a test that hangs or crashes takes only its own row down)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "bench.asyncio_suite", "--one", module_name, kind]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=_ROOT, env=env)
    except subprocess.TimeoutExpired:
        return _missing(module_name, kind, f"timed out after {timeout:.0f} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            row: dict[str, Any] = json.loads(line)
            return row
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return _missing(module_name, kind, f"exit {proc.returncode}: {tail}")


_ROOT = Path(__file__).resolve().parents[1]


def table(rows: list[dict[str, Any]], loops: list[str]) -> str:
    """Markdown: one line per module, ``passed/failed/errors/skipped (on loop)`` per loop."""
    head = "| module | " + " | ".join(f"{k}: pass / fail / error / skip (on loop)" for k in loops) + " |"
    lines = [head, "|---" * (len(loops) + 1) + "|"]
    by = {(r["module"], r["loop"]): r for r in rows}
    modules = list(dict.fromkeys(r["module"] for r in rows))
    for module in modules:
        cells = []
        for kind in loops:
            r = by.get((module, kind))
            if r is None:
                cells.append("-")
            elif "missing" in r:
                cells.append(f"n/a ({r['missing']})")
            else:
                cells.append(f"{r['passed']} / {r['failed']} / {r['errors']} / {r['skipped']} ({r['on_loop']})")
        lines.append(f"| {module} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--modules", default=",".join(MODULES))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per module and loop")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--failures", action="store_true", help="list the failing tests under the table")
    parser.add_argument("--one", nargs=2, metavar=("MODULE", "LOOP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        module_name, kind = args.one
        try:
            row = run_one(module_name, kind, stream=io.StringIO())
        except ImportError as exc:
            row = _missing(module_name, kind, f"{type(exc).__name__}: {exc}")
        print(json.dumps(row), flush=True)
        return 0
    loops = args.loops.split(",")
    rows = []
    for module_name in args.modules.split(","):
        for kind in loops:
            row = run_isolated(module_name, kind, args.timeout)
            print(json.dumps({k: v for k, v in row.items() if k != "failing"}), file=sys.stderr, flush=True)
            rows.append(row)
    print(f"Python {sys.version.split()[0]}, {sys.platform}\n")
    print(table(rows, loops))
    if args.failures:
        for row in rows:
            for test_id in row.get("failing", []):
                print(f"- {row['loop']}: {test_id}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
