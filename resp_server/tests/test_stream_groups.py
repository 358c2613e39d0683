"""Stream consumer groups (XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM, XINFO GROUPS/CONSUMERS/STREAM
FULL), XREAD, their keyspace events and their blocking forms, against a real redis-server 7.0: the same sequence on
both servers, every reply byte for byte Redis's in RESP2 and RESP3. Only the clock differs between the two servers:
idle times and delivery times are masked before comparing (``_masked``), nothing else."""

from __future__ import annotations

import re
import time

import pytest

from resp_server.tests.reference import RawClient
from resp_server.tests.test_families import Case, _split, assert_like_redis, ports, replies

__all__ = ["ports"]

# An idle time in XPENDING's rows or XINFO CONSUMERS, or a time in ms since the epoch (XINFO STREAM FULL's
# delivery and seen times): what the two servers' clocks make differ.
_IDLE_ROW = re.compile(rb"(\*4\r\n\$\d+\r\n\d+-\d+\r\n\$\d+\r\n[^\r]*\r\n):\d+\r\n")
_IDLE_FIELD = re.compile(rb"(\$4\r\nidle\r\n):\d+\r\n")
_EPOCH_MS = re.compile(rb":1\d{12}\r\n")


def _masked(reply: bytes) -> bytes:
    reply = _IDLE_ROW.sub(rb"\1:IDLE\r\n", reply)
    reply = _IDLE_FIELD.sub(rb"\1:IDLE\r\n", reply)
    return _EPOCH_MS.sub(b":TIME\r\n", reply)


def assert_like_redis_masked(ports: tuple[int, int], proto: int, commands: Case) -> None:
    expected = [_masked(reply) for reply in replies(ports[0], proto, commands)]
    got = [_masked(reply) for reply in replies(ports[1], proto, commands)]
    for command, want, have in zip(commands, expected, got, strict=True):
        assert (command, have) == (command, want)


STREAM = """XADD s 1-1 a 1
    XADD s 1-2 b 2
    XADD s 2-1 c 3"""

