"""RespSession on its own: replies to commands, MULTI/EXEC, HELLO, expiry, backpressure, the fast path (sans-I/O).

Expected replies were taken from a real redis-server 7.0 given the same bytes, except where this server
differs on purpose (one database, a short CONFIG table, minimal COMMAND answers).
"""

from __future__ import annotations

import sys
import tracemalloc
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resp_server import _compiled
from resp_server import parser as resp_proto
from resp_server.containers import _hset
from resp_server.parser import MAX_ARRAY, MAX_BULK, RespParser, encode_request
from resp_server.replies import Reply, arity_error
from resp_server.server_state import ServerState
from resp_server.session import _DISPATCH, RespSession, _run_fast
from resp_server.store import KeyValueStore
from resp_server.tests.test_store import FakeClock
from resp_server.values import WRONGTYPE

resp_proto_split = resp_proto.split_inline


def cmd(*args: str | bytes) -> bytes:
    return encode_request([a.encode() if isinstance(a, str) else a for a in args])


def feed_all(parser: RespParser, chunks: list[bytes]) -> list[list[bytes]]:
    commands: list[list[bytes]] = []
    for chunk in chunks:
        commands.extend(parser.feed(chunk))
    return commands


# -- session ----------------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000_000)


@pytest.fixture
def session(clock: FakeClock) -> RespSession:
    return RespSession(KeyValueStore(clock))


def ask(session: RespSession, *requests: bytes) -> bytes:
    reply, close = session.receive(b"".join(requests))
    assert not close
    return reply


def test_replies_to_a_pipeline_come_back_together_in_order(session: RespSession) -> None:
    reply = ask(session, cmd("SET", "a", "1"), cmd("INCR", "a"), cmd("GET", "a"), cmd("GET", "nope"))
    assert reply == b"+OK\r\n:2\r\n$1\r\n2\r\n$-1\r\n"


def test_incomplete_request_waits_for_more(session: RespSession) -> None:
    data = cmd("ECHO", "hello")
    assert session.receive(data[:-3]) == (b"", False)
    assert session.receive(data[-3:]) == (b"$5\r\nhello\r\n", False)


