"""A CI-sized part of CPython's own asyncio tests, run against netloop's loop (bench/asyncio_suite.py runs them all)."""

from __future__ import annotations

import importlib.util

import pytest

from bench.asyncio_suite import run_isolated

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("test.test_asyncio") is None, reason="this Python has no test.test_asyncio package"
)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["test_streams", "test_sock_lowlevel", "test_locks"])
def test_cpython_asyncio_module_passes_on_netloop(module: str) -> None:
    row = run_isolated(module, "netloop", timeout=120)
    assert "missing" not in row, row
    assert (row["failed"], row["errors"]) == (0, 0), row["failing"]
    assert row["passed"] > 0
    assert row["on_loop"] > 0  # the cases ran on netloop's loop, not only on the suite's mock-time loop
