"""The command families completed for issue 23 (sorted sets, the rest of lists, hashes and sets, the SCAN family,
bitmaps, blocking pops, CLIENT REPLY) against a real redis-server 7.0: the same sequence on both servers, every
reply byte for byte Redis's, in RESP2 and RESP3. Only commands whose reply is not random are compared; the random
ones (ZRANDMEMBER, HRANDFIELD) are checked for their shape and bounds."""

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


def _split(lines: str) -> Case:
    return [line.split() for line in lines.strip().splitlines()]


ZSET = "ZADD z 1 a 2 b 3 c 4 d 5 e 5 f"

CASES = {
    "zrange forms": _split(f"""
        {ZSET}
        ZRANGE z 0 -1 WITHSCORES
        ZRANGE z (1 4 BYSCORE WITHSCORES
        ZRANGE z 4 (1 BYSCORE REV WITHSCORES LIMIT 1 2
        ZRANGE z 0 -1 LIMIT 0 1
        ZRANGE z - + BYLEX WITHSCORES
        ZRANGE z [b (e BYLEX
        ZRANGE z (e [b BYLEX REV LIMIT 0 2
        ZRANGE z x y BYSCORE
        ZRANGE z x y BYLEX
        ZRANGE z 0 1 BYSCORE BYLEX
        ZREVRANGE z 0 2 WITHSCORES
        ZRANGEBYSCORE z -inf +inf WITHSCORES LIMIT 2 -1
        ZREVRANGEBYSCORE z +inf -inf LIMIT -1 2
        ZRANGEBYLEX z - [c
        ZREVRANGEBYLEX z + - LIMIT 1 1
        ZRANGEBYSCORE z 1 2 REV
        ZRANGE missing 0 -1
    """),
    "zrangestore counts and removals": _split(f"""
        {ZSET}
        ZRANGESTORE dst z 1 3
        ZRANGE dst 0 -1 WITHSCORES
        ZRANGESTORE dst z 10 30
        EXISTS dst
        ZRANGESTORE dst z 0 -1 WITHSCORES
        ZCOUNT z (1 5
        ZCOUNT z x 1
        ZLEXCOUNT z - +
        ZLEXCOUNT z a b
        ZRANK z c
        ZREVRANK z c
        ZRANK z nosuch
        ZREMRANGEBYRANK z 0 0
        ZREMRANGEBYSCORE z (4 +inf
        ZREMRANGEBYLEX z [b [c
        ZRANGE z 0 -1 WITHSCORES
        ZREMRANGEBYRANK z 0 -1
        EXISTS z
    """),
    "zincrby zmscore zpop zmpop": _split(f"""
        {ZSET}
        ZINCRBY z 2.5 d
        ZINCRBY z nan d
        ZADD inf +inf x
        ZINCRBY inf -inf x
        ZMSCORE z d nosuch
        ZMSCORE missing a
        ZPOPMIN z
        ZPOPMAX z 2
        ZPOPMIN z 0
        ZPOPMIN z -1
        ZPOPMIN z 1 2
        ZMPOP 2 nosuch z MIN COUNT 2
        ZMPOP 0 z MIN
        ZMPOP 1 z foo
        ZMPOP 1 z MAX COUNT 0
        ZMPOP 1 nosuch MAX
        ZMPOP 1 z MAX COUNT 10
        EXISTS z
    """),
    "zunion zinter zdiff": _split("""
        ZADD a 1 x 2 y 3 z
        ZADD b 10 y 20 z 30 w
        SADD s x w
        SET str v
        ZUNION 2 a b WITHSCORES
        ZINTER 2 a b WEIGHTS 2 3 AGGREGATE MAX WITHSCORES
        ZINTER 2 a b AGGREGATE MIN
        ZDIFF 2 a b WITHSCORES
        ZUNIONSTORE u 3 a b s
        ZRANGE u 0 -1 WITHSCORES
        ZINTERSTORE i 2 a s
        ZRANGE i 0 -1 WITHSCORES
        ZDIFFSTORE d 2 a a
        EXISTS d
        ZINTERCARD 2 a b
        ZINTERCARD 2 a b LIMIT 1
        ZINTERCARD 2 a b LIMIT -1
        ZINTERCARD 0 a
        ZUNION 3 a b
        ZUNION 2 a b WEIGHTS 1 x
        ZUNION 2 a b AGGREGATE foo
        ZUNION 2 a str
        ZDIFF 2 a b WEIGHTS 1 1
        ZUNIONSTORE dst 2 a b WITHSCORES
    """),
    "zrandmember errors": _split("""
        ZADD a 1 x
        ZRANDMEMBER nosuch
        ZRANDMEMBER nosuch 3
        ZRANDMEMBER a 0
        ZRANDMEMBER a 1 WITHSCORES
        ZRANDMEMBER a 5 WITHSCORES foo
        ZRANDMEMBER a -9223372036854775808
        ZRANDMEMBER a 9223372036854775807 WITHSCORES
    """),
    "lists": _split("""
        RPUSH l a b c a b c a
        LPOS l a
        LPOS l a RANK -1
        LPOS l a RANK 2 COUNT 0
        LPOS l a COUNT 2 MAXLEN 4
        LPOS l a RANK -2 COUNT 5
        LPOS l a RANK 0
        LPOS l a COUNT -1
        LPOS l a MAXLEN -1
        LPOS l a FOO 1
        LPOS nosuch a
        LPOS nosuch a COUNT 1
        LPOS l z COUNT 1
        LMOVE l m LEFT RIGHT
        LMOVE l m RIGHT LEFT
        LMOVE l m UP LEFT
        LMOVE nosuch m LEFT LEFT
        RPOPLPUSH m m
        LRANGE m 0 -1
        SET str x
        LMOVE l str LEFT LEFT
        LMPOP 2 nosuch l LEFT COUNT 3
        LMPOP 2 nosuch l RIGHT
        LMPOP 0 l LEFT
        LMPOP 1 l MIDDLE
        LMPOP 1 l LEFT COUNT 0
        LMPOP 1 nosuch LEFT
        LMPOP 1 str LEFT
        LMPOP 5 l LEFT
        RPUSH one x
        RPOPLPUSH one one
        LMOVE one one LEFT RIGHT
        LRANGE one 0 -1
    """),
    "hashes sets scans": _split("""
        HSET h a 1
        HRANDFIELD h
        HRANDFIELD h 1 WITHVALUES
        HRANDFIELD h -3 WITHVALUES
        HRANDFIELD nosuch
        HRANDFIELD nosuch 3
        HRANDFIELD h 3 FOO
        HRANDFIELD h -9223372036854775808
        SADD s1 a b c
        SADD s2 b c d
        SINTERCARD 2 s1 s2
        SINTERCARD 2 s1 s2 LIMIT 1
        SINTERCARD 3 s1 s2
        SINTERCARD 0 s1
        SINTERCARD 2 s1 s2 LIMIT -1
        SINTERCARD 1 h
        SSCAN s1 0 COUNT 0
        SSCAN s1 x
        SSCAN nosuch 0 FOO
        SSCAN h 0
        SSCAN s1 0 MATCH a
        HSCAN h 0 MATCH a
        ZADD z 1.5 a 2 b
        ZSCAN z 0 MATCH a
        ZSCAN z 0 MATCH b COUNT 10
    """),
    "bitmaps": [
        ["SET", "s", "\xff\xf0\x00"],
        ["SET", "f", "\xff\xff"],
        ["SET", "e", ""],
        *_split("""
        BITPOS s 0
        BITPOS s 1
        BITPOS s 0 1
        BITPOS s 1 2 -1
        BITPOS s 0 3 5 BIT
        BITPOS s 1 8 11 BIT
        BITPOS s 1 -5 -1 BIT
        BITPOS s 0 -100 -50
        BITPOS s 2
        BITPOS s 0 a
        BITPOS s 0 0 1 FOO
        BITPOS e 0
        BITPOS nosuch 0
        BITPOS nosuch 1
        BITPOS f 0
        BITPOS f 0 0 -1
        BITCOUNT s
        BITCOUNT s -100 -50
        BITCOUNT s -1 -2
        BITCOUNT s 0 9 BIT
        BITCOUNT s 0
        BITCOUNT nosuch a b
        BITCOUNT s 0 1 FOO
        BITOP AND d s f
        GET d
        BITOP OR d s f nosuch
        GET d
        BITOP XOR d s f
        GET d
        BITOP NOT d s
        GET d
        BITOP NOT d s f
        BITOP FOO d s
        BITOP AND d nosuch1 nosuch2
        EXISTS d
        LPUSH l x
        BITOP AND d s l
    """),
    ],
    "bitfield": _split("""
        BITFIELD bf SET i5 0 0
        BITFIELD bf SET i5 0 1 GET u4 0 INCRBY i5 0 100 OVERFLOW SAT INCRBY i5 0 100 OVERFLOW FAIL INCRBY u2 100 5
        GET bf
        BITFIELD bf SET u63 #1 12345678901 GET u63 #1 GET i64 1
        BITFIELD bf INCRBY i64 0 9223372036854775807 OVERFLOW WRAP INCRBY i64 0 9223372036854775807
        BITFIELD bf GET u64 0
        BITFIELD bf GET i65 0
        BITFIELD bf GET x5 0
        BITFIELD bf GET i5 -1
        BITFIELD bf GET i5 #-1
        BITFIELD bf OVERFLOW foo GET i5 0
        BITFIELD bf foo
        BITFIELD bf SET i5 0 x
        BITFIELD_RO bf GET i8 0 GET u3 2
        BITFIELD_RO bf SET i8 0 1
        BITFIELD nosuch GET i8 0
        BITFIELD nosuch
        EXISTS nosuch
        BITFIELD bf SET u8 4294967296 1
        BITFIELD bf SET i5 10 -17 OVERFLOW SAT SET i5 20 -17 OVERFLOW FAIL SET i5 30 40 GET i5 10 GET i5 20
        LPUSH l a
        BITFIELD l GET i8 0
    """),
    "blocking pops that need not wait": _split("""
        RPUSH l a b
        ZADD z 1 m 2 n
        BLPOP nosuch l 0
        BRPOP l 0
        BZPOPMIN z 0
        BZPOPMAX z 0
        BLPOP l -1
        BLPOP l x
        SET str v
        BLPOP str 0
        RPUSH l c d
        BLMOVE l l2 LEFT RIGHT 0
        BRPOPLPUSH l l2 0
        BLMPOP 0 2 nosuch l2 LEFT COUNT 5
        ZADD z 3 o
        BZMPOP 0 1 z MAX COUNT 2
        BLMPOP 0 0 l LEFT
        MULTI
        BLPOP empty 0
        BZPOPMIN empty 0
        EXEC
    """),
    # HSET, SADD and ZADD of one field or member take a short way; around it, every other form and check.
    "one-pair writes": _split("""
        HSET h f v
        HSET h f w
        HSET h g v f x
        HSET h f
        HMSET h f y
        HMSET h f
        HGETALL h
        SADD s a
        SADD s a
        SADD s b c a
        SCARD s
        ZADD z 1 a
        ZADD z 2 a
        ZADD z 2 a
        ZADD z -0 b
        ZADD z 0 b
        ZSCORE z b
        ZADD z NX a
        ZADD z NX 3 a
        ZADD z CH 4 a
        ZADD z nan a
        ZADD z inf c
        ZADD z 1.5e3 d
        ZRANGE z 0 -1 WITHSCORES
        SET str x
        HSET str f v
        HMSET str f v
        SADD str m
        ZADD str 1 m
        ZADD str x m
        ZADD str NX 1 m
    """),
}


