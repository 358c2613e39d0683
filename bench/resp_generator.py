"""The command sequences of the differential comparison (bench/resp_differential.py): one generator per command
family, each drawing its arguments from pools of edge cases, over a few keys that every family shares so that keys
of one type meet commands of another (WRONGTYPE).

A family is a function ``(rng) -> command``; :data:`FAMILIES` lists them with their weights, and a new family (the
stream consumer groups', say) is one function appended there. :func:`sequence` draws a few commands from them, now
and then mangles one (an argument dropped or added, the name in another case, an unknown option or command), and
wraps some in MULTI/EXEC, WATCH or a SUBSCRIBE/UNSUBSCRIBE pair.

Every command a family generates must have a reply both servers agree on from the keyspace alone: no random picks
that change the keyspace, no relative expiry read back in milliseconds, no CONFIG value that changes behaviour.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

T = TypeVar("T")
Family = Callable[[random.Random], list[bytes]]


class Random(random.Random):
    """The generator's random source: ``choice`` from one ``random()`` call (the standard one draws bits until it
    has an unbiased index, several times slower, and the generator makes a few dozen choices per command)."""

    def choice(self, seq: SupportsLenAndGetItem[T]) -> T:
        return seq[int(self.random() * len(seq))]


# Keys every family shares: most commands use the first three, so a key made by one family meets the others.
KEYS = (b"a", b"b", b"c")
_ODD_KEYS = (b"", b"k\x00\r\n", b"\xff\xfe")

# Integers at and past the edges of int64 and uint64, and text that is not one.
_INTEGERS = (
    b"0", b"1", b"-1", b"2", b"3", b"10", b"-3", b"100", b"-100", b"9223372036854775807", b"-9223372036854775808",
    b"9223372036854775808", b"-9223372036854775809", b"18446744073709551615", b"18446744073709551616",
    b"-18446744073709551616", b"4611686018427387904", b"", b"x", b"1.5", b"1e3", b" 1", b"1 ", b"01", b"+1", b"-0",
    b"0x10", b"inf", b"nan", b"1\x00",
)  # fmt: skip
# Floats with their infinities, NaN spellings, overflows and malformed forms.
_FLOATS = (
    b"0", b"0.1", b"0.2", b"-0.3", b"1.5", b"1e3", b"-2", b"3", b"inf", b"-inf", b"+inf", b"Inf", b"INFINITY",
    b"-infinity", b"nan", b"NaN", b"-nan", b"1e308", b"-1e308", b"1e309", b"1e-320", b"5.0e-10", b"1e20",
    b"9223372036854775807", b"-9223372036854775809", b"18446744073709551616", b"x", b"", b"1e", b".5", b"5.",
    b" 1", b"1 ", b"0x1p3", b"1_0", b"-0", b"1.0000000000000001",
)  # fmt: skip
# Values: numbers in text, empty, binary (NUL, CRLF, high bytes), spaces, longer ones.
_VALUES = (
    b"v", b"1", b"-2", b"10", b"0.1", b"1.5", b"abc", b"", b"9223372036854775807", b"x y", b"\x00", b"a\r\nb",
    b"\xff\xfe\x80", b"a\x00b", b"inf", b"nan", b"1e308", b"-0", b"18446744073709551616", b"m1", b"v" * 70,
)  # fmt: skip
# Expiry amounts: none so short that it could run out while a sequence runs (the servers' clocks are not shared).
_EXPIRIES = (*(n for n in _INTEGERS if n not in (b"1", b"2", b"3", b"10", b"100")), b"100000")
_INDEXES = (b"0", b"1", b"-1", b"2", b"-2", b"5", b"-100", b"100", b"9223372036854775807", b"-9223372036854775808",
            b"x", b"")  # fmt: skip
_MEMBERS = (b"m1", b"m2", b"m3", b"m4")


class Draw:
    """One command's random choices: a key, another key, a value, numbers..., all from the pools above."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.key = self.pick_key()
        self.key2 = self.pick_key()
        self.value = rng.choice(_VALUES)
        self.int = rng.choice(_INTEGERS) if rng.random() < 0.5 else rng.choice(_INTEGERS[:8])
        self.float = rng.choice(_FLOATS) if rng.random() < 0.5 else rng.choice(_FLOATS[:8])
        self.expiry = rng.choice(_EXPIRIES)
        self.i, self.j = self.index(), self.index()
        self.member = rng.choice(_MEMBERS) if rng.random() < 0.9 else rng.choice(_VALUES)

    def pick_key(self) -> bytes:
        return self.rng.choice(KEYS) if self.rng.random() < 0.97 else self.rng.choice(_ODD_KEYS)

    def index(self) -> bytes:
        return self.rng.choice(_INDEXES) if self.rng.random() < 0.3 else self.rng.choice(_INDEXES[:8])

    def one(self, *choices: list[bytes]) -> list[bytes]:
        return list(self.rng.choice(choices))


