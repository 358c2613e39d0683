"""The soak runs of bench/soak.py at CI sizes: byte-exact streams through the echo and proxy examples, and churn.

The example servers run as their own programs (``python -m examples.echo``, ``python -m examples.proxy``), so the
descriptor count and resident memory measured are the server process's alone. ``python -m bench.soak`` runs the
same checks at soak sizes (1 GiB of streams per path, 200,000 churn cycles).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._servers import Server
from bench.soak import address, churn_soak, echo_argv, example_server, logged_errors, proxy_argv, streams

CLIENTS = 8
STREAM_SIZE = 4 * 2**20
CHURN_CYCLES = 5_000
IN_FLIGHT = 100
RSS_SLACK = 2 * 2**20  # allocator noise; a leak of even 500 bytes a connection would show as 2.5 MB


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[Server]:
    with example_server("echo", echo_argv, tmp_path) as server:
        yield server
    assert logged_errors(server) == []


def check_streams(target: tuple[str, int], seed: int) -> None:
    results = streams(target, CLIENTS, STREAM_SIZE, seed)
    failed = [r.describe() for r in results if not r.ok]
    assert not failed, failed
    assert sum(r.received for r in results) == CLIENTS * STREAM_SIZE


@pytest.mark.slow
def test_streams_through_the_echo_example_are_byte_exact(echo_server: Server) -> None:
    check_streams(address(echo_server), seed=1)


@pytest.mark.slow
def test_streams_through_the_proxy_example_are_byte_exact(echo_server: Server, tmp_path: Path) -> None:
    with example_server("proxy", proxy_argv(address(echo_server)), tmp_path) as proxy:
        check_streams(address(proxy), seed=2)
    assert logged_errors(proxy) == []


@pytest.mark.slow
def test_churn_gives_back_descriptors_and_memory(echo_server: Server) -> None:
    soak = churn_soak(address(echo_server), echo_server.pid, CHURN_CYCLES, IN_FLIGHT, rounds=5)
    assert soak.churn.completed == CHURN_CYCLES
    assert soak.leaks(RSS_SLACK) == []
