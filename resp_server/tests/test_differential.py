"""The differential comparison of bench/resp_differential.py at CI size: 100,000 generated command sequences (argument
edge cases, keys of every type meeting every family's commands, MULTI/WATCH, pub/sub), half in RESP2 and half in
RESP3, on a real redis-server 7.0 and on this server in a process of its own; every reply Redis's own bytes but for
the differences :data:`ALLOWED` names with their reasons. The 100,000 run once, under the compiled core; the
pure-Python core's run (the same server code on a slower transport) takes a tenth of them.
``python -m bench.resp_differential`` runs as many as asked."""

from __future__ import annotations

import shutil

import pytest

from bench.resp_differential import (
    ALLOWED,
    ALLOWED_REPLIES,
    NEAR,
    Report,
    _block,
    _same,
    allowed,
    compare,
    differential,
    parse_reply,
    shape,
    unordered,
)
from bench.resp_generator import FAMILIES, Random, sequence
from netloop._compiled import compiled

SEQUENCES = 100_000 if compiled else 10_000


@pytest.mark.slow
def test_generated_sequences_answer_as_redis_does() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    report = differential(SEQUENCES, seed=20261207)
    assert report.failures == [], "\n".join([report.summary(), *report.failures[:10]])
    assert report.sequences == SEQUENCES
    # An allowed difference is one ALLOWED names (or an EXEC whose block holds one).
    names = {name.split(b" ")[0].decode() for name in ALLOWED} | {name.decode() for name, _ in ALLOWED_REPLIES}
    assert set(report.allowed) <= names | {"EXEC"}
    # Nearly every reply is Redis's own bytes: an allow-list that grew to hide a regression would show here.
    assert report.same >= 0.99 * report.commands, report.summary()
    # The generator reaches every family: a family that stopped generating would show here.
    assert len(report.names) >= 140, sorted(report.names)


def test_the_generator_is_reproducible_and_type_collides() -> None:
    rng = Random(5)
    first = [sequence(rng) for _ in range(300)]
    rng = Random(5)
    assert first == [sequence(rng) for _ in range(300)]
    commands = [c for s in first for c in s]
    # Keys are shared by all families, so a key of one type meets the commands of another.
    makers = {b"SET", b"LPUSH", b"RPUSH", b"HSET", b"SADD", b"ZADD"}
    for key in (b"a", b"b", b"c"):
        assert len(makers & {c[0] for c in commands if c[1:2] == [key]}) >= 5, key
    # Some commands are mangled: an unknown name, or a lower-case one; some are in MULTI blocks.
    assert any(c[0] in (b"NOSUCHCOMMAND", b"GETT", b"", b"\xff") for c in commands)
    assert any(c[0] != c[0].upper() for c in commands)
    assert any(c == [b"MULTI"] for c in commands)
    assert len(FAMILIES) >= 10


def test_a_reply_that_differs_is_a_failure_unless_allowed() -> None:
    report = Report()
    compare([[b"GET", b"a"]], [b"$1\r\nx\r\n"], [b"$1\r\ny\r\n"], report)
    assert len(report.failures) == 1 and report.same == 0
    compare([[b"OBJECT", b"ENCODING", b"a"]], [b"$6\r\nembstr\r\n"], [b"$3\r\nraw\r\n"], report)
    assert report.allowed == {"OBJECT": 1} and len(report.failures) == 1
    assert allowed([b"OBJECT", b"FREQ", b"a"]) is None
    # SORT may differ only where Redis refused the numbers (its stale errno).
    refused = b"-ERR One or more scores can't be converted into double\r\n"
    assert allowed([b"SORT", b"c"], refused) is not None and allowed([b"SORT", b"c"], b"*0\r\n") is None
    compare(
        [[b"MULTI"], [b"SORT", b"c"], [b"EXEC"]],
        [b"+OK\r\n", b"+QUEUED\r\n", b"*1\r\n" + refused],
        [b"+OK\r\n", b"+QUEUED\r\n", b"*1\r\n*0\r\n"],
        report,
    )
    assert report.allowed == {"OBJECT": 1, "EXEC": 1} and len(report.failures) == 1
    # EXEC is compared item by item, each as its command's reply would be.
    block = [[b"MULTI"], [b"SMEMBERS", b"s"], [b"GET", b"a"], [b"EXEC"]]
    compare(
        block,
        [b"+OK\r\n", b"+QUEUED\r\n", b"+QUEUED\r\n", b"*2\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n"],
        [b"+OK\r\n", b"+QUEUED\r\n", b"+QUEUED\r\n", b"*2\r\n*2\r\n$1\r\nb\r\n$1\r\na\r\n$-1\r\n"],
        report,
    )
    assert len(report.failures) == 1 and report.same == 6
    assert _block([[b"MULTI"], [b"GET", b"a"], [b"MULTI"], [b"WATCH", b"a"], [b"EXEC"]], 4) == [[b"GET", b"a"]]


def test_expiry_read_backs_compare_within_their_distance() -> None:
    ms = parse_reply(b":1796610718805\r\n")[0]
    assert _same([b"PEXPIRETIME", b"k"], ms, parse_reply(b":1796610718815\r\n")[0])
    assert not _same([b"PEXPIRETIME", b"k"], ms, parse_reply(b":1796610720805\r\n")[0])
    assert not _same([b"PEXPIRETIME", b"k"], parse_reply(b":-1\r\n")[0], parse_reply(b":5\r\n")[0])
    assert not _same([b"TTL", b"k"], parse_reply(b":100\r\n")[0], parse_reply(b":98\r\n")[0])
    assert not _same([b"GET", b"k"], parse_reply(b":100\r\n")[0], parse_reply(b":99\r\n")[0])
    assert set(NEAR) == {b"PTTL", b"PEXPIRETIME", b"EXPIRETIME", b"TTL"}


def test_a_random_pick_compares_by_shape() -> None:
    assert shape(parse_reply(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n")[0]) == shape(
        parse_reply(b"*2\r\n$1\r\nc\r\n$1\r\nd\r\n")[0]
    )
    assert shape(parse_reply(b"$1\r\na\r\n")[0]) != shape(parse_reply(b"$-1\r\n")[0])
    assert shape(parse_reply(b"*1\r\n$1\r\na\r\n")[0]) != shape(parse_reply(b"~1\r\n$1\r\na\r\n")[0])


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