def strings(rng: random.Random) -> list[bytes]:
    d = Draw(rng)
    k, k2, v = d.key, d.key2, d.value
    return d.one(
        [b"SET", k, v],
        [b"SET", k, v, *d.one([b"NX"], [b"XX"], [b"GET"], [b"KEEPTTL"], [b"NX", b"GET"], [b"XX", b"NX"])],
        [b"SET", k, v, rng.choice((b"EX", b"PX", b"EXAT", b"PXAT")), d.expiry],
        [b"SET", k, v, b"EXAT", b"4102444800", *d.one([], [b"GET"], [b"KEEPTTL"], [b"EX", b"10"])],
        [b"SETEX", k, d.expiry, v],
        [b"PSETEX", k, d.expiry, v],
        [b"GET", k],
        [b"GETDEL", k],
        [
            b"GETEX",
            k,
            *d.one([], [b"PERSIST"], [b"EX", d.expiry], [b"PX", d.expiry], [b"PXAT", d.int], [b"EXAT", b"4102444800"]),
        ],
        [b"GETSET", k, v],
        [b"APPEND", k, v],
        [b"STRLEN", k],
        [b"GETRANGE", k, d.i, d.j],
        [b"SUBSTR", k, d.i, d.j],
        [b"SETRANGE", k, rng.choice((b"0", b"2", b"-1", b"x", b"536870912", b"100")), v],
        [b"MGET", k, k2, b"nokey"],
        [b"MSET", k, v, k2, rng.choice(_VALUES)],
        [b"MSETNX", k, v, k2, v],
        [b"SETNX", k, v],
        [b"LCS", k, k2, *d.one([], [b"LEN"], [b"IDX"], [b"IDX", b"WITHMATCHLEN"], [b"IDX", b"MINMATCHLEN", d.int])],
        [b"ECHO", v],
    )


def numbers(rng: random.Random) -> list[bytes]:
    d = Draw(rng)
    k = d.key
    return d.one(
        [b"INCR", k],
        [b"DECR", k],
        [b"INCRBY", k, d.int],
        [b"DECRBY", k, d.int],
        [b"INCRBYFLOAT", k, d.float],
        [b"SET", k, rng.choice(_INTEGERS + _FLOATS)],
        [b"HINCRBY", k, d.member, d.int],
        [b"HINCRBYFLOAT", k, d.member, d.float],
        [b"HSET", k, d.member, rng.choice(_INTEGERS + _FLOATS)],
        [b"ZINCRBY", k, d.float, d.member],
    )