CASES = {
    "xgroup create, setid, destroy and their errors": _split("""
        XGROUP CREATE s g $
        XGROUP CREATE s g $ MKSTREAM
        XGROUP CREATE s g $ MKSTREAM
        EXISTS s
        XLEN s
        XGROUP CREATE s g2 0 ENTRIESREAD 3
        XGROUP CREATE s g3 0 ENTRIESREAD -2
        XGROUP CREATE s g3 0 ENTRIESREAD x
        XGROUP CREATE s g3 0 ENTRIESREAD
        XGROUP CREATE s g3 0 FOO
        XGROUP CREATE s g3 bad
        XGROUP CREATE s g3 +
        XGROUP CREATE s g3 -
        XGROUP CREATE s g3 1-x
        XGROUP CREATE s g3 0 MKSTREAM MKSTREAM MKSTREAM MKSTREAM
        XGROUP HELP
        XGROUP HELP x
        XGROUP FOO
        XGROUP CREATE s
        XGROUP
        XGROUP SETID s g 0
        XGROUP SETID s g 5-5 ENTRIESREAD 2
        XGROUP SETID s g -
        XGROUP SETID s g +
        XGROUP SETID s g x
        XGROUP SETID s g 0 MKSTREAM
        XGROUP SETID s g 0 ENTRIESREAD 1 x
        XGROUP SETID s nog 0
        XGROUP SETID nokey g 0
        XINFO GROUPS s
        XGROUP DESTROY s g
        XGROUP DESTROY s g
        XGROUP DESTROY nokey g
        XGROUP DESTROY s g x
        XINFO GROUPS s
        SET str x
        XGROUP CREATE str g $
        XGROUP CREATE str g $ MKSTREAM
        XGROUP DESTROY str g
    """),
    "consumers created, deleted, listed": _split(f"""
        {STREAM}
        XGROUP CREATE s g 0
        XGROUP CREATECONSUMER s g frank
        XGROUP CREATECONSUMER s g frank
        XGROUP CREATECONSUMER s nog frank
        XGROUP CREATECONSUMER nokey g frank
        XGROUP CREATECONSUMER s g
        XREADGROUP GROUP g alice COUNT 2 STREAMS s >
        XINFO CONSUMERS s g
        XGROUP DELCONSUMER s g alice
        XGROUP DELCONSUMER s g nobody
        XGROUP DELCONSUMER s nog x
        XPENDING s g
        XINFO CONSUMERS s g
        XINFO CONSUMERS s nog
        XINFO CONSUMERS nokey g
        XINFO CONSUMERS s
        XINFO HELP
        XINFO HELP x
        XINFO FOO s
        XINFO GROUPS nokey
        XINFO GROUPS s x
    """),
    "xreadgroup new entries, history, noack and errors": _split(f"""
        {STREAM}
        XGROUP CREATE s g 0
        XGROUP CREATE s g2 0
        XREADGROUP GROUP g alice STREAMS s >
        XREADGROUP GROUP g alice STREAMS s >
        XREADGROUP GROUP g2 bob COUNT 1 STREAMS s >
        XREADGROUP GROUP g2 bob STREAMS s 0
        XREADGROUP GROUP g2 bob STREAMS s 1-1
        XREADGROUP GROUP g2 bob COUNT 0 STREAMS s 0-0
        XREADGROUP GROUP g2 carol NOACK STREAMS s >
        XREADGROUP GROUP g2 carol STREAMS s 0
        XREADGROUP GROUP g2 nobody STREAMS s 0
        XPENDING s g2
        XREADGROUP GROUP g2 bob STREAMS s $
        XREADGROUP GROUP nog bob STREAMS s >
        XREADGROUP GROUP g bob STREAMS s
        XREADGROUP GROUP g bob STREAMS s > x
        XREADGROUP STREAMS s >
        XREADGROUP GROUP g bob COUNT x STREAMS s >
        XREADGROUP GROUP g bob BLOCK -1 STREAMS s >
        XREADGROUP GROUP g bob BLOCK x STREAMS s >
        XREADGROUP GROUP g bob FOO STREAMS s >
        XREADGROUP GROUP g bob STREAMS s 1-x
        XREADGROUP GROUP g bob STREAMS s -
        XREADGROUP GROUP g bob STREAMS nokey >
        XREADGROUP GROUP g
        SET str x
        XREADGROUP GROUP g bob STREAMS str >
        XDEL s 1-1
        XREADGROUP GROUP g alice STREAMS s 0
        XINFO GROUPS s
    """),
    "xread": _split("""
        XADD r 1-1 a 1
        XADD r 2-2 b 2
        XREAD STREAMS r 0
        XREAD COUNT 1 STREAMS r 0
        XREAD STREAMS r $
        XREAD STREAMS r 1-1
        XREAD STREAMS r missing 0 0
        XREAD STREAMS r >
        XREAD GROUP g c STREAMS r 0
        XREAD NOACK STREAMS r 0
        XREAD BLOCK x STREAMS r 0
        XREAD STREAMS r
        XREAD COUNT 1
        XREAD STREAMS r 1-x
        SET str x
        XREAD STREAMS str 0
        XREAD BLOCK 10 STREAMS r $
    """),
    "xadd options, xtrim, xrange, xdel": _split("""
        XADD s 1-1 a 1
        XADD s 1-* b 2
        XADD s 2-* c 3
        XADD s 0-0 a 1
        XADD s 0-* a 1
        XADD s 1 a 1
        XADD s 3-1 a
        XADD s x a 1
        XADD s NOMKSTREAM 4-1 a 1
        XADD nokey NOMKSTREAM 4-1 a 1
        EXISTS nokey
        XADD s MAXLEN 2 5-1 a 1
        XADD s MAXLEN = 1 6-1 a 1
        XADD s MAXLEN ~ 1 7-1 a 1
        XADD s MAXLEN -1 8-1 a 1
        XADD s MAXLEN x 8-1 a 1
        XADD s MAXLEN 1 MINID 1 8-1 a 1
        XADD s LIMIT 10 8-1 a 1
        XADD s MAXLEN 5 LIMIT 10 8-1 a 1
        XADD s MAXLEN ~ 5 LIMIT -1 8-1 a 1
        XADD s MINID 7 9-1 a 1
        XRANGE s - +
        XTRIM s MAXLEN 0
        XTRIM s
        XTRIM s FOO
        XTRIM nokey MAXLEN 0
        XINFO STREAM s
        XADD r 1-1 a 1
        XADD r 2-1 b 2
        XADD r 3-1 c 3
        XRANGE r - + COUNT 1
        XRANGE r - + COUNT 0
        XRANGE r (1-1 +
        XRANGE r - (3-1
        XRANGE r 2 2
        XRANGE r x +
        XRANGE r - + FOO
        XREVRANGE r + - COUNT 2
        XREVRANGE r (3-1 -
        XRANGE nokey - +
        XRANGE r (- +
        XRANGE r - (0-0
        XDEL r 1-1 x
        XDEL r 1-1 9-9
        XDEL r 1-1
        XDEL nokey x
        XADD m 18446744073709551615-18446744073709551615 a 1
        XADD m * a 1
        XADD m2 18446744073709551615-18446744073709551614 a 1
        XADD m2 18446744073709551615-* a 1
        XADD m2 18446744073709551615-* a 1
        SET str x
        XADD str 1-1 a 1
        XRANGE str - +
        XTRIM str MAXLEN 1
    """),
    "xack and xpending": _split(f"""
        {STREAM}
        XGROUP CREATE s g 0
        XPENDING s g
        XPENDING s g - + 10
        XREADGROUP GROUP g alice COUNT 2 STREAMS s >
        XREADGROUP GROUP g bob STREAMS s >
        XPENDING s g
        XPENDING s g - + 10
        XPENDING s g - + 1
        XPENDING s g - + 0
        XPENDING s g - + -1
        XPENDING s g - + 10 alice
        XPENDING s g - + 10 nobody
        XPENDING s g (1-1 + 10
        XPENDING s g - (2-1 10
        XPENDING s g 1 1 10
        XPENDING s g IDLE 0 - + 10
        XPENDING s g IDLE 100000 - + 10
        XPENDING s g IDLE x - + 10
        XPENDING s g IDLE 0 - +
        XPENDING s g - + x
        XPENDING s g x + 1
        XPENDING s g - x 1
        XPENDING s g (- + 1
        XPENDING s g - ( 1
        XPENDING s g - +
        XPENDING s g - + 10 alice x y
        XPENDING s nog
        XPENDING nokey g
        XPENDING nokey g - + 10
        XACK s g 1-1 9-9
        XACK s g 1-1
        XACK s g x
        XACK s g 1-2 x
        XACK s nog 1-2
        XACK nokey g 1-2
        XPENDING s g
        SET str x
        XACK str g 1-1
        XPENDING str g
    """),
    "xclaim options": _split(f"""
        {STREAM}
        XGROUP CREATE s g 0
        XREADGROUP GROUP g alice STREAMS s >
        XCLAIM s g carol 0 1-2 JUSTID
        XCLAIM s g carol 0 1-2 2-1 JUSTID RETRYCOUNT 5
        XPENDING s g - + 10
        XCLAIM s g carol 100000 1-1
        XCLAIM s g carol -5 1-1
        XCLAIM s g dave 0 9-9 FORCE
        XCLAIM s g dave 0 1-1 FORCE JUSTID
        XCLAIM s g dave 0 1-1 FORCE
        XCLAIM s g dave 0 1-1 IDLE 100000
        XPENDING s g IDLE 50000 - + 10
        XCLAIM s g dave 0 1-1 TIME 0 RETRYCOUNT 9
        XCLAIM s g dave x 1-1
        XCLAIM s g dave 0 1-1 FOO
        XCLAIM s g dave 0 1-1 IDLE x
        XCLAIM s g dave 0 1-1 TIME x
        XCLAIM s g dave 0 1-1 RETRYCOUNT x
        XCLAIM s g dave 0 1-1 LASTID x
        XCLAIM s g dave 0 1-1 LASTID 5-0 JUSTID
        XCLAIM s g dave 0 1-1 IDLE
        XINFO GROUPS s
        XCLAIM s nog dave 0 1-1
        XCLAIM nokey g dave 0 1-1
        XDEL s 1-2
        XCLAIM s g dave 0 1-2
        XPENDING s g - + 10
        XINFO CONSUMERS s g
        SET str x
        XCLAIM str g a 0 1-1
    """),
    "xautoclaim": _split("""
        XADD s 1-1 a 1
        XADD s 1-2 b 2
        XADD s 2-1 c 3
        XADD s 3-1 d 4
        XGROUP CREATE s g 0
        XREADGROUP GROUP g alice STREAMS s >
        XDEL s 1-2
        XAUTOCLAIM s g erin 0 0 COUNT 1
        XAUTOCLAIM s g erin 0 0 COUNT 1
        XAUTOCLAIM s g erin 0 0
        XAUTOCLAIM s g erin 0 (1-1 JUSTID
        XAUTOCLAIM s g erin 100000 0
        XAUTOCLAIM s g erin 0 0 COUNT 0
        XAUTOCLAIM s g erin 0 0 COUNT x
        XAUTOCLAIM s g erin 0 0 COUNT
        XAUTOCLAIM s g erin 0 0 FOO
        XAUTOCLAIM s g erin x 0
        XAUTOCLAIM s g erin 0 x
        XAUTOCLAIM s g erin 0 -
        XAUTOCLAIM s g erin 0 +
        XAUTOCLAIM s nog erin 0 0
        XAUTOCLAIM nokey g erin 0 0
        XPENDING s g
        XPENDING s g - + 10
        SET str x
        XAUTOCLAIM str g a 0 0
    """),
    "lag and entries-read through deletions": _split("""
        XGROUP CREATE s g $ MKSTREAM
        XINFO GROUPS s
        XADD s 1-1 a 1
        XADD s 2-1 b 2
        XADD s 3-1 c 3
        XADD s 4-1 d 4
        XGROUP CREATE s g2 0
        XGROUP CREATE s g3 2-1 ENTRIESREAD 2
        XINFO GROUPS s
        XREADGROUP GROUP g a COUNT 1 STREAMS s >
        XINFO GROUPS s
        XDEL s 3-1
        XINFO GROUPS s
        XREADGROUP GROUP g a STREAMS s >
        XREADGROUP GROUP g2 a COUNT 1 STREAMS s >
        XINFO GROUPS s
        XDEL s 1-1
        XINFO GROUPS s
        XGROUP SETID s g 0 ENTRIESREAD 0
        XINFO GROUPS s
        XINFO STREAM s
        XREADGROUP GROUP g b STREAMS s >
        XINFO GROUPS s
    """),
    "xinfo stream full with groups": _split(f"""
        {STREAM}
        XGROUP CREATE s g 0
        XGROUP CREATE s h $
        XREADGROUP GROUP g alice COUNT 2 STREAMS s >
        XREADGROUP GROUP g bob STREAMS s >
        XINFO STREAM s FULL
        XINFO STREAM s FULL COUNT 1
        XINFO STREAM s FULL COUNT 0
        XINFO STREAM s FULL COUNT -1
        XINFO STREAM s FULL COUNT x
        XINFO STREAM s FULL x 1
        XINFO STREAM s BLA
        XINFO STREAM s
        XINFO STREAM nokey
    """),
    "transactions": _split(f"""
        {STREAM}
        XGROUP CREATE s g 0
        MULTI
        XREADGROUP GROUP g alice COUNT 1 STREAMS s >
        XREADGROUP GROUP g alice BLOCK 0 STREAMS s >
        XREAD BLOCK 0 STREAMS s $
        XACK s g 1-1
        EXEC
        XPENDING s g
        MULTI
        XGROUP CREATE s g $
        EXEC
        MULTI
        SET foo bar
        SAVE
        EXEC
        MULTI
        SHUTDOWN
        EXEC
        GET foo
    """),
}


