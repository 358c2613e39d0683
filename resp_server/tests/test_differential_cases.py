"""The differences the generated differential comparison (bench/resp_differential.py) found, each as a short
sequence whose replies must be byte-for-byte a real redis-server 7.0's, in RESP2 and RESP3: how Redis reads numbers
(C's ``strtod``, ``strtoul`` and ``memtoull``), the order of its checks, and how it quotes arguments in errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.resp_differential import parse_reply
from resp_server.command_table import KEYSPACE
from resp_server.commands import SESSION_ARITY
from resp_server.server_state import SESSION_COMMANDS
from resp_server.tests.reference import RawClient, both_servers, redis_server, replies

Case = list[list[bytes]]


def _case(*commands: str | bytes) -> Case:
    return [(c if isinstance(c, bytes) else c.encode()).split(b"|") for c in commands]


CASES: dict[str, Case] = {
    # A score is read by strtod: hexadecimal is a number; Python's underscores, an overflow and a leading space are not.
    "scores as strtod reads them": _case(
        "ZADD|z|0x1p3|m", "ZADD|z|1_0|m2", "ZADD|z|1e309|m3", "ZADD|z| 1|m4", "ZADD|z|1e-400|m5", "ZINCRBY|z|1e309|m",
        "ZINCRBY|z|0x.8|m", "ZUNION|1|z|WEIGHTS|1_0|WITHSCORES", "ZUNION|1|z|WEIGHTS|0x2|WITHSCORES",
        "ZRANGE|z|0|-1|WITHSCORES",
    ),
    # A range's bounds: the empty string is 0, an overflow is infinite, a leading space is skipped, NUL ends it.
    "score ranges as zslParseRange reads them": _case(
        "ZADD|z|0|a|1|b|8|c", "ZCOUNT|z||(", "ZCOUNT|z| 1|0x1p3", "ZCOUNT|z|-1e309|1e309", "ZCOUNT|z|1_0|9",
        b"ZRANGEBYSCORE|z|(1\x00x|+inf", "ZRANGE|z|(|+inf|BYSCORE", "ZREMRANGEBYSCORE|z|0x1p3|0x1p3",
        "ZRANGE|z|0|-1",
    ),
    "INCRBYFLOAT reads hexadecimal, and no NUL": _case(
        "SET|n|1", "INCRBYFLOAT|n|0x1p3", "HINCRBYFLOAT|h|f|0x.8p2", b"INCRBYFLOAT|n|1\x00", b"SET|s|\x00",
        "INCRBYFLOAT|s|1", "GET|n",
    ),
    # The reply keeps -0; a small sorted set (a listpack) stores it as the integer 0.
    "a new member's increment keeps its sign": _case(
        "ZINCRBY|z|-0|m", "ZADD|z2|INCR|-0|m", "ZADD|z2|INCR|-0|m", "ZSCORE|z|m", "ZRANGE|z2|0|-1|WITHSCORES",
        "ZADD|z3|-0|m", "ZSCORE|z3|m", "ZMPOP|1|z3|MIN",
    ),
    "ZUNIONSTORE stores -0 as 0, ZUNION answers it": _case(
        "ZADD|z|0|m", "ZUNIONSTORE|d|1|z|WEIGHTS|-0", "ZPOPMIN|d", "ZUNION|1|z|WEIGHTS|-0|WITHSCORES",
    ),
    "BITPOS checks its unit before its end, BITCOUNT after": _case(
        "SET|a|10", "BITPOS|a|1|0||1", "BITPOS|a|1|0|x|BIT", "BITCOUNT|a|0||1", "BITCOUNT|a|0|1|x",
    ),
    "SORT ALPHA compares C strings": _case(b"RPUSH|a|a\x00b|\x00||b", "SORT|a|ALPHA", "SORT|a|ALPHA|DESC"),
    "SORT reads scores with strtod": _case(
        "RPUSH|l|1e308||0x10| 2", "SORT|l", "RPUSH|m|1e-400|1", "SORT|m", "RPUSH|n|1_0", "SORT|n",
    ),
    "SPOP and SRANDMEMBER with a count": _case(
        "SADD|s|m4", "SPOP|s|0", "SPOP|s|100", "SADD|s|m4|1", "SET|str|v", "SRANDMEMBER|str|x", "SRANDMEMBER|s|1|2",
        "MULTI", "SRANDMEMBER|s|1|x", "EXEC",
    ),
    "BITFIELD sets an unsigned field from a uint64": _case(
        "BITFIELD|b|OVERFLOW|SAT|SET|u8|0|-3", "BITFIELD|b|OVERFLOW|FAIL|SET|u8|8|-3", "BITFIELD|b|SET|u8|16|-3",
        "GET|b",
    ),
    "BITFIELD SAT sets a signed field near INT64_MIN to its maximum": _case(
        "BITFIELD|b|OVERFLOW|SAT|SET|i8|0|-9223372036854775808",
        "BITFIELD|b|OVERFLOW|SAT|SET|i8|0|-9223372036854775681",
        "BITFIELD|b|OVERFLOW|SAT|SET|i8|0|-9223372036854775680",
        "BITFIELD|b|OVERFLOW|SAT|SET|i63|0|-9223372036854775808",
        "BITFIELD|b|OVERFLOW|SAT|SET|i64|0|-9223372036854775808",
        "BITFIELD|b|OVERFLOW|FAIL|SET|i8|0|-9223372036854775808",
        "GET|b",
    ),
    # Every write failed: the key is made (zero bytes) but its watchers are not told, so EXEC runs.
    "a BITFIELD whose writes all fail touches no watcher": _case(
        "WATCH|a", "BITFIELD|a|OVERFLOW|FAIL|INCRBY|u1|0|100", "MULTI", "GET|a", "EXEC", "STRLEN|a",
        "SET|b|x", "WATCH|b", "BITFIELD|b|OVERFLOW|FAIL|SET|u8|24|-3", "MULTI", "STRLEN|b", "EXEC",
    ),
    "MATCH * filters nothing, not even the empty key": _case(
        "SET||v", "SCAN|0|MATCH|*", "SADD|s|", "SSCAN|s|0|MATCH|*", "HSET|h||v", "HSCAN|h|0|MATCH|*",
    ),
    # strtoul: a sign is allowed, the empty string is 0; a space, text, or more than 64 bits is an invalid cursor.
    "SCAN cursors as strtoul reads them": _case(
        "SADD|s|a",
        "SCAN|",
        "SCAN|-0",
        "SCAN|+0",
        "SCAN| 0",
        "SCAN|18446744073709551616",
        "SCAN|-",
        "SCAN||COUNT|0",
        "SSCAN|s|",
        "SSCAN|s|x",
        "HSCAN|nokey|+0",
        "ZSCAN|s|-0",
    ),
    "Redis's order of checks": _case(
        "SET|str|v", "SADD|s|m", "HSET|h|f|v",
        "GETEX|nokey|EX|01", "GETEX|nokey|PX|x|BOGUS", "GETEX|h|EX|x", "GETEX|str|EX|x",
        "LINDEX|nokey|x", "LINDEX|str|x", "LSET|nokey|x|v", "LSET|str|x|v",
        "SMOVE|nokey|str|m", "SMOVE|s|str|x", "SORT|str|BOGUS", "SORT|str|LIMIT|x|1",
        "SPOP|str|x", "SPOP|s|1|2", "MEMORY|USAGE|nokey|SAMPLES|x", "MEMORY|USAGE|nokey|SAMPLES|-1",
        "MEMORY|USAGE|nokey|BOGUS", "MEMORY|USAGE|nokey|SAMPLES", "CLIENT|UNBLOCK|x|BAD",
        "MULTI", "LPOP|nokey|1|2", "RPOP|nokey|-1|2", "EXEC",
    ),
    "errors quote an argument up to its NUL": _case(
        b"NOSUCH|a\x00b|\x00c", b"\x00x|a", b"EXPIRE|k|1|x\x00y", b"HELLO|2|\x00", b"CONFIG|SET|no\x00such|1",
        b"CONFIG|B\x00LA", b"OBJECT|\x00|k", b"CLIENT|KILL|TYPE|\x00x", b"CLIENT|KILL|TYPE|master",
        b"CLIENT|KILL|USER|nobody\x00",
    ),
    "HELLO sets the name before a later option fails": _case(
        "HELLO|3|SETNAME|first|BOGUS", "CLIENT|GETNAME", "HELLO|2|SETNAME|second|AUTH|nobody|pw", "CLIENT|GETNAME",
    ),
    "LPOS's RANK at LONG_MIN": _case(
        "RPUSH|l|a|b|a|c",
        "LPOS|l|a|RANK|-9223372036854775808",
        "LPOS|l|a|RANK|-9223372036854775808|COUNT|1",
        "LPOS|l|a|RANK|-9223372036854775808|COUNT|0",
        "LPOS|nokey|a|RANK|-9223372036854775808",
    ),
    "CONFIG SET maxmemory as memtoull reads it": _case(
        "CONFIG|SET|maxmemory|",
        "CONFIG|GET|maxmemory",
        "CONFIG|SET|maxmemory|18446744073709551616",
        "CONFIG|GET|maxmemory",
        "CONFIG|SET|maxmemory|18446744073709551616k",
        "CONFIG|GET|maxmemory",
        "CONFIG|SET|maxmemory| 1",
        "CONFIG|SET|maxmemory|1|hz",
        "CONFIG|GET|hash-max-listpack-entries",
        "CONFIG|SET|maxmemory|0",
    ),
    # Redis quotes key, group and option names with %s: up to the first NUL.
    "stream errors quote C strings": _case(
        b"XREADGROUP|GROUP|g1|c1|STREAMS|k\x00\r\n|>", b"XPENDING|k\x00x|g\x00y", b"XCLAIM|k\x00|g|c|0|1-1",
        b"XAUTOCLAIM|k\x00|g|c|0|0", b"XGROUP|CREATECONSUMER|k\x00x|g|c", b"XADD|k|1-1|f|v",
        b"XCLAIM|k\x00|g|c|0|1-1", b"XGROUP|CREATE|k|g|0", b"XCLAIM|k|g|c|0|1-1|BOGUS\x00x",
        b"XINFO|CONSUMERS|k\x00x|g\x00y", b"XGROUP|SETID|k|g\x00y|0", b"XINFO|STREAM|k|FULL|BOGUS\x00x",
    ),
    # streamParseAddOrTrimArgsOrReply reads the id among the options, before XADD checks its arity; as a C string.
    "XADD checks its id before its arity": _case(
        "XADD|k|MAXLEN|1|x|f|v|BOGUS", "XADD|k|x", "XADD|k|MAXLEN|1|x", "XADD|k|1-1|f", "XADD|k|0-0|f",
        b"XADD|k|1-1\x00x|f|v", b"XADD|k|*\x00x|f", b"XADD|k|MAXLEN\x00x|=\x00|1|2-*|f|v", "XADD|k|2-1-*|f|v",
        "XADD|k|-*|f|v", "XRANGE|k|-|+",
    ),
    # With "~" a node goes whole or not at all: the last one too, when the stream may be left shorter than a node.
    "XTRIM ~ removes whole nodes, the last partial one too": _case(
        "XADD|s|1-1|f|v", "XTRIM|s|MAXLEN|~|0", "XADD|s|2-1|f|v", "XADD|s|3-1|f|v", "XTRIM|s|MINID|~|3|LIMIT|2",
        "XTRIM|s|MINID|~|4|LIMIT|1", "XTRIM|s|MINID|~|4|LIMIT|0", "XADD|s|4-1|f|v", "XTRIM|s|MAXLEN|~|1",
        "XADD|s|MAXLEN|~|0|5-1|f|v", "XLEN|s",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    """(redis-server's port, this server's port), both running for the module."""
    with both_servers() as both:
        yield both


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("proto", [2, 3])
def test_replies_are_redis_own(ports: tuple[int, int], name: str, proto: int) -> None:
    expected = replies(ports[0], proto, CASES[name])
    assert replies(ports[1], proto, CASES[name]) == expected


def test_a_refusal_in_subscribed_mode_names_the_subcommand(ports: tuple[int, int]) -> None:
    # RESP2's subscribed mode: an unknown command, a wrong arity and an unknown subcommand are refused as such first.
    case = _case(
        "SUBSCRIBE|ch", "PUBSUB|NUMSUB|ch", "PUBSUB|BOGUS", "GET", "NOSUCH|x", "CONFIG|GET|hz", "UNSUBSCRIBE|ch"
    )
    assert replies(ports[1], 2, case) == replies(ports[0], 2, case)


def test_an_unimplemented_command_answers_as_redis_answers_an_unknown_one(ports: tuple[int, int]) -> None:
    # Every command Redis 7.0 has that this server answers as unknown must answer exactly as a redis-server on which
    # those commands are renamed away (so unknown to it too): the same error, the same quoted arguments.
    reference = RawClient(ports[0])
    try:
        (_, listed), _ = parse_reply(reference.call("COMMAND", "LIST"))
    finally:
        reference.close()
    assert isinstance(listed, tuple)
    names = sorted(name for _, name in listed if isinstance(name, bytes) and b"|" not in name)
    known = {*KEYSPACE, *SESSION_COMMANDS, *SESSION_ARITY}
    unknown = [[name.upper(), b"k", b"v\x00w"] for name in names if name.upper() not in known]
    assert 0 < len(unknown) < len(names) // 2
    ours = RawClient(ports[1])
    try:
        renames = [option for p in unknown for option in ("--rename-command", p[0].decode(), "")]
        with redis_server(*renames) as stripped_port:
            stripped = RawClient(stripped_port)
            try:
                for probe in (unknown, [[p[0].lower(), *p[1:]] for p in unknown]):
                    assert ours.run(probe) == stripped.run(probe)
            finally:
                stripped.close()
    finally:
        ours.close()
