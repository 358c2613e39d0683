"""The RESP server's reply bytes against a real redis-server 7.0's, command for command, in RESP2 and RESP3.

Each case is a short command sequence run on a fresh keyspace of both servers over a raw socket (``HELLO 3`` first
for RESP3); every reply must be byte-for-byte Redis's. The cases are the defects of issue 23: RESP3 nulls sent as
RESP2's, doubles and maps where RESP3 has them, values Redis formats otherwise, errors Redis gives, and commands
that closed the connection or hung the server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resp_server.tests.reference import RawClient, both_servers, replies

Case = list[list[str]]


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    """(redis-server's port, this server's port), both running for the module."""
    with both_servers() as both:
        yield both


def assert_like_redis(ports: tuple[int, int], proto: int, commands: Case) -> None:
    expected = replies(ports[0], proto, commands)
    got = replies(ports[1], proto, commands)
    for command, want, have in zip(commands, expected, got, strict=True):
        assert (command, have) == (command, want)


NULLS_RESP3 = {
    "getex": [["GETEX", "missing"], ["GETEX", "missing", "PERSIST"]],
    "zscore": [["ZSCORE", "missing", "m"], ["ZADD", "z", "1", "a"], ["ZSCORE", "z", "other"]],
    "memory usage": [["MEMORY", "USAGE", "missing"]],
    "object": [["OBJECT", sub, "missing"] for sub in ("ENCODING", "REFCOUNT", "IDLETIME", "FREQ")],
    "randomkey": [["RANDOMKEY"]],
    "zadd xx incr": [["ZADD", "z", "XX", "INCR", "1", "a"]],
    "getdel getset": [["GETDEL", "missing"], ["GETSET", "missing", "v"]],
    "spop count": [["SPOP", "missing", "2"], ["SPOP", "missing"]],
    "hget lindex": [["HGET", "missing", "f"], ["LINDEX", "missing", "0"], ["HMGET", "missing", "a", "b"]],
}

RESP3_TYPES = {
    "zrange withscores": [["ZADD", "z", "1", "a", "2.5", "b", "-3", "c"], ["ZRANGE", "z", "0", "-1", "WITHSCORES"]],
    "zadd incr": [["ZADD", "z", "INCR", "1.5", "a"], ["ZADD", "z", "INCR", "1", "a"], ["ZSCORE", "z", "a"]],
    "lcs idx": [
        ["MSET", "a", "ohmytext", "b", "mynewtext"],
        ["LCS", "a", "b", "IDX"],
        ["LCS", "a", "b", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
        ["LCS", "a", "b"],
        ["LCS", "a", "b", "LEN"],
    ],
    "xinfo stream": [
        ["XADD", "s", "1-1", "f", "v"],
        ["XINFO", "STREAM", "s"],
        ["XADD", "s", "2-1", "g", "w", "h", "x"],
        ["XDEL", "s", "1-1"],
        ["XINFO", "STREAM", "s"],
        ["XDEL", "s", "2-1"],
        ["XINFO", "STREAM", "s"],
    ],
}

CRASHES = {
    "infinite scores": [
        ["ZADD", "z", "inf", "a", "-inf", "b", "+inf", "c"],
        ["ZSCORE", "z", "a"],
        ["ZSCORE", "z", "b"],
        ["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        ["ZADD", "z", "INCR", "1", "a"],
        ["ZADD", "z", "INCR", "-inf", "a"],
    ],
    "stream encoding": [["XADD", "s", "1-1", "f", "v"], ["OBJECT", "ENCODING", "s"], ["TYPE", "s"]],
    "srandmember long min": [
        ["SADD", "s", "a"],
        ["SRANDMEMBER", "s", "-9223372036854775808"],
        ["SRANDMEMBER", "s", "-3"],
    ],
    "bare client kill": [["CLIENT", "KILL"]],
}

VALUES = {
    "incrbyfloat": [
        ["INCRBYFLOAT", "x", "0.1"],
        ["INCRBYFLOAT", "x", "0.2"],
        ["INCRBYFLOAT", "x", "-0.3"],
        ["INCRBYFLOAT", "y", "1e20"],
        ["INCRBYFLOAT", "y", "1.5"],
        ["INCRBYFLOAT", "z", "3.0e3"],
        ["INCRBYFLOAT", "z", "5.0e-10"],
        ["INCRBYFLOAT", "w", "10.5"],
        ["INCRBYFLOAT", "w", "-10.5"],
        ["INCRBYFLOAT", "v", "1.23456789012345678"],
        ["INCRBYFLOAT", "v", "inf"],
        ["INCRBYFLOAT", "v", "abc"],
        ["INCRBYFLOAT", "v", " 1"],
    ],
    "hincrbyfloat": [
        ["HINCRBYFLOAT", "h", "f", "0.1"],
        ["HINCRBYFLOAT", "h", "f", "0.2"],
        ["HINCRBYFLOAT", "h", "g", "1e20"],
        ["HINCRBYFLOAT", "h", "g", "inf"],
        ["HGETALL", "h"],
    ],
    "copy onto itself": [["COPY", "k", "k"], ["SET", "k", "v"], ["COPY", "k", "k"], ["COPY", "k", "k", "REPLACE"]],
    "expire overflow": [
        ["PSETEX", "k", "9223372036854775807", "v"],
        ["SETEX", "k", "9223372036854775807", "v"],
        ["SET", "k", "v"],
        ["GETEX", "k", "PX", "9223372036854775807"],
        ["EXISTS", "k"],
    ],
    "config set": [
        ["CONFIG", "SET", "maxmemory", "bla"],
        ["CONFIG", "SET", "maxmemory", "10mb"],
        ["CONFIG", "GET", "maxmemory"],
        ["CONFIG", "SET", "maxmemory", "0"],
        ["CONFIG", "SET", "appendonly", "maybe"],
        ["CONFIG", "SET", "hz", "x"],
    ],
    "reset inside multi": [["MULTI"], ["SET", "a", "1"], ["RESET"], ["EXEC"], ["GET", "a"]],
    "bad subcommand inside multi": [["MULTI"], ["SET", "a", "1"], ["CONFIG", "BLA"], ["EXEC"], ["GET", "a"]],
    "subcommand arity inside multi": [["MULTI"], ["CLIENT", "KILL"], ["OBJECT", "ENCODING"], ["EXEC"]],
    "object refcount and freq": [
        ["SET", "k", "10"],
        ["OBJECT", "REFCOUNT", "k"],
        ["OBJECT", "FREQ", "k"],
        ["SET", "s", "abc"],
        ["OBJECT", "REFCOUNT", "s"],
        ["OBJECT", "ENCODING", "s"],
    ],
    "lcs too big": [["SET", "a", "x" * 12000], ["SET", "b", "y" * 12000], ["LCS", "a", "b", "LEN"]],
    "bad subcommands": [["OBJECT", "BLA", "k"], ["MEMORY", "BLA"], ["XINFO", "BLA"], ["CLIENT", "BLA"]],
}


@pytest.mark.parametrize("name", sorted(NULLS_RESP3))
def test_nulls_in_resp3_are_resp3_nulls(ports: tuple[int, int], name: str) -> None:
    assert_like_redis(ports, 3, NULLS_RESP3[name])
    assert_like_redis(ports, 2, NULLS_RESP3[name])


@pytest.mark.parametrize("name", sorted(RESP3_TYPES))
@pytest.mark.parametrize("proto", [2, 3])
def test_doubles_maps_and_pairs_as_redis_sends_them(ports: tuple[int, int], name: str, proto: int) -> None:
    assert_like_redis(ports, proto, RESP3_TYPES[name])


@pytest.mark.parametrize("name", sorted(CRASHES))
@pytest.mark.parametrize("proto", [2, 3])
def test_commands_that_closed_the_connection_answer_as_redis(ports: tuple[int, int], name: str, proto: int) -> None:
    assert_like_redis(ports, proto, CRASHES[name])


@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_and_errors_as_redis(ports: tuple[int, int], name: str) -> None:
    assert_like_redis(ports, 2, VALUES[name])


def test_sessions_of_both_protocols_interleave_without_sharing_one(ports: tuple[int, int]) -> None:
    # A RESP3 session's nulls stay RESP3's while a RESP2 session runs commands in between, and the other way round.
    port = ports[1]
    two, three = RawClient(port), RawClient(port)
    try:
        three.call("HELLO", "3")
        for _ in range(3):
            assert three.call("ZSCORE", "nokey", "m") == b"_\r\n"
            assert two.call("ZSCORE", "nokey", "m") == b"$-1\r\n"
            assert three.call("GET", "nokey") == b"_\r\n"
            assert two.call("GET", "nokey") == b"$-1\r\n"
            assert two.call("SPOP", "nokey", "2") == b"*0\r\n"
            assert three.call("SPOP", "nokey", "2") == b"~0\r\n"
    finally:
        two.close()
        three.close()


def test_the_server_keeps_serving_after_each_case(ports: tuple[int, int]) -> None:
    client = RawClient(ports[1])
    try:
        for case in (*CRASHES.values(), *VALUES.values()):
            client.run(case)
        assert client.call("PING") == b"+PONG\r\n"
    finally:
        client.close()


def test_a_bare_client_kill_kills_nobody(ports: tuple[int, int]) -> None:
    killer, bystander = RawClient(ports[1]), RawClient(ports[1])
    try:
        assert bystander.call("PING") == b"+PONG\r\n"
        assert killer.call("CLIENT", "KILL").startswith(b"-ERR wrong number of arguments")
        assert bystander.call("PING") == b"+PONG\r\n"
    finally:
        killer.close()
        bystander.close()
