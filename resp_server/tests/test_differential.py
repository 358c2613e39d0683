"""The differential comparison of bench/resp_differential.py at CI size: generated command sequences over the core
types, in RESP2 and RESP3, on a real redis-server 7.0 and on this server; every reply byte-for-byte Redis's but the
differences its allow-list names with their reasons. ``python -m bench.resp_differential`` runs the long one."""

from __future__ import annotations

import pytest

import resp_server
from bench.resp_differential import ALLOWED, parse_reply, run, unordered
from resp_server.tests.reference import redis_server

SEQUENCES = 4000


@pytest.mark.slow
def test_generated_sequences_answer_as_redis_does() -> None:
    with redis_server() as reference_port:
        engine = resp_server.start(port=0)
        try:
            report = run(reference_port, int(engine.addrs[0].rsplit(":", 1)[1]), SEQUENCES, seed=20261207)
        finally:
            engine.stop()
    assert report.failures == [], "\n".join([report.summary(), *report.failures[:10]])
    assert report.sequences == SEQUENCES
    assert set(report.allowed) <= {name.decode() for name in ALLOWED} | {"EXEC"}
    # Nearly every reply is Redis's own bytes: an allow-list that grew to hide a regression would show here.
    assert report.same >= 0.99 * report.commands, report.summary()


@pytest.mark.parametrize(
    ("reply", "pairs", "same_as"),
    [
        (b"*2\r\n$1\r\nb\r\n$1\r\na\r\n", False, b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
        (b"%2\r\n$1\r\nb\r\n:2\r\n$1\r\na\r\n:1\r\n", True, b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n"),
        (b"~1\r\n$1\r\na\r\n", False, b"~1\r\n$1\r\na\r\n"),
    ],
)
def test_unordered_replies_compare_equal_whatever_the_order(reply: bytes, pairs: bool, same_as: bytes) -> None:
    assert unordered(reply, pairs) == unordered(same_as, pairs)


def test_unordered_comparison_still_sees_a_different_reply() -> None:
    assert unordered(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", False) != unordered(b"~2\r\n$1\r\na\r\n$1\r\nb\r\n", False)
    assert unordered(b"%1\r\n$1\r\na\r\n:1\r\n", True) != unordered(b"%1\r\n$1\r\na\r\n:2\r\n", True)
    assert parse_reply(b"*-1\r\n") == ((b"*", None), 5)