@pytest.mark.parametrize(
    ("requests", "replies"),
    [
        (
            [cmd("PING"), cmd("PING", "hi"), cmd("ping", "a", "b")],
            b"+PONG\r\n$2\r\nhi\r\n-ERR wrong number of arguments for 'ping' command\r\n",
        ),
        ([cmd("ECHO", ""), cmd("ECHO")], b"$0\r\n\r\n-ERR wrong number of arguments for 'echo' command\r\n"),
        ([cmd("GET", "k"), cmd("SET", "k", "v"), cmd("get", "k")], b"$-1\r\n+OK\r\n$1\r\nv\r\n"),
        ([cmd("GET"), cmd("GET", "a", "b")], b"-ERR wrong number of arguments for 'get' command\r\n" * 2),
        (
            [
                cmd("SET", "k", "v", "NX"),
                cmd("SET", "k", "w", "NX"),
                cmd("SET", "k", "z", "XX"),
                cmd("SET", "q", "z", "XX"),
                cmd("GET", "k"),
                cmd("GET", "q"),
            ],
            b"+OK\r\n$-1\r\n+OK\r\n$-1\r\n$1\r\nz\r\n$-1\r\n",
        ),
        (
            [
                cmd("SET", "k", "v", "GET"),
                cmd("SET", "k", "w", "GET"),
                cmd("SET", "k", "y", "NX", "GET"),
                cmd("SET", "n", "y", "XX", "GET"),
                cmd("GET", "k"),
            ],
            b"$-1\r\n$1\r\nv\r\n$1\r\nw\r\n$-1\r\n$1\r\nw\r\n",
        ),
        (
            [
                cmd("SET", "k", "v", "NX", "XX"),
                cmd("SET", "k", "v", "EX", "10", "PX", "10"),
                cmd("SET", "k", "v", "KEEPTTL", "EX", "1"),
                cmd("SET", "k", "v", "EX"),
                cmd("SET", "k", "v", "FOO"),
            ],
            b"-ERR syntax error\r\n" * 5,
        ),
        (
            [
                cmd("SET", "k", "v", "EX", "0"),
                cmd("SET", "k", "v", "PX", "-5"),
                cmd("SET", "k", "v", "EX", "9223372036854776"),
                cmd("SET", "k", "v", "EX", "x"),
                cmd("EXISTS", "k"),
            ],
            b"-ERR invalid expire time in 'set' command\r\n" * 3
            + b"-ERR value is not an integer or out of range\r\n:0\r\n",
        ),
        (
            [
                cmd("DEL", "a", "b"),
                cmd("SET", "a", "1"),
                cmd("MSET", "b", "2", "c", "3"),
                cmd("EXISTS", "a", "a", "b", "z"),
                cmd("DEL", "a", "b", "z"),
                cmd("MGET", "a", "b", "c", "z"),
            ],
            b":0\r\n+OK\r\n+OK\r\n:3\r\n:2\r\n*4\r\n$-1\r\n$-1\r\n$1\r\n3\r\n$-1\r\n",
        ),
        (
            [cmd("MSET", "a", "1", "b"), cmd("MSET", "a"), cmd("MGET"), cmd("DEL"), cmd("EXISTS")],
            b"-ERR wrong number of arguments for 'mset' command\r\n" * 2
            + b"-ERR wrong number of arguments for 'mget' command\r\n"
            + b"-ERR wrong number of arguments for 'del' command\r\n"
            + b"-ERR wrong number of arguments for 'exists' command\r\n",
        ),
        (
            [
                cmd("INCR", "i"),
                cmd("INCR", "i"),
                cmd("DECR", "i"),
                cmd("INCRBY", "i", "10"),
                cmd("INCRBY", "i", "-100"),
                cmd("DECRBY", "i", "5"),
                cmd("GET", "i"),
            ],
            b":1\r\n:2\r\n:1\r\n:11\r\n:-89\r\n:-94\r\n$3\r\n-94\r\n",
        ),
        (
            [
                cmd("SET", "i", "abc"),
                cmd("INCR", "i"),
                cmd("SET", "i", " 1"),
                cmd("INCR", "i"),
                cmd("SET", "i", "01"),
                cmd("INCR", "i"),
                cmd("INCRBY", "i", "1.5"),
                cmd("SET", "i", "99999999999999999999"),
                cmd("INCR", "i"),
            ],
            (b"+OK\r\n-ERR value is not an integer or out of range\r\n" * 3)
            + b"-ERR value is not an integer or out of range\r\n"
            + b"+OK\r\n-ERR value is not an integer or out of range\r\n",
        ),
        (
            [
                cmd("SET", "i", "-9223372036854775808"),
                cmd("DECR", "i"),
                cmd("INCRBY", "i", "9223372036854775807"),
                cmd("INCR", "i"),
                cmd("INCR", "i"),
                cmd("INCRBY", "i", "9223372036854775808"),
                cmd("DECRBY", "i", "-9223372036854775808"),
            ],
            b"+OK\r\n-ERR increment or decrement would overflow\r\n:-1\r\n:0\r\n:1\r\n"
            b"-ERR value is not an integer or out of range\r\n-ERR decrement would overflow\r\n",
        ),
        (
            [
                cmd("MSET", "user:1", "a", "user:2", "b", "uxer", "c", "u", "d", "user:10", "e"),
                cmd("KEYS", "nomatch"),
                cmd("DBSIZE"),
            ],
            b"+OK\r\n*0\r\n:5\r\n",
        ),
        (
            [cmd("SELECT", "0"), cmd("SELECT", "1"), cmd("SELECT", "x"), cmd("SELECT", "99999999999")],
            b"+OK\r\n-ERR DB index is out of range\r\n-ERR value is not an integer or out of range\r\n"
            b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n",
        ),
        (
            [
                cmd("SET", "a", "1"),
                cmd("FLUSHDB", "ASYNC"),
                cmd("DBSIZE"),
                cmd("SET", "a", "1"),
                cmd("FLUSHALL", "sync"),
                cmd("FLUSHALL"),
                cmd("FLUSHDB", "x"),
                cmd("FLUSHDB", "a", "b"),
                cmd("DBSIZE"),
            ],
            b"+OK\r\n+OK\r\n:0\r\n+OK\r\n+OK\r\n+OK\r\n-ERR syntax error\r\n-ERR syntax error\r\n:0\r\n",
        ),
        (
            [
                cmd("CONFIG", "GET", "save"),
                cmd("CONFIG", "get", "appendonly"),
                cmd("CONFIG", "GET", "SAVE", "data*"),
                cmd("CONFIG", "GET", "nothing"),
            ],
            b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
            b"*4\r\n$4\r\nsave\r\n$0\r\n\r\n$9\r\ndatabases\r\n$1\r\n1\r\n*0\r\n",
        ),
        (
            [cmd("CONFIG", "GET"), cmd("CONFIG", "xx"), cmd("CONFIG")],
            b"-ERR wrong number of arguments for 'config|get' command\r\n"
            b"-ERR unknown subcommand 'xx'. Try CONFIG HELP.\r\n"
            b"-ERR wrong number of arguments for 'config' command\r\n",
        ),
        (
            [
                cmd("COMMAND"),
                cmd("COMMAND", "DOCS"),
                cmd("COMMAND", "DOCS", "get"),
                cmd("COMMAND", "INFO", "get", "x"),
                cmd("COMMAND", "COUNT", "x"),
                cmd("COMMAND", "foo"),
            ],
            b"*0\r\n*0\r\n*0\r\n*2\r\n$-1\r\n$-1\r\n-ERR wrong number of arguments for 'command|count' command\r\n"
            b"-ERR unknown subcommand 'foo'. Try COMMAND HELP.\r\n",
        ),
        (
            [cmd("FOO"), cmd("foo", "a", "b"), cmd("\nd\n"), cmd("x", "a" * 200)],
            b"-ERR unknown command 'FOO', with args beginning with: \r\n"
            b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
            b"-ERR unknown command ' d ', with args beginning with: \r\n"
            b"-ERR unknown command 'x', with args beginning with: '" + b"a" * 128 + b"' \r\n",
        ),
    ],
)
def test_command_replies_match_redis(session: RespSession, requests: list[bytes], replies: bytes) -> None:
    assert ask(session, *requests) == replies


def test_command_count_counts_every_command(session: RespSession) -> None:
    count = int(ask(session, cmd("COMMAND", "COUNT"))[1:-2])
    names = ["PING", "ECHO", "GET", "SET", "DEL", "EXISTS", "INCR", "DECR", "INCRBY", "DECRBY", "MGET", "MSET"]
    names += ["EXPIRE", "PEXPIRE", "TTL", "PTTL", "KEYS", "DBSIZE", "FLUSHDB", "FLUSHALL", "SELECT", "CONFIG"]
    names += ["COMMAND", "HELLO", "QUIT", "MULTI", "EXEC", "DISCARD"]
    assert count == len(names)
    for name in names:
        if name != "QUIT":
            assert b"unknown command" not in ask(session, cmd(name))


