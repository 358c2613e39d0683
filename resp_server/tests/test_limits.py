"""What one request can make the RESP server do: long replies without closing the connection, LRANGE in linear
time, and the caps on MULTI's queue (``max_queued``) and on replies whose size a request picks
(``max_reply_items``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

import resp_server
from resp_server.parser import encode_request
from resp_server.session import RespSession
from resp_server.store import KeyValueStore
from resp_server.tests.reference import TIMEOUT, RawClient


@pytest.fixture
def port() -> Iterator[int]:
    engine = resp_server.start(port=0, store=KeyValueStore(max_reply_items=1000), max_queued=50)
    try:
        yield int(engine.addrs[0].rsplit(":", 1)[1])
    finally:
        engine.stop()


def test_scan_of_hundreds_of_keys_answers_and_keeps_the_connection(port: int) -> None:
    # A listing of more than 256 keys is a chunked reply: SCAN joined it to bytes and the TypeError closed the
    # connection.
    client = redis.Redis(port=port, socket_timeout=TIMEOUT)
    try:
        client.mset({f"key:{i}": i for i in range(300)})
        cursor, keys = client.scan(0, count=1000)
        assert (cursor, sorted(keys)) == (0, sorted(f"key:{i}".encode() for i in range(300)))
        assert client.ping() is True
    finally:
        client.close()


def test_multi_queues_at_most_max_queued_commands_and_exec_then_aborts(port: int) -> None:
    client = RawClient(port)
    try:
        assert client.call("MULTI") == b"+OK\r\n"
        assert client.run([["INCR", "n"]] * 50) == [b"+QUEUED\r\n"] * 50
        assert client.call("INCR", "n") == b"-ERR MULTI holds 50 queued commands already (max-queued-commands)\r\n"
        assert client.call("EXEC") == b"-EXECABORT Transaction discarded because of previous errors.\r\n"
        assert client.call("GET", "n") == b"$-1\r\n"
        # Below the cap a transaction runs as before.
        assert client.run([["MULTI"], *[["INCR", "n"]] * 49, ["EXEC"]])[-1].startswith(b"*49\r\n:1\r\n:2\r\n")
    finally:
        client.close()


def test_a_million_queued_commands_are_refused_past_the_default_cap() -> None:
    session = RespSession(KeyValueStore())
    request = encode_request([b"SET", b"k", b"v"])
    session.receive(b"MULTI\r\n")
    out, _ = session.receive(request * session.max_queued)
    assert out == b"+QUEUED\r\n" * session.max_queued
    out, _ = session.receive(request * 3)
    assert out.count(b"-ERR MULTI holds") == 3
    assert len(session.queued) == session.max_queued
    assert session.receive(b"EXEC\r\n")[0].startswith(b"-EXECABORT")


def test_replies_a_request_sizes_are_capped_and_the_server_goes_on(port: int) -> None:
    client = RawClient(port)
    try:
        client.call("SADD", "s", "a", "b")
        client.call("RPUSH", "l", *[str(i) for i in range(1001)])
        too_long = b"-ERR reply would have more than 1000 items (max-reply-items)\r\n"
        assert client.call("SRANDMEMBER", "s", "-1001") == too_long
        assert client.call("SRANDMEMBER", "s", "-1000").startswith(b"*1000\r\n")
        assert client.call("LRANGE", "l", "0", "-1") == too_long
        assert client.call("LRANGE", "l", "1", "-1").startswith(b"*1000\r\n$1\r\n1\r\n")
        assert client.call("PING") == b"+PONG\r\n"
    finally:
        client.close()


def _lrange_seconds(sizes: tuple[int, ...], rounds: int = 3) -> list[float]:
    """The best of ``rounds`` timings of LRANGE 0 -1 over a list of each size, measured in turns so that a busy
    moment of the machine falls on every size alike."""
    sessions = []
    for size in sizes:
        session = RespSession(KeyValueStore())
        session.receive(encode_request([b"RPUSH", b"k", *[b"x"] * size]))
        sessions.append(session)
    request = encode_request([b"LRANGE", b"k", b"0", b"-1"])
    best = [float("inf")] * len(sizes)
    for _ in range(rounds):
        for i, session in enumerate(sessions):
            start = time.perf_counter()
            reply, _ = session.receive(request)
            best[i] = min(best[i], time.perf_counter() - start)
            assert reply.startswith(b"*%d\r\n" % sizes[i])
    return best


@pytest.mark.slow
def test_lrange_takes_time_linear_in_the_items() -> None:
    # Indexing a deque walks from its nearer end, so LRANGE by index was quadratic: 8 times the items took about 46
    # times as long. One walk takes 12 to 14 times as long (the bigger reply costs more than its share in allocation
    # and caches); the bound sits between the two, with room for a loaded machine on either side.
    small, large = _lrange_seconds((50_000, 400_000))
    assert large / small < 25, (small, large)
