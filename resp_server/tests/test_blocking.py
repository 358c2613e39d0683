"""Blocking pops (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP) and CLIENT UNBLOCK against a
real redis-server 7.0: a client waits, another feeds it, and both servers answer the same bytes."""

from __future__ import annotations

import time

import pytest

import resp_server
from resp_server.tests.reference import RawClient
from resp_server.tests.test_families import ports

__all__ = ["ports"]


def _waiting_then_fed(port: int, wait: list[str], feed: list[str]) -> tuple[bytes, bytes, bytes]:
    """A client blocks on ``wait`` and pipelines a PING after it; another runs ``feed``: the blocked reply,
    the PING's and the feeder's reply."""
    waiter, feeder = RawClient(port), RawClient(port)
    try:
        feeder.call("FLUSHALL")
        waiter.send(*wait)
        waiter.send("PING")
        # The waiter is blocked once CLIENT LIST shows it running its command.
        deadline = time.monotonic() + 5
        name = wait[0].lower()
        while f"cmd={name}".encode() not in feeder.call("CLIENT", "LIST") and time.monotonic() < deadline:
            pass
        fed = feeder.call(*feed)
        return waiter.read_reply(), waiter.read_reply(), fed
    finally:
        waiter.close()
        feeder.close()


@pytest.mark.parametrize(
    ("wait", "feed"),
    [
        (["BLPOP", "l", "0"], ["RPUSH", "l", "a", "b"]),
        (["BRPOP", "x", "l", "0"], ["LPUSH", "l", "a"]),
        (["BLMOVE", "l", "d", "RIGHT", "LEFT", "0"], ["RPUSH", "l", "a", "b"]),
        (["BLMPOP", "0", "1", "l", "LEFT", "COUNT", "3"], ["RPUSH", "l", "a", "b"]),
        (["BZPOPMIN", "z", "0"], ["ZADD", "z", "2", "b", "1", "a"]),
        (["BZMPOP", "0", "1", "z", "MAX", "COUNT", "5"], ["ZADD", "z", "2", "b", "1", "a"]),
        (["BRPOPLPUSH", "l", "l", "0"], ["RPUSH", "l", "a"]),
    ],
)
def test_a_blocked_client_is_served_by_the_write_that_feeds_it(
    ports: tuple[int, int], wait: list[str], feed: list[str]
) -> None:
    assert _waiting_then_fed(ports[1], wait, feed) == _waiting_then_fed(ports[0], wait, feed)


def test_a_waiter_whose_destination_holds_another_type_gets_wrongtype(ports: tuple[int, int]) -> None:
    for port in ports:
        waiter, feeder = RawClient(port), RawClient(port)
        try:
            feeder.run([["DEL", "l"], ["SET", "target", "nolist"]])
            waiter.send("BRPOPLPUSH", "l", "target", "0")
            deadline = time.monotonic() + 5
            while b"blocked_clients:1\r\n" not in feeder.call("INFO", "clients") and time.monotonic() < deadline:
                pass
            assert feeder.call("RPUSH", "l", "a", "b") == b":2\r\n"
            assert waiter.read_reply().startswith(b"-WRONGTYPE")
            assert feeder.call("LRANGE", "l", "0", "-1") == b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        finally:
            waiter.close()
            feeder.close()


def test_self_referential_blocking_move_keeps_the_item(ports: tuple[int, int]) -> None:
    for port in ports:
        client = RawClient(port)
        try:
            assert client.run([["DEL", "l"], ["LRANGE", "l", "0", "-1"]])[1] == b"*0\r\n"
            waiter = RawClient(port)
            try:
                waiter.send("BLMOVE", "l", "l", "RIGHT", "LEFT", "0")
                deadline = time.monotonic() + 5
                while b"blocked_clients:1\r\n" not in client.call("INFO", "clients") and time.monotonic() < deadline:
                    pass
                client.call("RPUSH", "l", "foo")
                assert waiter.read_reply() == b"$3\r\nfoo\r\n"
            finally:
                waiter.close()
            assert client.call("LRANGE", "l", "0", "-1") == b"*1\r\n$3\r\nfoo\r\n"
        finally:
            client.close()