def test_hello_switches_between_resp2_and_resp3(session: RespSession) -> None:
    fields = (
        b"$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:%d\r\n"
        b"$2\r\nid\r\n:%d\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
    )
    me = session.client_id
    assert ask(session, cmd("HELLO")) == b"*14\r\n" + fields % (2, me)
    assert ask(session, cmd("HELLO", "3", "SETNAME", "app")) == b"%7\r\n" + fields % (3, me)
    assert session.name == b"app"
    # RESP3 from here: a map where RESP2 has a flat array, a set where it has an array.
    assert ask(session, cmd("HSET", "h", "f", "v"), cmd("HGETALL", "h")) == b":1\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    assert ask(session, cmd("SADD", "s", "m"), cmd("SMEMBERS", "s")) == b":1\r\n~1\r\n$1\r\nm\r\n"
    assert ask(session, cmd("HELLO", "2")) == b"*14\r\n" + fields % (2, me)
    assert ask(session, cmd("HGETALL", "h")) == b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    assert ask(session, cmd("HELLO", "4"), cmd("HELLO", "x"), cmd("HELLO", "2", "AUTH", "u", "p")) == (
        b"-NOPROTO unsupported protocol version\r\n"
        b"-ERR Protocol version is not an integer or out of range\r\n"
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    )


def test_keys_uses_redis_glob(session: RespSession) -> None:
    ask(session, cmd("MSET", "user:1", "a", "user:2", "b", "uxer", "c", "u", "d", "user:10", "e", "", "empty"))

    def keys(pattern: str) -> set[bytes]:
        reply = ask(session, cmd("KEYS", pattern))
        return set(reply.split(b"\r\n")[2::2])

    assert keys("user:?") == {b"user:1", b"user:2"}
    assert keys("u*") == {b"user:1", b"user:2", b"uxer", b"u", b"user:10"}
    assert keys("u[sx]er*") == {b"user:1", b"user:2", b"uxer", b"user:10"}
    assert keys("u[^s]er") == {b"uxer"}
    assert keys("*") == {b"user:1", b"user:2", b"uxer", b"u", b"user:10", b""}  # '*' lists the empty key too
    assert keys("**") == {b"user:1", b"user:2", b"uxer", b"u", b"user:10"}


def test_ttl_pttl_and_expiry(session: RespSession, clock: FakeClock) -> None:
    assert ask(session, cmd("TTL", "k"), cmd("PTTL", "k")) == b":-2\r\n:-2\r\n"
    assert ask(session, cmd("SET", "k", "v"), cmd("TTL", "k"), cmd("PTTL", "k")) == b"+OK\r\n:-1\r\n:-1\r\n"
    assert ask(session, cmd("EXPIRE", "k", "10"), cmd("TTL", "k"), cmd("PTTL", "k")) == b":1\r\n:10\r\n:10000\r\n"
    clock.now += 9_499
    assert ask(session, cmd("TTL", "k"), cmd("PTTL", "k")) == b":1\r\n:501\r\n"  # TTL rounds to nearest
    clock.now += 501
    assert ask(session, cmd("TTL", "k"), cmd("PTTL", "k"), cmd("GET", "k")) == b":0\r\n:0\r\n$1\r\nv\r\n"
    clock.now += 1
    assert ask(session, cmd("TTL", "k"), cmd("GET", "k"), cmd("EXISTS", "k")) == b":-2\r\n$-1\r\n:0\r\n"


def test_set_expiry_options(session: RespSession, clock: FakeClock) -> None:
    assert ask(session, cmd("SET", "a", "v", "EX", "100"), cmd("PTTL", "a")) == b"+OK\r\n:100000\r\n"
    assert ask(session, cmd("SET", "a", "v", "px", "1500"), cmd("PTTL", "a")) == b"+OK\r\n:1500\r\n"
    at = clock.now // 1000 + 50
    assert ask(session, cmd("SET", "a", "v", "EXAT", str(at)), cmd("PTTL", "a")) == b"+OK\r\n:%d\r\n" % (
        at * 1000 - clock.now
    )
    assert ask(session, cmd("SET", "a", "v", "PXAT", str(clock.now + 7)), cmd("PTTL", "a")) == b"+OK\r\n:7\r\n"
    assert ask(session, cmd("SET", "a", "w", "KEEPTTL"), cmd("PTTL", "a")) == b"+OK\r\n:7\r\n"
    assert ask(session, cmd("SET", "a", "w"), cmd("PTTL", "a")) == b"+OK\r\n:-1\r\n"
    assert ask(session, cmd("SET", "a", "v", "EX", "1", "EX", "2"), cmd("TTL", "a")) == b"+OK\r\n:2\r\n"
    assert ask(session, cmd("SET", "b", "v", "PXAT", "1"), cmd("GET", "b")) == b"+OK\r\n$-1\r\n"  # in the past


def test_incr_keeps_the_ttl(session: RespSession) -> None:
    assert (
        ask(session, cmd("SET", "n", "1", "EX", "100"), cmd("INCR", "n"), cmd("TTL", "n")) == b"+OK\r\n:2\r\n:100\r\n"
    )
    assert ask(session, cmd("MSET", "n", "5"), cmd("TTL", "n")) == b"+OK\r\n:-1\r\n"