def keyspace(rng: random.Random) -> list[bytes]:
    d = Draw(rng)
    k, k2 = d.key, d.key2
    conditions = d.one([], [], [b"NX"], [b"XX"], [b"GT"], [b"LT"], [b"NX", b"XX"], [b"GT", b"LT"], [b"BOGUS"])
    return d.one(
        [b"EXISTS", k, k2],
        [b"DEL", k, *d.one([], [k2])],
        [b"UNLINK", k],
        [b"TOUCH", k, k2],
        [b"TYPE", k],
        [b"COPY", k, k2, *d.one([], [b"REPLACE"], [b"DB", b"0"], [b"DB", b"1"], [b"BOGUS"])],
        [rng.choice((b"RENAME", b"RENAMENX")), k, k2],
        [rng.choice((b"EXPIRE", b"PEXPIRE")), k, d.expiry, *conditions],
        [rng.choice((b"EXPIREAT", b"PEXPIREAT")), k, rng.choice((b"4102444800", b"1", d.int)), *conditions],
        [rng.choice((b"EXPIRETIME", b"PEXPIRETIME")), k],
        [b"TTL", k],
        [b"PTTL", rng.choice((k, b"nokey"))],
        [b"PERSIST", k],
        [b"DBSIZE"],
        [b"KEYS", rng.choice((b"*", b"a*", b"[ab]", b"?", b"\\a", b"[^a]", b""))],
        [b"OBJECT", rng.choice((b"REFCOUNT", b"FREQ", b"BLA")), k],
        [b"OBJECT", b"ENCODING", rng.choice((b"nokey", k))] if rng.random() < 0.2 else [b"PING", d.value],
        [b"MEMORY", b"USAGE", b"nokey", *d.one([], [b"SAMPLES", d.int])],
        [b"RANDOMKEY"],
        [b"SELECT", rng.choice((b"0", b"1", b"x", b"-1"))],
        [b"SORT", k, *d.one([], [b"ALPHA"], [b"DESC"], [b"ALPHA", b"DESC"], [b"LIMIT", d.i, d.j], [b"BOGUS"])],
    )


def lists(rng: random.Random) -> list[bytes]:
    d = Draw(rng)
    k, k2, v = d.key, d.key2, d.value
    side = (b"LEFT", b"RIGHT")
    return d.one(
        [rng.choice((b"LPUSH", b"RPUSH")), k, v, rng.choice(_VALUES)],
        [rng.choice((b"LPUSHX", b"RPUSHX")), k, v],
        [rng.choice((b"LPOP", b"RPOP")), k],
        [rng.choice((b"LPOP", b"RPOP")), k, rng.choice((b"0", b"1", b"3", b"-1", d.int))],
        [b"LRANGE", k, d.i, d.j],
        [b"LLEN", k],
        [b"LINDEX", k, d.i],
        [b"LSET", k, d.i, v],
        [b"LREM", k, rng.choice((b"0", b"1", b"-1", d.int)), v],
        [b"LTRIM", k, d.i, d.j],
        [b"LINSERT", k, rng.choice((b"BEFORE", b"AFTER", b"MIDDLE")), v, rng.choice(_VALUES)],
        [b"LPOS", k, v, *d.one([], [b"RANK", d.int], [b"COUNT", d.int], [b"MAXLEN", d.int], [b"RANK", b"-1"])],
        [b"LMOVE", k, k2, rng.choice(side), rng.choice((*side, b"UP"))],
        [b"RPOPLPUSH", k, k2],
        [b"LMPOP", rng.choice((b"2", b"1", b"0", b"3", b"x")), k, k2, rng.choice(side), *d.one([], [b"COUNT", d.int])],
        [rng.choice((b"BLPOP", b"BRPOP")), k, k2, b"0.01"] if rng.random() < 0.02 else [b"LLEN", k2],
    )


def hashes(rng: random.Random) -> list[bytes]:
    d = Draw(rng)
    k, m, v = d.key, d.member, d.value
    return d.one(
        [b"HSET", k, m, v, *d.one([], [rng.choice(_MEMBERS), v])],
        [b"HMSET", k, m, v],
        [b"HSETNX", k, m, v],
        [b"HGET", k, m],
        [b"HMGET", k, m, b"m9"],
        [b"HDEL", k, m, *d.one([], [rng.choice(_MEMBERS)])],
        [b"HLEN", k],
        [b"HEXISTS", k, m],
        [b"HSTRLEN", k, m],
        [b"HGETALL", k],
        [b"HKEYS", k],
        [b"HVALS", k],
        [b"HRANDFIELD", k, *d.one([], [d.int], [d.int, b"WITHVALUES"], [b"0", b"WITHVALUES"])],
    )


