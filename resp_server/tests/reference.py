"""The reference for the RESP server's tests: a real redis-server 7.0 (skipped where none is installed) and a raw RESP
client, from bench/resp_differential.py, which runs the long differential comparison."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

from bench.resp_differential import TIMEOUT, RawClient, reply_end
from bench.resp_differential import redis_server as _redis_server

__all__ = ["TIMEOUT", "RawClient", "redis_server", "reply_end"]


@contextlib.contextmanager
def redis_server(*options: str) -> Iterator[int]:
    """A fresh redis-server on a free loopback port, ``options`` added to its command line (see
    :func:`bench.resp_differential.redis_server`)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    with _redis_server(*options) as port:
        yield port
