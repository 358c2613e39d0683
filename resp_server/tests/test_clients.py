"""The RESP example with real clients: redis-py 8 (its defaults: RESP3), redis-cli, redis-benchmark; types,
WATCH, INFO, CLIENT, and pub/sub across event loops with its output bound."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import redis

import netloop
from resp_server import server as resp_server
from resp_server.parser import encode_request
from tests.loopback import TIMEOUT, connect, recv_until_closed, wait_until

pytestmark = pytest.mark.timeout(60)


def port_of(engine: netloop.Engine) -> int:
    return int(engine.addrs[0].rpartition(":")[2])


@pytest.fixture
def engine() -> Iterator[netloop.Engine]:
    engine = resp_server.start(port=0, loops=2)  # two loops: clients land on both
    try:
        yield engine
    finally:
        engine.stop(timeout=TIMEOUT)
        engine.wait(TIMEOUT)


@pytest.fixture
def client(engine: netloop.Engine) -> Iterator[redis.Redis]:
    with redis.Redis(port=port_of(engine), socket_timeout=TIMEOUT) as client:  # redis-py's defaults: RESP3
        yield client


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def test_types_and_wrongtype(client: redis.Redis) -> None:
    client.rpush("l", "a", "b", "c")
    assert client.lpop("l") == b"a" and client.rpop("l", 2) == [b"c", b"b"] and client.exists("l") == 0
    client.lpush("l", "x", "y")
    assert client.llen("l") == 2 and client.lindex("l", 0) == b"y"
    client.hset("h", mapping={"f1": "1", "f2": "2"})
    assert client.hget("h", "f1") == b"1" and client.hlen("h") == 2 and client.hdel("h", "f1") == 1
    assert client.hgetall("h") == {b"f2": b"2"}
    assert client.hincrby("h", "f2", 5) == 7
    client.sadd("s", "m1", "m2", "m3")
    assert client.scard("s") == 3 and client.sismember("s", "m2") and client.srem("s", "m2") == 1
    assert client.smembers("s") == {b"m1", b"m3"}
    assert client.srandmember("s") in {b"m1", b"m3"}
    assert client.type("h") == b"hash" and client.type("s") == b"set" and client.type("l") == b"list"
    for call in (lambda: client.get("h"), lambda: client.lpush("s", "x"), lambda: client.sadd("h", "x")):
        with pytest.raises(redis.ResponseError, match=r"^WRONGTYPE Operation against a key holding the wrong kind"):
            call()


def test_string_and_keyspace_families(client: redis.Redis) -> None:
    assert client.execute_command("SETEX", "e", 100, "v") in (True, b"OK") and 0 < client.ttl("e") <= 100
    assert client.setnx("e", "other") is False
    assert client.getdel("e") == b"v" and client.get("e") is None
    client.set("s", "Hello World")
    assert client.getrange("s", 0, 4) == b"Hello" and client.strlen("s") == 11
    assert client.setrange("s", 6, "Redis") == 11 and client.get("s") == b"Hello Redis"
    assert client.append("s", "!") == 12
    client.set("f", "10.5")
    assert client.incrbyfloat("f", 0.1) == pytest.approx(10.6)
    assert client.msetnx({"a": "1", "b": "2"}) is True and client.msetnx({"a": "x", "c": "3"}) is False
    client.set("k1", "ohmytext")
    client.set("k2", "mynewtext")
    assert client.lcs("k1", "k2") == b"mytext"
    assert client.setbit("bits", 7, 1) == 0 and client.getbit("bits", 7) == 1 and client.bitcount("bits") == 1
    assert client.rename("a", "a2") is True and client.get("a2") == b"1"
    assert client.copy("a2", "a3") is True and client.get("a3") == b"1"
    client.expire("a3", 100)
    assert client.persist("a3") is True and client.ttl("a3") == -1
    cursor, keys = client.scan(0, match="a*", count=1000)
    assert cursor == 0 and set(keys) == {b"a2", b"a3"}
    assert client.randomkey() is not None
    assert client.object("encoding", "a2") == b"int"


def test_watch_transactions(engine: netloop.Engine, client: redis.Redis) -> None:
    client.set("balance", "10")
    with client.pipeline() as pipe:
        pipe.watch("balance")
        value = int(pipe.get("balance"))
        pipe.multi()
        pipe.set("balance", value + 1)
        assert pipe.execute() == [True]
    with redis.Redis(port=port_of(engine), socket_timeout=TIMEOUT) as other, client.pipeline() as pipe:
        pipe.watch("balance")
        other.set("balance", "100")  # someone else changes the watched key
        pipe.multi()
        pipe.set("balance", 0)
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.get("balance") == b"100"


def test_info_client_config_time(engine: netloop.Engine, client: redis.Redis) -> None:
    info = client.info()
    assert info["redis_version"] == "7.0.15" and info["redis_mode"] == "standalone"
    assert client.info("keyspace") == {} or "db0" in client.info("keyspace")
    assert "used_cpu_user" in client.info("cpu")
    with connect(engine.addrs[0]) as other:
        other.sendall(encode_request([b"CLIENT", b"SETNAME", b"second"]))
        assert other.recv(100) == b"+OK\r\n"
        listed = client.client_list()
        assert any(c["name"] == "second" for c in listed) and len(listed) >= 2
        victim = next(c for c in listed if c["name"] == "second")
        assert client.client_kill_filter(_id=victim["id"]) == 1
        assert recv_until_closed(other) == b""  # killed: its connection ends
    assert client.config_set("hz", "20") is True and client.config_get("hz") == {"hz": "20"}
    seconds, micros = client.time()
    assert seconds > 1_700_000_000 and 0 <= micros < 1_000_000
    assert client.execute_command("FUNCTION", "FLUSH") in (b"OK", "OK", True)


@pytest.mark.parametrize("protocol", [2, 3])
def test_pubsub_across_loops(engine: netloop.Engine, protocol: int) -> None:
    port = port_of(engine)
    with (
        redis.Redis(port=port, protocol=protocol, socket_timeout=TIMEOUT) as subscriber,
        redis.Redis(port=port, protocol=protocol, socket_timeout=TIMEOUT) as publisher,
    ):
        pubsub = subscriber.pubsub()
        pubsub.subscribe("news")
        pubsub.psubscribe("sport.*")
        for _ in range(2):
            assert pubsub.get_message(timeout=TIMEOUT)["type"] in ("subscribe", "psubscribe")
        assert publisher.pubsub_numsub("news") == [(b"news", 1)]
        assert publisher.pubsub_numpat() == 1 and publisher.pubsub_channels() == [b"news"]
        # Several publishers' connections: with two loops some are on the subscriber's loop, some not.
        others = [redis.Redis(port=port, protocol=protocol, socket_timeout=TIMEOUT) for _ in range(3)]
        try:
            sent = []
            for i, other in enumerate([publisher, *others]):
                assert other.publish("news", f"n{i}") == 1
                assert other.publish("sport.tennis", f"s{i}") == 1
                sent += [("message", b"news", f"n{i}".encode()), ("pmessage", b"sport.tennis", f"s{i}".encode())]
            got = []
            while len(got) < len(sent):
                message = pubsub.get_message(timeout=TIMEOUT)
                assert message is not None, f"only {got}"
                got.append((message["type"], message["channel"], message["data"]))
            assert got == sent
        finally:
            for other in others:
                other.close()
        loops = {c.get("laddr") for c in publisher.client_list()}
        assert loops  # CLIENT LIST answered with every client
        pubsub.unsubscribe("news")
        pubsub.punsubscribe()
        pubsub.close()


def test_a_subscriber_that_stops_reading_is_cut_off() -> None:
    engine = resp_server.start(port=0, loops=2)
    # A smaller bound than the server's 32 MiB, to keep the test short: the same mechanism.
    engine.loops[0].write_limit = engine.loops[1].write_limit = 2 * 1024 * 1024
    try:
        port = port_of(engine)
        silent = connect(engine.addrs[0])
        silent.sendall(encode_request([b"SUBSCRIBE", b"flood"]))
        with redis.Redis(port=port, socket_timeout=TIMEOUT) as publisher:
            wait_until(lambda: publisher.pubsub_numsub("flood") == [(b"flood", 1)], what="the subscription")
            payload = b"x" * 65536
            for _ in range(400):  # 25 MiB: far past the kernel's buffers and the bound
                if publisher.publish("flood", payload) == 0:
                    break
            wait_until(lambda: publisher.pubsub_numsub("flood") == [(b"flood", 0)], what="the cut")
            assert engine.stats()["closed_limit"] >= 1
            assert publisher.ping()  # everyone else is served
        try:
            recv_until_closed(silent)
        except ConnectionResetError:
            pass
        silent.close()
    finally:
        engine.stop(timeout=TIMEOUT)
        engine.wait(TIMEOUT)


def test_subscribed_resp2_connection_accepts_only_pubsub_commands(engine: netloop.Engine) -> None:
    with connect(engine.addrs[0]) as sock:
        sock.sendall(encode_request([b"SUBSCRIBE", b"c"]) + encode_request([b"GET", b"k"]) + encode_request([b"PING"]))
        expected = (
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
            b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in"
            b" this context\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        )
        data = b""
        while len(data) < len(expected):
            data += sock.recv(4096)
        assert data == expected


def test_redis_cli_info_client_list_hello_pipe_latency(engine: netloop.Engine) -> None:
    cli = _tool("redis-cli")
    port = str(port_of(engine))

    def run(*args: str, stdin: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            [cli, "-p", port, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=check
        )
        return done.stdout

    assert "redis_version:7.0.15" in run("info")
    assert re.search(r"^id=\d+ addr=127\.0\.0\.1:\d+ .*cmd=client", run("client", "list"), re.M)
    assert "proto" in run("hello", "3")
    mass = "".join(encode_request([b"SET", b"key:%d" % i, b"v%d" % i]).decode() for i in range(1000))
    out = run("--pipe", stdin=mass)
    assert "errors: 0, replies: 1000" in out, out
    assert run("dbsize").strip() == "1000"
    # --latency with --raw samples for one interval (-i), prints "min max avg samples" and exits.
    fields = run("--latency", "--raw", "-i", "0.2").split()
    assert len(fields) == 4 and int(fields[3]) > 0, fields


@pytest.mark.slow
def test_redis_benchmark_lists_hashes_sets(engine: netloop.Engine) -> None:
    bench = _tool("redis-benchmark")
    done = subprocess.run(
        [bench, "-p", str(port_of(engine)), "-c", "8", "-n", "2000", "-t", "lpush,lpop,hset,sadd", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rates = dict(re.findall(r"^\s*([A-Z_]+): ([\d.]+) requests per second", done.stdout.replace("\r", "\n"), re.M))
    assert set(rates) == {"LPUSH", "LPOP", "HSET", "SADD"}, done.stdout
    assert all(float(rate) > 0 for rate in rates.values())


BENCHMARK_TESTS = (
    "PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD", "HSET", "SPOP",
    "ZADD", "ZPOPMIN", "LPUSH (needed to benchmark LRANGE)", "LRANGE_100 (first 100 elements)",
    "LRANGE_300 (first 300 elements)", "LRANGE_500 (first 500 elements)", "LRANGE_600 (first 600 elements)",
    "MSET (10 keys)",
)  # fmt: skip
"""redis-benchmark 7.0's default tests, in the order it runs them."""


@pytest.mark.slow
def test_redis_benchmark_default_tests_complete_with_the_right_counts(engine: netloop.Engine) -> None:
    bench = _tool("redis-benchmark")
    done = subprocess.run(
        [bench, "-p", str(port_of(engine)), "-n", "1000", "-c", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = done.stdout.replace("\r", "\n")
    reported = re.findall(r"^====== (.+) ======\n\s+(\d+) requests completed", out, re.M)
    assert reported == [(name, "1000") for name in BENCHMARK_TESTS], out[-2000:]
    assert "Error" not in done.stderr + out
    with redis.Redis(port=port_of(engine), socket_timeout=TIMEOUT) as check:
        # Without -r every request hits the same key: INCR counted 1000, the lists' pushes and pops leave the
        # 1000 items LRANGE was given, and the set and sorted set were emptied by their pops.
        assert check.get("counter:__rand_int__") == b"1000"
        assert check.llen("mylist") == 1000
        assert [len(item) for item in check.lrange("mylist", 0, 599)] == [3] * 600  # -d's default size
        assert check.exists("myset", "myzset") == 0
        assert check.hlen("myhash") == 1