def sets(rng: random.Random) -> list[bytes]:
    d = Draw(rng)
    k, k2, m = d.key, d.key2, d.member
    return d.one(
        [b"SADD", k, m, rng.choice((b"1", b"2", m, d.value))],
        [b"SREM", k, m],
        [b"SCARD", k],
        [b"SISMEMBER", k, m],
        [b"SMISMEMBER", k, m, b"m9"],
        [b"SMEMBERS", k],
        [rng.choice((b"SINTER", b"SUNION", b"SDIFF")), k, k2],
        [rng.choice((b"SINTERSTORE", b"SUNIONSTORE", b"SDIFFSTORE")), b"c", k, k2],
        [b"SINTERCARD", rng.choice((b"2", b"1", b"0", b"x")), k, k2, *d.one([], [b"LIMIT", d.int])],
        [b"SMOVE", k, k2, m],
        # A count below the set's size pops a random part of it, which would change the keyspace: none such.
        [b"SPOP", rng.choice((b"nokey", k)), rng.choice((b"0", b"-1", b"x", b"100", b"9223372036854775807", b""))],
        [b"SRANDMEMBER", k, *d.one([], [d.int])],
    )


_LEX = (b"-", b"+", b"[m1", b"(m2", b"[m3", b"(m4", b"m2", b"", b"[", b"(")