@pytest.mark.parametrize("how", [[], ["TIMEOUT"], ["ERROR"]])
def test_client_unblock(ports: tuple[int, int], how: list[str]) -> None:
    answers: list[tuple[bytes, ...]] = []
    for port in ports:
        waiter, other = RawClient(port), RawClient(port)
        try:
            client_id = waiter.call("CLIENT", "ID")[1:-2].decode()
            other.call("DEL", "l")
            waiter.send("BLPOP", "l", "0")
            deadline = time.monotonic() + 5
            while b"blocked_clients:1\r\n" not in other.call("INFO", "clients") and time.monotonic() < deadline:
                pass
            unblocked = other.call("CLIENT", "UNBLOCK", client_id, *how)
            answers.append(
                (unblocked, waiter.read_reply(), waiter.call("PING"), other.call("CLIENT", "UNBLOCK", client_id))
            )
            answers.append((other.call("CLIENT", "UNBLOCK", "asd"), other.call("CLIENT", "UNBLOCK", client_id, "NO")))
        finally:
            waiter.close()
            other.close()
    assert answers[2:] == answers[:2]
    assert answers[0][0] == b":1\r\n"


def test_a_blocking_pop_times_out_with_a_null_and_goes_on(ports: tuple[int, int]) -> None:
    client = RawClient(ports[1])
    try:
        client.call("DEL", "l")
        started = time.monotonic()
        assert client.run([["BLPOP", "l", "0.2"], ["PING"]]) == [b"*-1\r\n", b"+PONG\r\n"]
        assert 0.15 <= time.monotonic() - started < 2
        client.call("HELLO", "3")
        assert client.call("BZPOPMIN", "z", "0.05") == b"_\r\n"
    finally:
        client.close()


def test_info_counts_the_blocked_clients(ports: tuple[int, int]) -> None:
    waiter, other = RawClient(ports[1]), RawClient(ports[1])
    try:
        other.call("DEL", "l")
        assert b"blocked_clients:0\r\n" in other.call("INFO", "clients")
        waiter.send("BLPOP", "l", "0")
        deadline = time.monotonic() + 5
        while b"blocked_clients:1\r\n" not in other.call("INFO", "clients") and time.monotonic() < deadline:
            pass
        assert b"blocked_clients:1\r\n" in other.call("INFO", "clients")
        other.call("RPUSH", "l", "a")
        assert waiter.read_reply() == b"*2\r\n$1\r\nl\r\n$1\r\na\r\n"
        assert b"blocked_clients:0\r\n" in other.call("INFO", "clients")
    finally:
        waiter.close()
        other.close()


def test_a_closed_waiter_is_forgotten(ports: tuple[int, int]) -> None:
    waiter, other = RawClient(ports[1]), RawClient(ports[1])
    try:
        other.call("DEL", "l")
        waiter.send("BLPOP", "l", "0")
        deadline = time.monotonic() + 5
        while b"cmd=blpop" not in other.call("CLIENT", "LIST") and time.monotonic() < deadline:
            pass
        waiter.close()
        while b"cmd=blpop" in other.call("CLIENT", "LIST") and time.monotonic() < deadline:
            pass
        # Nobody takes the pushed item: it stays in the list.
        assert other.run([["RPUSH", "l", "a"], ["LRANGE", "l", "0", "-1"]]) == [b":1\r\n", b"*1\r\n$1\r\na\r\n"]
    finally:
        other.close()


def test_a_session_blocked_after_a_big_reply_hands_it_out_and_waits() -> None:
    store = resp_server.KeyValueStore()
    waiter = resp_server.RespSession(store)
    encode = resp_server.encode_request
    waiter.receive(encode([b"RPUSH", b"big", *[b"x" * 10] * 2000]))
    out, close = waiter.receive(
        encode([b"LRANGE", b"big", b"0", b"-1"]) + encode([b"BLPOP", b"empty", b"0"]) + encode([b"PING"])
    )
    assert out.startswith(b"*2000\r\n") and out.endswith(b"$10\r\nxxxxxxxxxx\r\n") and not close
    assert waiter.blocker is not None and waiter.receive(encode([b"ECHO", b"later"])) == (b"", False)
    feeder = resp_server.RespSession(store, server=waiter.server)
    assert feeder.receive(encode([b"RPUSH", b"empty", b"v"])) == (b":1\r\n", False)
    assert waiter.pushed == [b"*2\r\n$5\r\nempty\r\n$1\r\nv\r\n"]
    assert waiter.receive(b"") == (b"+PONG\r\n$5\r\nlater\r\n", False)
