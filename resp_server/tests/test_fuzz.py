"""The protocol fuzzer of bench/fuzz.py against the RESP server, at CI size (its own target: the core's fault tests
fuzz the HTTP examples and the codecs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fuzz import fuzz


@pytest.mark.slow
def test_fuzzing_the_resp_server_finds_no_failure(tmp_path: Path) -> None:
    (report,) = fuzz(["resp"], cases=320, seed=20240601, batch=40, log_dir=tmp_path)
    assert report.skipped is None, report.summary()
    assert report.failures == 0, "\n".join([report.summary(), *report.examples, *report.loop_errors])
