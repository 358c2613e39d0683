"""The reference for the RESP server's tests: a real redis-server 7.0 (skipped where none is installed) and a raw RESP
client, from bench/resp_differential.py, which runs the long differential comparison; both servers side by side, and
the replies a list of commands gets from one of them."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest

import resp_server
from bench.resp_differential import TIMEOUT, RawClient, reply_end
from bench.resp_differential import redis_server as _redis_server

__all__ = ["TIMEOUT", "RawClient", "both_servers", "redis_server", "replies", "reply_end"]


@contextlib.contextmanager
def redis_server(*options: str) -> Iterator[int]:
    """A fresh redis-server on a free loopback port, ``options`` added to its command line (see
    :func:`bench.resp_differential.redis_server`)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    with _redis_server(*options) as port:
        yield port


@contextlib.contextmanager
def both_servers() -> Iterator[tuple[int, int]]:
    """(redis-server's port, this server's port), both running until the block ends."""
    with redis_server() as redis_port:
        engine = resp_server.start(port=0)
        try:
            yield redis_port, int(engine.addrs[0].rsplit(":", 1)[1])
        finally:
            engine.stop()


def replies(port: int, proto: int, commands: list[list[str]]) -> list[bytes]:
    """The replies to ``commands`` on a flushed keyspace, in RESP2 or (``proto`` 3) RESP3."""
    client = RawClient(port)
    try:
        assert client.call("FLUSHALL") == b"+OK\r\n"
        if proto == 3:
            client.call("HELLO", "3")
        return client.run(commands)
    finally:
        client.close()