@pytest.mark.parametrize("proto", [2, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_group_commands_reply_as_redis(ports: tuple[int, int], case: str, proto: int) -> None:
    assert_like_redis_masked(ports, proto, CASES[case])


def _events(port: int, commands: Case) -> list[bytes]:
    """The keyspace and keyevent messages ``commands`` cause, as a subscriber to every channel receives them."""
    subscriber, client = RawClient(port), RawClient(port)
    try:
        client.run([["FLUSHALL"], ["CONFIG", "SET", "notify-keyspace-events", "KEA"]])
        subscriber.call("PSUBSCRIBE", "*")
        client.run(commands)
        client.call("PUBLISH", "done", "1")
        messages = []
        while b"$4\r\ndone\r\n" not in (message := subscriber.read_reply()):
            messages.append(message)
        return messages
    finally:
        client.run([["CONFIG", "SET", "notify-keyspace-events", ""]])
        subscriber.close()
        client.close()


def test_group_commands_fire_redis_keyspace_events(ports: tuple[int, int]) -> None:
    commands = _split("""
        XGROUP CREATE s g $ MKSTREAM
        XGROUP CREATE s g $ MKSTREAM
        XGROUP CREATECONSUMER s g Bob
        XGROUP CREATECONSUMER s g Bob
        XADD s 1-1 f v
        XREADGROUP GROUP g Alice STREAMS s >
        XREADGROUP GROUP g Alice STREAMS s >
        XCLAIM s g Mike 0 1-1 FORCE
        XAUTOCLAIM s g Bob 0 1-1
        XAUTOCLAIM s g Zed 0 1-1
        XACK s g 1-1
        XPENDING s g
        XGROUP DELCONSUMER s g Lee
        XGROUP DELCONSUMER s g Bob
        XGROUP SETID s g 0
        XGROUP DESTROY s g
        XGROUP DESTROY s g
        XADD s MAXLEN 1 2-1 f v
        XADD s MAXLEN 5 3-1 f v
        XTRIM s MAXLEN 5
        XTRIM s MAXLEN 0
        XDEL s 9-9
        XADD s 4-1 f v
        XDEL s 4-1
    """)
    events = _events(ports[1], commands)
    assert b"xgroup-createconsumer" in b"".join(events)
    assert events == _events(ports[0], commands)


def _blocked_then_fed(port: int, proto: int, setup: Case, wait: list[str], feed: Case
                      ) -> tuple[bytes, bytes, list[bytes]]:  # fmt: skip
    """After ``setup``, a client of protocol ``proto`` blocks on ``wait`` with a PING pipelined after it; another
    runs ``feed``: the blocked reply, the PING's and the feeder's replies."""
    waiter, feeder = RawClient(port), RawClient(port)
    try:
        feeder.call("FLUSHALL")
        feeder.run(setup)
        if proto == 3:
            waiter.call("HELLO", "3")
        waiter.send(*wait)
        waiter.send("PING")
        # The waiter is blocked once INFO counts it among the blocked clients.
        deadline = time.monotonic() + 5
        while b"blocked_clients:1\r\n" not in (info := feeder.call("INFO", "clients")) and time.monotonic() < deadline:
            pass
        assert b"blocked_clients:1\r\n" in info
        fed = feeder.run(feed)
        return waiter.read_reply(), waiter.read_reply(), fed
    finally:
        waiter.close()
        feeder.close()


GROUP = [["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"]]


@pytest.mark.parametrize(
    ("setup", "wait", "feed"),
    [
        (GROUP, ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"], [["XADD", "s", "1-1", "a", "1"]]),
        (
            [*GROUP, ["XGROUP", "CREATE", "x", "g", "$", "MKSTREAM"]],
            ["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "NOACK", "BLOCK", "0", "STREAMS", "x", "s", ">", ">"],
            [["XADD", "s", "1-1", "a", "1"], ["XPENDING", "s", "g"], ["XINFO", "GROUPS", "s"]],
        ),
        (
            GROUP,
            ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"],
            [["XGROUP", "DESTROY", "s", "g"]],
        ),
        (GROUP, ["XREAD", "BLOCK", "0", "STREAMS", "s", "$"], [["XADD", "s", "5-5", "a", "1"]]),
        ([], ["XREAD", "BLOCK", "0", "STREAMS", "s", "0"], [["XADD", "s", "5-5", "a", "1"], ["XLEN", "s"]]),
        (GROUP, ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"], [["DEL", "s"]]),
        (GROUP, ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"], [["SET", "s", "x"]]),
        (GROUP, ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"], [["FLUSHALL"]]),
        (
            GROUP,
            ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"],
            [["MULTI"], ["DEL", "s"], ["SADD", "s", "e"], ["EXEC"]],
        ),
        (
            GROUP,
            ["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
            [["DEL", "s"], ["SET", "s", "x"], ["DEL", "s"], ["XADD", "s", "7-7", "f", "v"]],
        ),
    ],
)
@pytest.mark.parametrize("proto", [2, 3])
def test_a_blocked_stream_reader_is_served_as_by_redis(
    ports: tuple[int, int], proto: int, setup: Case, wait: list[str], feed: Case
) -> None:
    got = _blocked_then_fed(ports[1], proto, setup, wait, feed)
    assert got == _blocked_then_fed(ports[0], proto, setup, wait, feed)


def test_a_blocked_group_reader_times_out_with_a_null(ports: tuple[int, int]) -> None:
    for proto in (2, 3):
        commands = [*GROUP, ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "20", "STREAMS", "s", ">"]]
        assert_like_redis(ports, proto, commands)


def test_pending_entries_are_only_the_unacknowledged_deliveries(ports: tuple[int, int]) -> None:
    """One pending entry per entry delivered and not acknowledged: NOACK reads leave none, XACK removes them, and a
    consumer deleted takes its entries with it."""
    client = RawClient(ports[1])
    try:
        client.run([["FLUSHALL"], *GROUP, *(["XADD", "s", "*", "f", str(i)] for i in range(500))])
        assert client.call("XREADGROUP", "GROUP", "g", "c", "NOACK", "STREAMS", "s", ">").count(b"$1\r\nf\r\n") == 500
        assert client.call("XPENDING", "s", "g") == b"*4\r\n:0\r\n$-1\r\n$-1\r\n*-1\r\n"
        client.call("XGROUP", "SETID", "s", "g", "0")
        ids = re.findall(rb"\$\d+\r\n(\d+-\d+)\r\n", client.call("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"))
        assert len(ids) == 500
        assert client.call("XPENDING", "s", "g").startswith(b"*4\r\n:500\r\n")
        assert client.call("XACK", "s", "g", *(i.decode() for i in ids[:400])) == b":400\r\n"
        assert client.call("XPENDING", "s", "g").startswith(b"*4\r\n:100\r\n")
        assert client.call("XGROUP", "DELCONSUMER", "s", "g", "c") == b":100\r\n"
        assert client.call("XPENDING", "s", "g") == b"*4\r\n:0\r\n$-1\r\n$-1\r\n*-1\r\n"
    finally:
        client.close()


def _events_of_served_waiter(port: int, setup: Case, wait: list[str], feed: Case) -> list[bytes]:
    """The keyspace messages when a client waiting on ``wait`` is served by ``feed`` (then a SET of another key)."""
    subscriber, waiter, feeder = RawClient(port), RawClient(port), RawClient(port)
    try:
        feeder.run([["FLUSHALL"], *setup, ["CONFIG", "SET", "notify-keyspace-events", "KEA"]])
        subscriber.call("PSUBSCRIBE", "*")
        waiter.send(*wait)
        deadline = time.monotonic() + 5
        while b"blocked_clients:1\r\n" not in (info := feeder.call("INFO", "clients")) and time.monotonic() < deadline:
            pass
        assert b"blocked_clients:1\r\n" in info
        feeder.run([*feed, ["SET", "after", "1"], ["PUBLISH", "done", "1"]])
        waiter.read_reply()
        messages = []
        while b"$4\r\ndone\r\n" not in (message := subscriber.read_reply()):
            messages.append(message)
        return messages
    finally:
        feeder.run([["CONFIG", "SET", "notify-keyspace-events", ""]])
        for client in (subscriber, waiter, feeder):
            client.close()


@pytest.mark.parametrize(
    ("setup", "wait", "feed"),
    [
        ([], ["BLPOP", "l", "0"], [["RPUSH", "l", "a"]]),
        ([], ["BZPOPMIN", "z", "0"], [["ZADD", "z", "1", "a", "2", "b"]]),
        (GROUP, ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"], [["XADD", "s", "1-1", "f", "v"]]),
    ],
)
def test_a_served_waiter_fires_its_events_when_served(
    ports: tuple[int, int], setup: Case, wait: list[str], feed: Case
) -> None:
    """The events of the command that served a waiting client, then the waiter's own (its pop, its new consumer),
    under the waiter's command's name and before whatever runs next, as in Redis."""
    got = _events_of_served_waiter(ports[1], setup, wait, feed)
    assert got == _events_of_served_waiter(ports[0], setup, wait, feed)