@pytest.mark.parametrize("proto", [2, 3])
@pytest.mark.parametrize("name", sorted(CASES))
def test_family_replies_as_redis(ports: tuple[int, int], name: str, proto: int) -> None:
    assert_like_redis(ports, proto, CASES[name])


@pytest.mark.parametrize("proto", [2, 3])
def test_random_picks_come_from_the_value(ports: tuple[int, int], proto: int) -> None:
    client = RawClient(ports[1])
    try:
        client.call("FLUSHALL")
        if proto == 3:
            client.call("HELLO", "3")
        client.call("ZADD", "z", "1", "a", "2", "b")
        client.call("HSET", "h", "f", "v", "g", "w")
        assert client.call("ZRANDMEMBER", "z") in (b"$1\r\na\r\n", b"$1\r\nb\r\n")
        distinct = client.call("ZRANDMEMBER", "z", "5")
        assert distinct in (b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", b"*2\r\n$1\r\nb\r\n$1\r\na\r\n")
        assert client.call("ZRANDMEMBER", "z", "-7").startswith(b"*7\r\n")
        assert client.call("HRANDFIELD", "h", "-4").startswith(b"*4\r\n")
        pair = client.call("HRANDFIELD", "h", "1", "WITHVALUES")
        assert pair in (
            (b"*1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n", b"*1\r\n*2\r\n$1\r\ng\r\n$1\r\nw\r\n")
            if proto == 3
            else (b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n", b"*2\r\n$1\r\ng\r\n$1\r\nw\r\n")
        )
    finally:
        client.close()


def test_client_reply_off_skip_on(ports: tuple[int, int]) -> None:
    for port in ports:
        client = RawClient(port)
        try:
            client.send("CLIENT", "REPLY", "OFF")
            client.send("SET", "k", "1")
            client.send("CLIENT", "REPLY", "ON")
            assert client.read_reply() == b"+OK\r\n"
            client.send("CLIENT", "REPLY", "SKIP")
            client.send("GET", "k")
            assert client.call("GET", "k") == b"$1\r\n1\r\n"
            assert client.call("CLIENT", "REPLY", "MAYBE") == b"-ERR syntax error\r\n"
        finally:
            client.close()


def test_subscriptions_still_answer_with_replies_off(ports: tuple[int, int]) -> None:
    subscriber, publisher = RawClient(ports[1]), RawClient(ports[1])
    try:
        subscriber.call("HELLO", "3")
        subscriber.send("CLIENT", "REPLY", "OFF")
        assert subscriber.call("SUBSCRIBE", "ch") == b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
        assert publisher.call("PUBLISH", "ch", "hi") == b":1\r\n"
        assert subscriber.read_reply() == b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
    finally:
        subscriber.close()
        publisher.close()


def test_smove_of_a_member_the_target_holds_leaves_its_watchers_alone(ports: tuple[int, int]) -> None:
    answers = []
    for port in ports:
        client, other = RawClient(port), RawClient(port)
        try:
            client.run([["FLUSHALL"], ["SADD", "src", "a", "b"], ["SADD", "dst", "a"], ["WATCH", "dst"], ["MULTI"]])
            client.call("SADD", "dst", "c")
            moved = other.run(
                [["SMOVE", "src", "dst", "a"], ["SMOVE", "dst", "dst", "a"], ["SMOVE", "dst", "dst", "z"]]
            )
            answers.append([*moved, client.call("EXEC"), client.call("SCARD", "dst"), client.call("SCARD", "src")])
        finally:
            client.close()
            other.close()
    assert answers[1] == answers[0]
    assert answers[1][3] == b"*1\r\n:1\r\n"  # EXEC ran: the watched set did not change


@pytest.mark.parametrize(
    ("setup", "touch"),
    [
        (["SADD", "k", "a"], ["SADD", "k", "a"]),
        (["ZADD", "k", "1", "a"], ["ZADD", "k", "1", "a"]),
        (["ZADD", "k", "0", "a"], ["ZADD", "k", "-0", "a"]),
        (["ZADD", "k", "1", "a"], ["ZADD", "k", "XX", "1", "b"]),
        (["ZADD", "k", "1", "a"], ["ZADD", "k", "GT", "0", "a"]),
        (["ZADD", "k", "1", "a"], ["ZADD", "k", "INCR", "0", "a"]),
        (["HSET", "k", "f", "v"], ["HSET", "k", "f", "v"]),
        (["SADD", "k", "a"], ["SADD", "k", "b"]),
    ],
)
def test_watch_sees_a_write_only_where_it_changed_the_value(
    ports: tuple[int, int], setup: list[str], touch: list[str]
) -> None:
    answers = []
    for port in ports:
        client, other = RawClient(port), RawClient(port)
        try:
            client.run([["FLUSHALL"], setup, ["WATCH", "k"], ["MULTI"], ["PING"]])
            answers.append([other.call(*touch), client.call("EXEC")])
        finally:
            client.close()
            other.close()
    assert answers[1] == answers[0]


@pytest.mark.parametrize(
    ("flags", "commands"),
    [
        ("KEA", [["SET", "foo", "bar"], ["LPUSH", "l", "a"], ["RPOP", "l"], ["HMSET", "h", "f", "1"]]),
        ("KEl", [["SET", "foo", "bar"], ["RPUSH", "l", "a", "b"], ["LPOP", "l", "2"]]),
        ("KEg", [["SET", "foo", "bar"], ["EXPIRE", "foo", "100"], ["DEL", "foo"]]),
        ("Ks", [["SADD", "s", "a", "b"], ["SREM", "s", "x"], ["SREM", "s", "a"]]),
        ("Kz", [["ZADD", "z", "1", "a"], ["ZREM", "z", "x"], ["ZINCRBY", "z", "2", "a"]]),
        ("Kh", [["HSET", "h", "f", "1"], ["HINCRBY", "h", "f", "10"], ["HDEL", "h", "f"]]),
        ("E$", [["SET", "n", "1"], ["INCR", "n"], ["APPEND", "n", "0"], ["MULTI"], ["INCRBY", "n", "5"], ["EXEC"]]),
        ("En", [["SET", "foo", "bar"], ["SET", "foo", "baz"], ["SET", "bar", "x"]]),
        # writes that change nothing publish nothing (HSET excepted, as in Redis)
        ("KA", [["SADD", "s", "a"], ["SADD", "s", "a"], ["ZADD", "z", "1", "a"], ["ZADD", "z", "1", "a"]]),
        ("KA", [["ZADD", "z", "1", "a"], ["ZADD", "z", "XX", "1", "b"], ["ZADD", "z", "NX", "2", "a"]]),
        ("KA", [["HSET", "h", "f", "v"], ["HSET", "h", "f", "v"], ["ZADD", "z", "0", "a"], ["ZADD", "z", "-0", "a"]]),
    ],
)
def test_keyspace_notifications_as_redis(ports: tuple[int, int], flags: str, commands: Case) -> None:
    heard = []
    for port in ports:
        listener, client = RawClient(port), RawClient(port)
        try:
            client.call("FLUSHALL")
            assert client.call("CONFIG", "SET", "notify-keyspace-events", flags) == b"+OK\r\n"
            listener.call("PSUBSCRIBE", "__key*")
            client.run(commands)
            client.call("PUBLISH", "__keyend", "done")  # the listener's last message: everything before it came
            messages = []
            while (
                message := listener.read_reply()
            ) != b"*4\r\n$8\r\npmessage\r\n$6\r\n__key*\r\n$8\r\n__keyend\r\n$4\r\ndone\r\n":
                messages.append(message)
            heard.append(messages)
        finally:
            client.call("CONFIG", "SET", "notify-keyspace-events", "")
            listener.close()
            client.close()
    assert heard[1] == heard[0]
    assert heard[0]


def test_notify_keyspace_events_flags_as_redis(ports: tuple[int, int]) -> None:
    answers = []
    for port in ports:
        client = RawClient(port)
        try:
            got = []
            for flags in ("gKE", "$lshzxeKE", "KA", "EA", "Kx", "Q", ""):
                got.append(client.call("CONFIG", "SET", "notify-keyspace-events", flags))
                got.append(client.call("CONFIG", "GET", "notify-keyspace-events"))
            answers.append(got)
        finally:
            client.close()
    assert answers[1] == answers[0]


def test_xinfo_stream_full_describes_a_copy_as_its_original(ports: tuple[int, int]) -> None:
    client = RawClient(ports[1])
    try:
        client.run([["FLUSHALL"], ["XADD", "x", "100", "a", "1"], ["XADD", "x", "101", "b", "1"]])
        client.run(
            [
                ["XGROUP", "CREATE", "x", "g1", "0"],
                ["XREADGROUP", "GROUP", "g1", "Alice", "COUNT", "1", "STREAMS", "x", ">"],
            ]
        )
        assert client.call("COPY", "x", "y") == b":1\r\n"
        full = client.call("XINFO", "STREAM", "x", "FULL")
        assert full.startswith(b"*18\r\n$6\r\nlength\r\n:2\r\n")
        assert b"$4\r\nname\r\n$5\r\nAlice\r\n" in full and b"$9\r\npel-count\r\n:1\r\n" in full
        assert client.call("XINFO", "STREAM", "y", "FULL") == full
        assert client.call("XINFO", "STREAM", "x", "FULL", "COUNT", "1").count(b"-0\r\n*2\r\n") == 1
        assert (
            client.call("XINFO", "STREAM", "x", "FULL", "COUNT", "x")
            == b"-ERR value is not an integer or out of range\r\n"
        )
        assert client.call("XINFO", "STREAM", "x", "BLA") == (  # redis-server 7.0.15's words
            b"-ERR unknown subcommand or wrong number of arguments for 'STREAM'. Try XINFO HELP.\r\n"
        )
    finally:
        client.close()