def test_expire_and_pexpire(session: RespSession, clock: FakeClock) -> None:
    assert ask(session, cmd("EXPIRE", "nokey", "10")) == b":0\r\n"
    ask(session, cmd("SET", "k", "v"))
    assert ask(session, cmd("EXPIRE", "k", "100", "XX"), cmd("EXPIRE", "k", "100", "NX")) == b":0\r\n:1\r\n"
    assert ask(session, cmd("EXPIRE", "k", "200", "NX"), cmd("EXPIRE", "k", "50", "GT")) == b":0\r\n:0\r\n"
    assert ask(session, cmd("EXPIRE", "k", "500", "gt"), cmd("EXPIRE", "k", "600", "LT")) == b":1\r\n:0\r\n"
    assert ask(session, cmd("EXPIRE", "k", "60", "lt"), cmd("TTL", "k")) == b":1\r\n:60\r\n"
    assert ask(session, cmd("PEXPIRE", "k", "1234"), cmd("PTTL", "k")) == b":1\r\n:1234\r\n"
    ask(session, cmd("SET", "p", "v"))
    assert ask(session, cmd("EXPIRE", "p", "100", "GT"), cmd("EXPIRE", "p", "100", "LT")) == b":0\r\n:1\r\n"
    assert ask(session, cmd("EXPIRE", "p", "0"), cmd("EXISTS", "p")) == b":1\r\n:0\r\n"  # not in the future
    assert ask(session, cmd("SET", "p", "v"), cmd("PEXPIRE", "p", "-5"), cmd("GET", "p")) == b"+OK\r\n:1\r\n$-1\r\n"


def test_expire_errors(session: RespSession) -> None:
    assert ask(
        session,
        cmd("EXPIRE", "k", "x"),
        cmd("EXPIRE", "k", "1", "foo\r\n"),
        cmd("EXPIRE", "k", "1", "nx", "gt"),
        cmd("EXPIRE", "k", "1", "gt", "lt"),
        cmd("EXPIRE", "k"),
        cmd("EXPIRE", "k", "-9223372036854776"),
        cmd("PEXPIRE", "k", "9223372036854775807"),
        cmd("PEXPIRE", "k", "-9223372036854775808"),
    ) == (
        b"-ERR value is not an integer or out of range\r\n"
        b"-ERR Unsupported option foo\r\n"
        b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"
        b"-ERR GT and LT options at the same time are not compatible\r\n"
        b"-ERR wrong number of arguments for 'expire' command\r\n"
        b"-ERR invalid expire time in 'expire' command\r\n"
        b"-ERR invalid expire time in 'pexpire' command\r\n"
        b":0\r\n"
    )


def test_quit_replies_ok_closes_and_ignores_the_rest(session: RespSession) -> None:
    assert session.receive(cmd("SET", "a", "1") + cmd("QUIT") + cmd("SET", "b", "2")) == (b"+OK\r\n+OK\r\n", True)
    assert session.receive(cmd("PING")) == (b"", True)
    assert session.store.get(b"b") is None