def sorted_sets(rng: random.Random) -> list[bytes]:
    d = Draw(rng)
    k, k2, m, f, i, j = d.key, d.key2, d.member, d.float, d.i, d.j
    low, high = rng.choice((b"", b"(")) + f, rng.choice((b"", b"(")) + rng.choice(_FLOATS)
    lex_low, lex_high = rng.choice(_LEX), rng.choice(_LEX)
    limit = d.one([], [b"LIMIT", d.index(), d.index()])
    scores = d.one([], [b"WITHSCORES"])
    flags = rng.sample((b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"), rng.randint(0, 2))
    return d.one(
        [b"ZADD", k, *flags, f, m, *d.one([], [d.float, rng.choice(_MEMBERS)])],
        [b"ZSCORE", k, m],
        [b"ZCARD", k],
        [b"ZREM", k, m],
        [b"ZRANGE", k, i, j, *d.one([], [b"WITHSCORES"], [b"REV"], [b"REV", b"WITHSCORES"], limit, [b"BYBOGUS"])],
        [b"ZRANGE", k, low, high, b"BYSCORE", *d.one([], [b"REV"]), *limit, *scores],
        [b"ZRANGE", k, lex_low, lex_high, b"BYLEX", *d.one([], [b"REV"]), *limit, *d.one([], [b"WITHSCORES"])],
        [rng.choice((b"ZRANGEBYSCORE", b"ZREVRANGEBYSCORE")), k, low, high, *scores, *limit],
        [rng.choice((b"ZRANGEBYLEX", b"ZREVRANGEBYLEX")), k, lex_low, lex_high, *limit],
        [rng.choice((b"ZREVRANGE", b"ZRANGE")), k, i, j, *scores],
        [b"ZRANGESTORE", b"c", k, *d.one([low, high, b"BYSCORE"], [i, j], [lex_low, lex_high, b"BYLEX"]), *limit],
        [b"ZCOUNT", k, low, high],
        [b"ZLEXCOUNT", k, lex_low, lex_high],
        [rng.choice((b"ZRANK", b"ZREVRANK")), k, m],
        [b"ZINCRBY", k, f, m],
        [b"ZMSCORE", k, m, b"m9"],
        [rng.choice((b"ZPOPMIN", b"ZPOPMAX")), k, *d.one([], [d.int])],
        [
            b"ZMPOP",
            rng.choice((b"2", b"1", b"0", b"x")),
            k,
            k2,
            rng.choice((b"MIN", b"MAX")),
            *d.one([], [b"COUNT", d.int]),
        ],
        [rng.choice((b"ZREMRANGEBYRANK", b"ZREMRANGEBYSCORE")), k, *d.one([i, j], [low, high])],
        [b"ZREMRANGEBYLEX", k, lex_low, lex_high],
        [rng.choice((b"ZUNION", b"ZINTER", b"ZDIFF")), rng.choice((b"2", b"1", b"0", b"3")), k, k2, *scores],
        [
            b"ZUNION",
            b"2",
            k,
            k2,
            b"WEIGHTS",
            f,
            b"2",
            b"AGGREGATE",
            rng.choice((b"SUM", b"MIN", b"MAX", b"AVG")),
            *scores,
        ],
        [rng.choice((b"ZINTERSTORE", b"ZUNIONSTORE")), b"c", b"2", k, k2, *d.one([], [b"WEIGHTS", f, f])],
        [b"ZDIFFSTORE", b"c", b"2", k, k2],
        [b"ZINTERCARD", rng.choice((b"2", b"0", b"x")), k, k2, *d.one([], [b"LIMIT", d.int])],
        [b"ZRANDMEMBER", k, *d.one([], [d.int], [d.int, b"WITHSCORES"])],
    )


def bitmaps(rng: random.Random) -> list[bytes]:
    d = Draw(rng)
    k, k2, i, j = d.key, d.key2, d.i, d.j
    offset = rng.choice((b"0", b"7", b"12", b"-1", b"4294967296", b"x", b""))
    field = rng.choice((b"u8", b"i8", b"u1", b"i64", b"u63", b"u64", b"x8"))
    return d.one(
        [b"SETBIT", k, offset, rng.choice((b"0", b"1", b"2", b"x"))],
        [b"GETBIT", k, offset],
        [b"BITCOUNT", k, *d.one([], [i, j], [i, j, rng.choice((b"BIT", b"BYTE", b"BOGUS"))], [i])],
        [b"BITPOS", k, rng.choice((b"0", b"1", b"2")), *d.one([], [i], [i, j], [i, j, rng.choice((b"BIT", b"BYTE"))])],
        [b"BITOP", rng.choice((b"AND", b"OR", b"XOR", b"NOT", b"NAND")), b"c", k, *d.one([], [k2])],
        [b"BITFIELD", k, b"GET", field, rng.choice((b"0", b"#1", b"-1", b"8"))],
        [b"BITFIELD", k, *d.one([], [b"OVERFLOW", rng.choice((b"WRAP", b"SAT", b"FAIL", b"BAD"))]),
         rng.choice((b"SET", b"INCRBY")), field, rng.choice((b"0", b"#1", b"3")), d.int],
        [b"BITFIELD_RO", k, b"GET", field, b"0", *d.one([], [b"SET", b"u8", b"0", b"1"])],
    )  # fmt: skip


def scans(rng: random.Random) -> list[bytes]:
    d = Draw(rng)
    options = [
        *d.one([], [b"MATCH", rng.choice((b"*", b"a*", b"m[12]", b"?"))]),
        *d.one([], [b"COUNT", rng.choice((b"100", b"0", b"-1", b"x", b"1000"))]),
    ]
    # Cursors Redis reads as 0, and ones it refuses; another cursor's meaning is each server's own.
    cursor = rng.choice((b"0", b"0", b"0", b"", b"-0", b"+0", b"x", b" 0", b"18446744073709551616", b"-"))
    return d.one(
        [b"SCAN", cursor, *options, *d.one([], [b"TYPE", rng.choice((b"string", b"list", b"zset", b"bogus"))])],
        [rng.choice((b"SSCAN", b"HSCAN", b"ZSCAN")), d.key, cursor, *options],
    )


def session(rng: random.Random) -> list[bytes]:
    """Commands on the connection or the server rather than the keyspace: HELLO and CLIENT (those whose replies do not
    carry ids or addresses), CONFIG of the parameters the server checks, pub/sub counts, stray transaction commands."""
    d = Draw(rng)
    return d.one(
        [b"HELLO", rng.choice((b"4", b"1", b"x", b"-1", b"9223372036854775808"))],
        [b"HELLO", *d.one([], [b"2"], [b"3"], [b"3", b"SETNAME", b"name"])],  # the run switches back after it
        [b"HELLO", b"3", b"AUTH", b"default", b"pw"],
        [b"HELLO", b"3", b"SETNAME", rng.choice((b"a b", b"\n"))],
        [b"CLIENT", b"SETNAME", rng.choice((b"name", b"", b"a b", b"x\n"))],
        [b"CLIENT", b"GETNAME"],
        [b"CLIENT", b"NO-EVICT", rng.choice((b"on", b"off", b"maybe"))],
        [b"CLIENT", b"REPLY", rng.choice((b"ON", b"BAD"))],
        [b"CLIENT", rng.choice((b"BOGUS", b"KILL", b"UNBLOCK")), *d.one([], [b"x"])],
        [b"CONFIG", b"SET", b"maxmemory", rng.choice((b"0", b"bla", b"1gb", b"-1", b"18446744073709551616", b"1zb"))],
        [b"CONFIG", b"SET", rng.choice((b"hz", b"timeout", b"maxclients")), rng.choice((b"x", b"1.5", b""))],
        [b"CONFIG", b"SET", rng.choice((b"appendonly", b"activedefrag")), rng.choice((b"no", b"maybe"))],
        [b"CONFIG", b"SET", rng.choice((b"databases", b"no-such-param")), b"1"],
        [b"CONFIG", b"GET", rng.choice((b"maxmemory", b"hash-max-*-entries", b"nosuch"))],
        [b"CONFIG", rng.choice((b"SET", b"GET", b"BOGUS"))],
        [b"PUBLISH", rng.choice((b"ch", b"")), d.value],
        [b"PUBSUB", b"NUMSUB", *d.one([], [b"ch"], [b"ch", b"ch2"])],
        [b"PUBSUB", rng.choice((b"NUMPAT", b"CHANNELS", b"BOGUS"))],
        [rng.choice((b"EXEC", b"DISCARD", b"UNWATCH"))],
        [b"PING", *d.one([], [d.value], [b"a", b"b"])],
        [b"ECHO"],
    )


_STREAM_IDS = (b"1-1", b"1-2", b"2-1", b"3", b"5-0", b"0-1", b"x")


# Ids at the edges: the special ones, the largest, past 64 bits, exclusive, with a wildcard sequence, malformed.
_EDGE_IDS = (
    b"-", b"+", b"0-0", b"0", b"(1-1", b"(-", b"(+", b"(", b"5-*", b"-*", b"18446744073709551615-18446744073709551615",
    b"18446744073709551615", b"18446744073709551616", b"1-18446744073709551615", b"1-18446744073709551616", b"-1",
    b"1-x", b"", b" 1", b"1\x00", b"1-1\x00x", b"1-2-3", b"01-01", b"$", b">",
)  # fmt: skip


def _stream_key(d: Draw) -> bytes:
    """Mostly the first key: a stream, its groups and their readers then meet within a few commands."""
    return KEYS[0] if d.rng.random() < 0.6 else d.key


def streams(rng: random.Random) -> list[bytes]:
    """XADD, XTRIM, XRANGE, XREVRANGE, XDEL, XLEN and non-blocking XREAD with edge-case ids and options (explicit
    ids only: a ``*`` id is the clock's)."""
    d = Draw(rng)
    k, k2, n = _stream_key(d), d.key2, rng.choice(_INTEGERS[:8])
    entry = rng.choice(_STREAM_IDS) if rng.random() < 0.6 else rng.choice(_EDGE_IDS)
    low, high = rng.choice(_EDGE_IDS), rng.choice(_EDGE_IDS)
    strategy = [rng.choice((b"MAXLEN", b"MINID", b"maxlen")), *d.one([], [b"="], [b"~"])]
    bound = rng.choice((n, d.int)) if strategy[0] != b"MINID" else rng.choice((entry, low))
    return d.one(
        [b"XADD", k, *d.one([], [b"NOMKSTREAM"]), entry, b"f", d.value, *d.one([], [b"g", b"w"])],
        [b"XADD", k, *strategy, bound, *d.one([], [b"LIMIT", n]), entry, b"f", b"v"],
        [b"XADD", k, *d.one([b"NOMKSTREAM"], [b"LIMIT", n], [b"MAXLEN", b"1", b"MINID", b"1"]), entry, b"f", b"v"],
        [b"XTRIM", k, *strategy, bound, *d.one([], [b"LIMIT", n])],
        [b"XTRIM", k, *d.one([b"LIMIT", n], [b"BOGUS", n])],
        [rng.choice((b"XRANGE", b"XREVRANGE")), k, low, high, *d.one([], [b"COUNT", n], [b"COUNT", d.int])],
        [b"XRANGE", k, rng.choice((b"-", b"0")), rng.choice((b"+", b"5"))],
        [b"XDEL", k, entry, *d.one([], [low], [entry])],
        [b"XLEN", k],
        [b"XREAD", *d.one([], [b"COUNT", n], [b"COUNT", d.int]), b"STREAMS", k, *d.one([low], [k2, low, high])],
        [b"XREAD", b"STREAMS", k, k2, *d.one([low], [low, entry])],
    )


def stream_groups(rng: random.Random) -> list[bytes]:
    """Streams and their consumer groups, in forms whose replies do not depend on the clock (explicit ids; no idle
    times, no XINFO CONSUMERS)."""
    d = Draw(rng)
    k, n = _stream_key(d), rng.choice(_INTEGERS[:8])
    entry, other = rng.choice(_STREAM_IDS), rng.choice(_STREAM_IDS)
    group, consumer = rng.choice((b"g1", b"g1", b"g1", b"g2")), rng.choice((b"c1", b"c2"))
    return d.one(
        [b"XADD", k, entry, b"f", d.value],
        [b"XADD", k, b"MAXLEN", rng.choice((b"1", b"3")), entry, b"f", b"v"],
        [b"XDEL", k, entry],
        [b"XRANGE", k, b"-", b"+"],
        [b"XGROUP", b"CREATE", k, group, rng.choice((b"0", b"$", entry)), *d.one([], [b"MKSTREAM"])],
        [b"XGROUP", b"SETID", k, group, rng.choice((b"0", b"$", entry))],
        [b"XGROUP", rng.choice((b"CREATECONSUMER", b"DELCONSUMER")), k, group, consumer],
        [b"XGROUP", b"DESTROY", k, group],
        [b"XREADGROUP", b"GROUP", group, consumer, *d.one([], [b"COUNT", n], [b"NOACK"]), b"STREAMS", k, b">"],
        [b"XREADGROUP", b"GROUP", group, consumer, b"STREAMS", k, rng.choice((b"0", entry))],
        [b"XREAD", *d.one([], [b"COUNT", n]), b"STREAMS", k, rng.choice((b"0", b"$", entry))],
        [b"XACK", k, group, entry, other],
        [b"XPENDING", k, group],
        [b"XPENDING", k, group, b"IDLE", b"3600000", b"-", b"+", n],
        [b"XCLAIM", k, group, consumer, b"0", entry, *d.one([b"JUSTID"], [b"FORCE"], [b"RETRYCOUNT", n])],
        [b"XAUTOCLAIM", k, group, consumer, b"0", other, *d.one([], [b"COUNT", n], [b"JUSTID"])],
        [b"XINFO", b"GROUPS", k],
    )


FAMILIES: list[tuple[Family, int]] = [
    (strings, 5),
    (numbers, 3),
    (keyspace, 4),
    (lists, 4),
    (hashes, 3),
    (sets, 3),
    (sorted_sets, 6),
    (bitmaps, 2),
    (scans, 1),
    (session, 2),
    (streams, 2),
    (stream_groups, 2),
]
"""Each family with its weight: how many commands it gives, relative to the others. Append a family to cover more."""

FOCUSED: list[tuple[Family, int]] = [(streams, 1), (stream_groups, 2)]
"""Families whose commands read back state that takes several of them to build (a stream, a group on it, entries
read and pending): a sequence drawn from them alone reaches it, one drawn from all rarely does."""
FOCUSED_SHARE = 0.1
# A focused sequence starts with some of these: a stream with entries, then a group to read them.
_FOCUSED_SETUP = (
    [b"XADD", KEYS[0], b"1-1", b"f", b"v"],
    [b"XADD", KEYS[0], b"2-1", b"f", b"w", b"g", b"x"],
    [b"XGROUP", b"CREATE", KEYS[0], b"g1", b"0"],
)

# Never mangled: the transaction's own commands keep the block well formed.
_KEEP = frozenset((b"MULTI", b"EXEC", b"DISCARD", b"WATCH"))


def _mangle(rng: random.Random, command: list[bytes]) -> list[bytes]:
    """``command`` with one thing wrong: an argument short, one too many, an unknown option, an unknown name, or
    only its name in lower case (which is fine)."""
    roll = rng.random()
    if roll < 0.3:
        return command[: rng.randint(1, max(len(command) - 1, 1))]
    if roll < 0.55:
        return [*command, rng.choice((b"BOGUS", b"1", b"", b"\x00"))]
    if roll < 0.7:
        return [rng.choice((b"NOSUCHCOMMAND", b"GETT", b"", b"\xff")), *command[1:]]
    return [command[0].lower(), *command[1:]]


def command(rng: random.Random, families: list[tuple[Family, int]] | None = None) -> list[bytes]:
    """One command from a family drawn by weight, mangled one time in ten."""
    table = FAMILIES if families is None else families
    family = rng.choices([f for f, _ in table], [w for _, w in table])[0]
    generated = family(rng)
    if rng.random() < 0.1 and generated[0] not in _KEEP:
        generated = _mangle(rng, generated)
        if generated[0].upper() == b"SPOP" and len(generated) == 2:
            generated = [generated[0], b"nokey"]  # SPOP without a count pops a random member: of no set, here
    return generated


def sequence(rng: random.Random) -> list[list[bytes]]:
    """A few commands, now and then inside a MULTI block (which may hold an unknown command: EXECABORT, or a nested
    MULTI or a WATCH), after a WATCH, or around a SUBSCRIBE/UNSUBSCRIBE pair. A share (:data:`FOCUSED_SHARE`) draws
    from :data:`FOCUSED` alone, after a stream and a group are made (or some of that)."""
    focused = rng.random() < FOCUSED_SHARE
    commands = [command(rng, FOCUSED if focused else None) for _ in range(rng.randint(1, 8))]
    if focused:
        commands = [*_FOCUSED_SETUP[: rng.randint(0, len(_FOCUSED_SETUP))], *commands]
    roll = rng.random()
    if roll < 0.15:
        inner = commands[: rng.randint(0, len(commands))]
        if rng.random() < 0.2:
            inner.insert(rng.randint(0, len(inner)), rng.choice(([b"NOSUCHCOMMAND"], [b"MULTI"], [b"WATCH", b"a"])))
        block = [[b"MULTI"], *inner, [rng.choice((b"EXEC", b"EXEC", b"DISCARD"))]]
        if rng.random() < 0.3:
            # WATCH, then maybe touch the watched key before MULTI: EXEC answers nil when it changed.
            block = [[b"WATCH", rng.choice(KEYS)], *([command(rng)] if rng.random() < 0.5 else []), *block]
        commands = [*block, *commands[len(inner) :]]
    elif roll < 0.18:
        channel = rng.choice((b"ch", b"ch2"))
        middle = rng.choice(([b"PING"], [b"PING", b"x"], [b"GET", b"a"], [b"PUBSUB", b"NUMSUB", channel]))
        commands = [[b"SUBSCRIBE", channel], middle, [b"UNSUBSCRIBE", channel], *commands]
    return commands
