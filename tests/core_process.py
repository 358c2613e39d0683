"""One core in a process of its own: a harness script driven case by case, so both cores answer the same steps.

``NETLOOP_PURE`` picks the core at import, which is why each core needs a process: ``conn_harness.py`` and
``lifecycle_harness.py`` read one JSON case a line on stdin and answer one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def core_env(pure: bool) -> dict[str, str]:
    """The environment of a child that imports this checkout's netloop on one core, with tests/ on its path."""
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(HERE)) if p)
    return dict(os.environ, NETLOOP_PURE="1" if pure else "0", PYTHONPATH=path)


class Core:
    """A process that answers a harness's cases on one core."""

    def __init__(self, harness: Path, pure: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(harness)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=core_env(pure),
        )

    def ask(self, case: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the harness process ended ({self.proc.wait(10)})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


@contextmanager
def both_cores(harness: Path, probe: dict[str, Any]) -> Iterator[tuple[Core, Core]]:
    """(pure, compiled) harness processes; ``pytest.skip`` where the compiled core is not built."""
    import pytest

    pure, compiled = Core(harness, pure=True), Core(harness, pure=False)
    try:
        if not compiled.ask(probe)["compiled"]:
            pytest.skip("the compiled core is not built here")
        assert not pure.ask(probe)["compiled"]
        yield pure, compiled
    finally:
        pure.close()
        compiled.close()