def test_protocol_error_answers_earlier_commands_then_closes(session: RespSession) -> None:
    reply, close = session.receive(cmd("PING") + b"*1\r\n$x\r\n" + cmd("PING"))
    assert (reply, close) == (b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n", True)
    assert session.receive(cmd("PING")) == (b"", True)


def test_protocol_error_reply_is_one_line(session: RespSession) -> None:
    reply, close = session.receive(b"*1\r\n\n")
    assert close
    assert reply == b"-ERR Protocol error: expected '$', got ' '\r\n"


def test_multi_exec(session: RespSession) -> None:
    assert (
        ask(
            session,
            cmd("MULTI"),
            cmd("SET", "a", "1"),
            cmd("INCR", "a"),
            cmd("INCR", "nokey"),
            cmd("GET", "a"),
            cmd("EXEC"),
        )
        == b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n+OK\r\n:2\r\n:1\r\n$1\r\n2\r\n"
    )
    assert ask(session, cmd("EXEC"), cmd("DISCARD")) == b"-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n"
    # a runtime error inside EXEC is one element of the array; the rest still runs
    assert ask(session, cmd("MULTI"), cmd("SET", "s", "x"), cmd("INCR", "s"), cmd("EXEC")) == (
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n"
    )
    assert ask(session, cmd("MULTI"), cmd("EXEC")) == b"+OK\r\n*0\r\n"


def test_multi_discard_and_aborts(session: RespSession) -> None:
    assert ask(session, cmd("MULTI"), cmd("SET", "a", "1"), cmd("DISCARD"), cmd("GET", "a")) == (
        b"+OK\r\n+QUEUED\r\n+OK\r\n$-1\r\n"
    )
    assert ask(session, cmd("MULTI"), cmd("MULTI"), cmd("SET", "a", "1"), cmd("FOO"), cmd("EXEC"), cmd("GET", "a")) == (
        b"+OK\r\n-ERR MULTI calls can not be nested\r\n+QUEUED\r\n"
        b"-ERR unknown command 'FOO', with args beginning with: \r\n"
        b"-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n"
    )
    assert ask(session, cmd("MULTI"), cmd("GET"), cmd("PING"), cmd("EXEC")) == (
        b"+OK\r\n-ERR wrong number of arguments for 'get' command\r\n+QUEUED\r\n"
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    )
    assert ask(session, cmd("MULTI"), cmd("EXEC", "x"), cmd("EXEC")) == (
        b"+OK\r\n-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n"
        b"-ERR EXEC without MULTI\r\n"
    )


def test_quit_inside_multi_closes_at_once(session: RespSession) -> None:
    assert session.receive(cmd("MULTI") + cmd("QUIT") + cmd("PING")) == (b"+OK\r\n+OK\r\n", True)


def test_inline_commands_run_like_multibulk(session: RespSession) -> None:
    reply = ask(session, b'PING\r\nPING\nECHO hello\r\nSET "a b" \'c d\'\r\nGET "a b"\r\n   \r\n')
    assert reply == b"+PONG\r\n+PONG\r\n$5\r\nhello\r\n+OK\r\n$3\r\nc d\r\n"


# -- fast path --------------------------------------------------------------------------------------------
# RespParser.feed frames well-formed requests from CRLF-separated lines and hands everything else to the general
# parser. Fed one byte at a time, no chunk holds a CRLF, so the fast path never frames a command and the general
# parser does all the work: that is the reference the fast path must match.


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def replies_to(chunks: list[bytes], limits: tuple[int, int]) -> tuple[bytes, bool]:
    max_bulk, max_array = limits
    session = RespSession(KeyValueStore(FakeClock(1_700_000_000_000)), max_bulk=max_bulk, max_array=max_array)
    replies = b""
    close = False
    for chunk in chunks:
        reply, close = session.receive(chunk)
        replies += reply
    return replies, close


_names = st.sampled_from(
    [
        *b"PING ping PiNg ECHO GET get SET Set DEL EXISTS INCR MGET MSET EXPIRE TTL".split(),
        *b"MULTI multi EXEC DISCARD QUIT FOO".split(),
        b"",
    ]
)
_arg = st.one_of(
    st.sampled_from([b"k", b"K", b"1", b"-1", b"EX", b"10", b"NX", b"GET"]),
    st.binary(max_size=10),  # empty, binary, CR and LF
    st.sampled_from([b"a\r\nb", b"\r\n", b"\r\n$1\r\nx", b"\n", b"\r"]),  # what trips a CRLF splitter
)
_multibulk = st.builds(lambda name, args: encode_request([name, *args]), _names, st.lists(_arg, max_size=5))
_inline_word = st.sampled_from([b"PING", b"get", b"SET", b"k", b"v", b'"a b"', b"'c'", b'"x\\n"', b"*", b"$1"])
_inline = st.builds(
    lambda words, end: b" ".join(words) + end,
    st.lists(_inline_word, max_size=4),
    st.sampled_from([b"\r\n", b"\n", b"\r\r\n"]),
)
_malformed = st.sampled_from(
    [
        *(b"*0\r\n", b"*-1\r\n", b"*01\r\n", b"*1\r\n$x\r\n", b"*1\r\n$01\r\nx\r\n", b"*1\r\n$4\r\nPINGxx\r\n"),
        *(b"*2\r\n$3\r\nGET\r\n:1\r\n", b"*3\r\n$3\r\nSET\r\n", b"*9\r\n$4\r\nPING\r\n", b'GET "a\r\n'),
    ]
)
_requests = st.lists(st.one_of(_multibulk, _multibulk, _multibulk, _inline, _malformed), max_size=8)
_limits = st.sampled_from([(MAX_BULK, MAX_ARRAY), (4, 3)])


@settings(max_examples=150, deadline=None)
@given(_requests, _limits)
def test_fast_path_replies_like_the_general_parser(requests: list[bytes], limits: tuple[int, int]) -> None:
    data = b"".join(requests)
    expected = replies_to(one_byte_at_a_time(data), limits)
    assert replies_to([data], limits) == expected
    for cut in range(len(data) + 1):
        assert replies_to([data[:cut], data[cut:]], limits) == expected


@settings(max_examples=200)
@given(_requests, _limits, st.integers(0, 1000))
def test_fast_path_frames_like_the_general_parser(requests: list[bytes], limits: tuple[int, int], cut: int) -> None:
    data = b"".join(requests)
    cut %= len(data) + 1
    max_bulk, max_array = limits
    reference = RespParser(max_bulk, max_array)
    expected = feed_all(reference, one_byte_at_a_time(data))
    for chunks in ([data], [data[:cut], data[cut:]]):
        parser = RespParser(max_bulk, max_array)
        assert (feed_all(parser, chunks), parser.error) == (expected, reference.error)


def test_fast_path_frames_common_requests_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # The general parser is not needed for a pipeline of ordinary requests, arrays of up to 64 short bulks. (A blank
    # line is not one: the general parser skips a run of them at once.)
    def general(self: RespParser, data: bytes) -> list[list[bytes]]:
        raise AssertionError(f"the general parser was given {data!r}")

    monkeypatch.setattr(RespParser, "_feed_stream", general)
    commands = [[b"PING"], [b"GET", b"k"], [b"SET", b"k", b""], [b"MSET", b"a", b"1", b"b", b"x" * 1023]]
    commands.append([b"%d" % n for n in range(64)])
    data = b"".join(encode_request(c) for c in commands) + b"PING\r\nSET k 'v w'\r\n"
    assert RespParser().feed(data * 3) == [*commands, [b"PING"], [b"SET", b"k", b"v w"]] * 3


def test_fast_path_hands_over_what_it_cannot_frame() -> None:
    long = b"x" * 5000  # longer than the fast path's table of bulk headers
    data = cmd("SET", "k", long) + cmd("ECHO", "a\r\nb") + b"PING\nPING\r\n" + cmd(*["x"] * 65) + cmd("GET", "k")
    expected = [[b"SET", b"k", long], [b"ECHO", b"a\r\nb"], [b"PING"], [b"PING"], [b"x"] * 65, [b"GET", b"k"]]
    assert RespParser().feed(cmd("PING") + data) == [[b"PING"], *expected]
    parser = RespParser()
    assert parser.feed(cmd("PING") + data[:-3]) == [[b"PING"], *expected[:-1]]
    assert parser.feed(data[-3:]) == expected[-1:]


def test_fast_path_keeps_the_limits() -> None:
    parser = RespParser(max_bulk=3, max_array=2)
    assert parser.feed(cmd("GET", "abc") + cmd("GET", "abcd")) == [[b"GET", b"abc"]]
    assert parser.error == "Protocol error: invalid bulk length"
    parser = RespParser(max_bulk=3, max_array=2)
    assert parser.feed(cmd("GET", "a") + cmd("SET", "a", "b")) == [[b"GET", b"a"]]
    assert parser.error == "Protocol error: invalid multibulk length"


def test_commands_in_any_case_run_the_same(session: RespSession) -> None:
    assert ask(session, cmd("set", "k", "v"), cmd("GeT", "k"), b"get k\r\n", cmd("get")) == (
        b"+OK\r\n$1\r\nv\r\n$1\r\nv\r\n-ERR wrong number of arguments for 'get' command\r\n"
    )
    assert ask(session, cmd("multi"), cmd("Get", "k"), cmd("exec")) == b"+OK\r\n+QUEUED\r\n*1\r\n$1\r\nv\r\n"


# -- backpressure: serve() hands out replies a limit at a time, big values uncopied -------------------------------

BIG = b"v" * 100_000  # a value of 100 KB


def as_chunks(out: bytes | list[bytes | memoryview]) -> list[bytes | memoryview]:
    return ([out] if out else []) if isinstance(out, bytes) else out


def serve_all(session: RespSession, data: bytes, limit: int) -> tuple[list[bytes | memoryview], list[int], bool]:
    """Every chunk ``serve`` hands out for ``data``, calling again while it is busy; also the bytes of each call."""
    out, close = session.serve(data, limit)
    chunks = as_chunks(out)
    sizes = [sum(map(len, chunks))]
    while session.busy:
        assert not close
        out, close = session.serve(b"", limit)
        more = as_chunks(out)
        assert more, "busy, yet nothing handed out"
        chunks += more
        sizes.append(sum(map(len, more)))
    return chunks, sizes, close


def test_serve_stops_at_the_limit_and_goes_on_where_it_stopped(session: RespSession) -> None:
    session.store.set(b"big", BIG)
    data = cmd("GET", "big") * 100 + cmd("PING")
    chunks, sizes, close = serve_all(session, data, 1024 * 1024)
    assert b"".join(chunks) == (b"$100000\r\n" + BIG + b"\r\n") * 100 + b"+PONG\r\n"
    assert not close
    assert len(sizes) >= 10
    assert max(sizes) <= 1024 * 1024 + 100_020  # at most one value past the limit


def test_serve_hands_out_a_big_value_itself_not_a_copy(session: RespSession) -> None:
    session.store.set(b"big", BIG)
    out, _ = session.serve(cmd("GET", "big") + cmd("MGET", "big", "nope", "big"), 1024 * 1024)
    chunks = as_chunks(out)
    assert [chunk for chunk in chunks if len(chunk) == len(BIG)] == [BIG, BIG, BIG]
    assert all(chunk is BIG for chunk in chunks if len(chunk) == len(BIG))
    assert b"".join(chunks) == b"$100000\r\n%b\r\n*3\r\n$100000\r\n%b\r\n$-1\r\n$100000\r\n%b\r\n" % (BIG, BIG, BIG)


def test_a_value_longer_than_the_limit_is_handed_out_in_slices(session: RespSession) -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    session.store.set(b"k", value)
    chunks, sizes, _ = serve_all(session, cmd("GET", "k"), 100_000)
    assert b"".join(chunks) == b"$1048576\r\n" + value + b"\r\n"
    assert max(map(len, chunks)) == 100_000
    assert max(sizes) <= 100_000 + 20


def test_one_mget_of_many_big_values_is_never_joined(session: RespSession) -> None:
    for i in range(1000):
        session.store.set(b"k%d" % i, BIG)
    request = cmd("MGET", *[b"k%d" % i for i in range(1000)])  # asks for 100 MB
    tracemalloc.start()
    try:
        out, _ = session.serve(request, 1024 * 1024)
        total = sum(map(len, as_chunks(out)))
        while session.busy:
            out, _ = session.serve(b"", 1024 * 1024)
            total += sum(map(len, as_chunks(out)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == len(b"*1000\r\n") + 1000 * len(b"$100000\r\n\r\n") + 1000 * len(BIG)
    assert peak < 2 * 1024 * 1024  # the values are handed out as they are stored, never copied or joined


def test_serve_runs_a_long_pipeline_a_step_at_a_time(session: RespSession) -> None:
    session.store.set(b"k", b"x" * 10_000)
    data = cmd("GET", "k") * 1000  # 10 MB of replies from 24 KB of requests
    out, close = session.serve(data, 100_000)
    assert 100_000 <= sum(map(len, as_chunks(out))) <= 100_000 + 32 * 10_020
    assert session.busy and not close


def test_a_protocol_error_is_answered_after_the_held_back_commands(session: RespSession) -> None:
    session.store.set(b"big", BIG)
    data = cmd("GET", "big") * 30 + b"*1\r\n$x\r\n"
    chunks, _, close = serve_all(session, data, 500_000)
    expected = (b"$100000\r\n" + BIG + b"\r\n") * 30 + b"-ERR Protocol error: invalid bulk length\r\n"
    assert (b"".join(chunks), close) == (expected, True)
    assert session.serve(cmd("PING"), 500_000) == ([], True)
    assert session.receive(cmd("PING")) == (b"", True)


def test_quit_among_held_back_commands_ends_the_replies(session: RespSession) -> None:
    session.store.set(b"big", BIG)
    data = cmd("GET", "big") * 40 + cmd("QUIT") + cmd("PING")
    chunks, _, close = serve_all(session, data, 300_000)
    assert (b"".join(chunks), close) == ((b"$100000\r\n" + BIG + b"\r\n") * 40 + b"+OK\r\n", True)


@settings(max_examples=100, deadline=None)
@given(_requests, st.integers(1, 200), st.integers(0, 1000))
def test_serve_replies_like_receive_whatever_the_limit(requests: list[bytes], limit: int, cut: int) -> None:
    data = b"".join(requests) * 5
    cut %= len(data) + 1
    expected = replies_to([data], (MAX_BULK, MAX_ARRAY))
    session = RespSession(KeyValueStore(FakeClock(1_700_000_000_000)))
    first, _, _ = serve_all(session, data[:cut], limit)
    second, _, close = serve_all(session, data[cut:], limit)
    assert (b"".join([*first, *second]), close) == expected


def test_nulls_follow_each_sessions_protocol() -> None:
    store = KeyValueStore()
    resp3, resp2 = RespSession(store), RespSession(store)
    ask(resp3, cmd("HELLO", "3"))
    missing = [cmd("GET", "none"), cmd("LPOP", "none", "2"), cmd("MGET", "none", "none")]
    assert ask(resp3, *missing) == b"_\r\n_\r\n*2\r\n_\r\n_\r\n"
    assert ask(resp2, *missing) == b"$-1\r\n*-1\r\n*2\r\n$-1\r\n$-1\r\n"  # interleaved: each gets its own
    assert ask(resp3, cmd("GET", "none")) == b"_\r\n"


def test_resp3_doubles() -> None:
    session = RespSession(KeyValueStore())
    ask(session, cmd("HELLO", "3"))
    assert ask(session, cmd("ZADD", "z", "1.5", "m"), cmd("ZSCORE", "z", "m")) == b":1\r\n,1.5\r\n"
    assert ask(session, cmd("HELLO", "2"), cmd("ZSCORE", "z", "m")).endswith(b"$3\r\n1.5\r\n")


# -- the dispatch loop, compiled and in Python ----------------------------------------------------------------

_MIXED = [
    ["SET", "k", "v"], ["GET", "k"], ["get", "k"], ["GeT", "k"], ["INCR", "n"], ["DEL", "k"], ["GET"],
    ["HSET", "h", "f", "v"], ["HSET", "h", "f"], ["HSET", "k", "f", "v"], ["SADD", "s", "m"], ["SADD", "s"],
    ["ZADD", "z", "1", "m"], ["ZADD", "z", "x", "m"], ["ZADD", "z", "NX", "2", "m"], ["LPUSH", "l", "a"],
    ["RPUSH", "l", "b"], ["BLPOP", "l", "0"], ["BLPOP", "e", "0"], ["MULTI"], ["EXEC"], ["DISCARD"], ["WATCH", "k"],
    ["PING"], ["ping", "x"], ["HELLO", "3"], ["HELLO", "2"], ["CLIENT", "REPLY", "OFF"], ["CLIENT", "REPLY", "ON"],
    ["CLIENT", "REPLY", "SKIP"], ["CONFIG", "SET", "notify-keyspace-events", "KA"], ["SUBSCRIBE", "__keyspace@0__:k"],
    ["UNSUBSCRIBE"], ["FOO"], ["QUIT"], ["OBJECT", "ENCODING", "h"],
]  # fmt: skip


_needs_compiled = pytest.mark.skipif(
    _compiled.SPEEDUPS is None, reason="resp_server._speedups is not built (or NETLOOP_PURE=1)"
)


@_needs_compiled
@settings(max_examples=300)
@given(st.lists(st.lists(st.sampled_from(_MIXED), min_size=1, max_size=12), min_size=1, max_size=4))
def test_compiled_and_python_dispatch_answer_alike(batches: list[list[list[str]]]) -> None:
    # Fast commands, session commands, errors, MULTI, blocking, HELLO, CLIENT REPLY, notifications and QUIT, a
    # batch at a time: the compiled loop and Python's give the same replies, pushes and closes.
    results = []
    for compiled in (False, True):
        session = RespSession(KeyValueStore(FakeClock()), compiled=compiled)
        answers = [session.receive(b"".join(cmd(*c) for c in batch)) for batch in batches]
        results.append((answers, session.pushed))
    assert results[0] == results[1]


_LOOPS = [False, pytest.param(True, marks=_needs_compiled)]


class TickingClock(FakeClock):
    """A clock that moves 10 ms each time it is read: a deadline set in a batch passes within that batch."""

    def __call__(self) -> int:
        self.now += 10
        return self.now


def _hset_frames(session: RespSession, requests: bytes) -> tuple[bytes, int]:
    """``session``'s reply to ``requests``, and how many times :func:`_hset`'s Python frame ran for it."""
    frames = 0

    def count(frame: FrameType, event: str, arg: object) -> None:
        nonlocal frames
        frames += event == "call" and frame.f_code is _hset.__code__

    sys.setprofile(count)
    try:
        reply = ask(session, requests)
    finally:
        sys.setprofile(None)
    return reply, frames


@pytest.mark.parametrize("compiled", _LOOPS)
def test_hset_takes_its_short_way_only_where_nothing_else_happens(compiled: bool) -> None:
    # HSET key field value into a hash that exists, nothing to expire, watch, wake or notify: the compiled loop
    # answers it without _hset's frame, the Python loop through it; everything else runs _hset, the same replies.
    store, server = KeyValueStore(FakeClock()), ServerState()
    session, other = RespSession(store, server=server, compiled=compiled), RespSession(store, server=server)
    short = 0 if compiled else 3
    assert _hset_frames(session, cmd("HSET", "h", "f", "v")) == (b":1\r\n", 1)  # a new key
    hsets = cmd("HSET", "h", "f", "w") + cmd("HSET", "h", "g", "x") + cmd("hset", "h", "g", "y")
    assert _hset_frames(session, hsets) == (b":0\r\n:1\r\n:0\r\n", short)
    assert _hset_frames(session, cmd("HSET", "h", "f", "1", "k", "2")) == (b":1\r\n", 1)  # two fields
    assert _hset_frames(session, cmd("SET", "s", "x") + cmd("HSET", "s", "f", "v")) == (b"+OK\r\n" + WRONGTYPE, 1)
    assert _hset_frames(session, cmd("HSET", "h", "f") + cmd("HSET", "h", "f", "v", "g")) == (
        b"-ERR wrong number of arguments for 'hset' command\r\n" * 2,
        1,
    )  # arity errors: the loop's (fewer than four arguments), _hset's own (an odd count)
    assert ask(other, cmd("WATCH", "h")) == b"+OK\r\n"
    assert _hset_frames(session, cmd("HSET", "h", "f", "z")) == (b":0\r\n", 1)
    assert ask(other, cmd("MULTI"), cmd("HGET", "h", "f"), cmd("EXEC")) == b"+OK\r\n+QUEUED\r\n*-1\r\n"
    assert _hset_frames(session, cmd("PEXPIRE", "s", "100") + cmd("HSET", "h", "f", "v")) == (b":1\r\n:0\r\n", 1)
    assert ask(session, cmd("DEL", "s")) == b":1\r\n"
    assert _hset_frames(session, cmd("HSET", "h", "f", "v")) == (b":0\r\n", short // 3)
    assert ask(session, cmd("HMGET", "h", "f", "g", "k")) == b"*3\r\n$1\r\nv\r\n$1\r\ny\r\n$1\r\n2\r\n"


def _hsets_beside_others(compiled: bool) -> list[tuple[tuple[bytes, bool], list[bytes], list[bytes], list[bytes]]]:
    """HSETs while another client waits on a key, while a third is notified of writes, while a key expires within a
    batch: the replies to each step, and what each session was pushed after it."""
    store, server = KeyValueStore(TickingClock()), ServerState()
    a, b, c = (RespSession(store, server=server, compiled=compiled) for _ in range(3))
    steps = [
        (a, [["HSET", "h", "f", "1"], ["HSET", "h", "g", "2"]]),
        (b, [["BLPOP", "l", "0"]]),
        (a, [["HSET", "h", "f", "3"], ["HSET", "h", "k", "4"], ["RPUSH", "l", "x"], ["HSET", "h", "f", "5"]]),
        (b, [["BLPOP", "h2", "0"]]),  # waits on: a hash there does not serve it
        (a, [["HSET", "h2", "f", "v"], ["HSET", "h2", "f", "w"], ["HSET", "h", "f", "6"]]),
        (a, [["DEL", "h2"], ["RPUSH", "h2", "y"], ["HSET", "h", "f", "7"]]),
        (c, [["CONFIG", "SET", "notify-keyspace-events", "KA"], ["SUBSCRIBE", "__keyspace@0__:h"]]),
        (a, [["HSET", "h", "f", "8"], ["HSET", "h", "z", "9"], ["HSET", "h3", "f", "v"], ["HSET", "h", "f", "10"]]),
        (c, [["UNSUBSCRIBE"], ["CONFIG", "SET", "notify-keyspace-events", ""]]),
        (a, [["HSET", "h", "f", "11"], ["PEXPIRE", "h", "5"], ["HSET", "h", "f", "12"], ["HLEN", "h"]]),
        (a, [["HSET", "h", "g", "13"], ["HGETALL", "h"], ["HLEN", "h3"]]),
    ]
    transcript = []
    for session, commands in steps:
        reply = session.receive(b"".join(cmd(*args) for args in commands))
        transcript.append((reply, list(a.pushed), list(b.pushed), list(c.pushed)))
    return transcript


@pytest.mark.parametrize("compiled", _LOOPS)
def test_hset_beside_blocked_clients_notifications_and_expiry(compiled: bool) -> None:
    transcript = _hsets_beside_others(compiled)
    assert transcript[2][0] == (b":0\r\n:1\r\n:1\r\n:0\r\n", False)
    assert transcript[2][2] == [b"*2\r\n$1\r\nl\r\n$1\r\nx\r\n"]  # BLPOP l, served by the RPUSH
    assert transcript[4][2][1:] == []
    assert transcript[5][2][1:] == [b"*2\r\n$2\r\nh2\r\n$1\r\ny\r\n"]  # BLPOP h2, by the RPUSH after the DEL
    assert transcript[7][3] == [b"*3\r\n$7\r\nmessage\r\n$16\r\n__keyspace@0__:h\r\n$4\r\nhset\r\n"] * 3
    # The hash h expired between the two HSETs of one batch: the second made a new one.
    assert transcript[9][0] == (b":0\r\n:1\r\n:1\r\n:1\r\n", False)
    assert transcript[10][0] == (b":1\r\n*4\r\n$1\r\nf\r\n$2\r\n12\r\n$1\r\ng\r\n$2\r\n13\r\n:1\r\n", False)
    if compiled:
        assert transcript == _hsets_beside_others(False)


@_needs_compiled
def test_both_loops_stop_after_a_short_way_hset_that_found_unblocked_keys_waiting() -> None:
    # The compiled loop knows store.ready and store.events are empty only once it has looked, as Python's does.
    assert _compiled.SPEEDUPS is not None
    for loop in (_run_fast, _compiled.SPEEDUPS.run):
        store = KeyValueStore()
        store.set(b"h", {})
        store.ready.append(b"l")
        replies: list[Reply] = []
        assert loop(_DISPATCH, store, [[b"HSET", b"h", b"f", b"v"]] * 3, 0, replies, arity_error) == 1
        assert replies == [b":1\r\n"]


def test_a_session_without_the_compiled_loop_says_so() -> None:
    if _compiled.SPEEDUPS is not None:
        assert RespSession(KeyValueStore(), compiled=True).receive(cmd("PING")) == (b"+PONG\r\n", False)
    else:
        with pytest.raises(RuntimeError, match="not built"):
            RespSession(KeyValueStore(), compiled=True)
