"""The RESP example server on real sockets: redis-py, redis-cli and redis-benchmark against it in-process."""

from __future__ import annotations

import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import netloop
from resp_server import server as resp_server
from resp_server.parser import encode_request
from resp_server.store import KeyValueStore
from resp_server.tests.test_store import FakeClock
from tests.loopback import TIMEOUT, connect, recv_exact, recv_until_closed

ROOT = Path(__file__).resolve().parents[2]


class WatchedStore(KeyValueStore):
    """A store that counts its active-expiry passes so a test can wait for the next one."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.passes = 0
        self.changed = threading.Condition()

    def active_expire(self, budget: float = 0.001) -> int:
        deleted = super().active_expire(budget)
        with self.changed:
            self.passes += 1
            self.changed.notify_all()
        return deleted

    def wait_passes(self, n: int) -> None:
        """Wait until ``n`` more passes have run from now."""
        with self.changed:
            target = self.passes + n
            assert self.changed.wait_for(lambda: self.passes >= target, TIMEOUT), "no active expiry pass"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000_000)


@pytest.fixture
def store(clock: FakeClock) -> WatchedStore:
    return WatchedStore(clock)


def stop(engine: netloop.Engine) -> None:
    engine.stop(timeout=TIMEOUT)
    assert engine.wait(TIMEOUT), "engine did not stop"


@pytest.fixture
def engine(store: WatchedStore) -> Iterator[netloop.Engine]:
    engine = resp_server.start(port=0, store=store)
    yield engine
    stop(engine)


def port_of(engine: netloop.Engine) -> int:
    return int(engine.addrs[0].rpartition(":")[2])


@pytest.fixture
def client(engine: netloop.Engine) -> Iterator[redis.Redis]:
    client = redis.Redis(port=port_of(engine), protocol=2, socket_timeout=TIMEOUT)
    yield client
    client.close()


# -- redis-py ---------------------------------------------------------------------------------------------


def test_strings_with_redis_py(client: redis.Redis) -> None:
    assert client.ping() is True
    assert client.echo("hi") == b"hi"
    assert client.get("k") is None
    assert client.set("k", "v") is True
    assert client.get("k") == b"v"
    assert client.set("k", "w", nx=True) is None
    assert client.set("k", "w", xx=True) is True
    assert client.set("other", "x", xx=True) is None
    assert client.set("k", "z", get=True) == b"w"
    assert client.mset({"a": "1", "b": "2"}) is True
    assert client.mget("a", "b", "missing") == [b"1", b"2", None]
    assert client.exists("a", "b", "missing", "a") == 3
    assert client.delete("a", "missing") == 1
    assert client.incr("n") == 1
    assert client.incrby("n", 41) == 42
    assert client.decr("n") == 41
    assert client.decrby("n", 40) == 1
    assert client.dbsize() == 3
    assert sorted(client.keys("*")) == [b"b", b"k", b"n"]
    assert sorted(client.keys("[bk]")) == [b"b", b"k"]
    assert client.execute_command("SELECT", 0) is True
    assert client.config_get("save") == {"save": ""}
    assert client.flushdb() is True
    assert client.dbsize() == 0
    client.set("x", "1")
    assert client.flushall() is True
    assert client.keys() == []


def test_errors_are_replies_not_disconnects(client: redis.Redis) -> None:
    client.set("s", "text")
    with pytest.raises(redis.ResponseError, match=r"^value is not an integer or out of range$"):
        client.incr("s")
    client.set("big", str(2**63 - 1))
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        client.incr("big")
    with pytest.raises(redis.ResponseError, match=r"^unknown command 'NOPE'"):
        client.execute_command("NOPE", "x")
    with pytest.raises(redis.ResponseError, match=r"^wrong number of arguments for 'get' command$"):
        client.execute_command("GET")
    with pytest.raises(redis.ResponseError, match=r"^syntax error$"):
        client.execute_command("SET", "k", "v", "NX", "XX")
    assert client.ping() is True  # the same connection is still served


def test_redis_py_with_its_defaults(engine: netloop.Engine) -> None:
    # redis-py 8 opens with HELLO 3 and CLIENT SETINFO: RESP3 maps and sets come back as dicts and sets.
    with redis.Redis(port=port_of(engine), socket_timeout=TIMEOUT) as client:
        assert client.ping() is True
        assert client.connection_pool.get_connection().protocol in (3, "3")
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        client.hset("h", mapping={"a": "1", "b": "2"})
        assert client.hgetall("h") == {b"a": b"1", b"b": b"2"}
        client.sadd("s", "x", "y")
        assert client.smembers("s") == {b"x", b"y"}
        client.rpush("l", "a", "b", "c")
        assert client.lrange("l", 0, -1) == [b"a", b"b", b"c"]
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            client.get("l")
        pipe = client.pipeline()
        pipe.incr("n").incr("n").get("n")
        assert pipe.execute() == [1, 2, b"2"]
        assert client.client_id() > 0
        assert client.client_setname("tester") is True
        assert client.client_getname() == "tester" or client.client_getname() == b"tester"
        info = client.info()
        assert info["redis_version"] == "7.0.15" and info["connected_clients"] >= 1


def test_expiry_with_redis_py(client: redis.Redis, clock: FakeClock) -> None:
    assert client.set("k", "v", ex=10) is True
    assert client.ttl("k") == 10
    assert client.pttl("k") == 10_000
    assert client.ttl("missing") == -2
    client.set("forever", "v")
    assert client.ttl("forever") == -1
    assert client.expire("forever", 100, nx=True) is True
    assert client.expire("forever", 50, gt=True) is False
    assert client.pexpire("forever", 500_000, gt=True) is True
    assert client.pttl("forever") == 500_000
    assert client.set("p", "v", px=1500) is True
    clock.now += 1500
    assert client.get("p") == b"v"  # alive until its deadline has passed
    clock.now += 1
    assert client.get("p") is None
    clock.now += 10_000
    assert client.get("k") is None
    assert client.exists("k") == 0
    assert client.expire("k", 5) is False
    assert client.set("gone", "v") is True
    assert client.expire("gone", -1) is True
    assert client.exists("gone") == 0


def test_active_expiry_runs_on_the_ticker(client: redis.Redis, store: WatchedStore, clock: FakeClock) -> None:
    client.mset({f"k{i}": "v" for i in range(50)})
    for i in range(50):
        client.pexpire(f"k{i}", 10)
    client.set("keep", "v")
    clock.now += 11
    # DBSIZE counts expired keys nobody touched; only active expiry can bring it down.
    store.wait_passes(2)  # the second pass started after the clock moved
    assert client.dbsize() == 1


def test_pipeline_without_transaction(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.set("a", "1").incr("a").incrby("a", 10).get("a").mget("a", "nope").delete("a").exists("a")
    assert pipe.execute() == [True, 2, 12, b"12", [b"12", None], 1, 0]


def test_pipeline_with_transaction(client: redis.Redis) -> None:
    pipe = client.pipeline()
    pipe.set("a", "5").incr("a").get("a")
    assert pipe.execute() == [True, 6, b"6"]


def test_large_value_round_trip(client: redis.Redis) -> None:
    value = bytes(range(256)) * 8192  # 2 MiB: arrives and leaves in many pieces
    assert client.set("big", value) is True
    assert client.get("big") == value


def test_ipv6(store: WatchedStore) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        engine = resp_server.start("::1", 0, store=store)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        assert engine.addrs[0].startswith("tcp://[::1]:")
        with redis.Redis(host="::1", port=port_of(engine), protocol=2, socket_timeout=TIMEOUT) as client:
            assert client.set("k", "v") is True
            assert client.get("k") == b"v"
    finally:
        stop(engine)


def test_shared_keyspace_across_loops(store: WatchedStore) -> None:
    engine = resp_server.start(port=0, loops=2, store=store)
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            with redis.Redis(port=port_of(engine), protocol=2, socket_timeout=TIMEOUT) as client:
                for _ in range(100):
                    client.incr("n")
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=bump) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert not errors
        assert store.get(b"n") == b"400"
    finally:
        stop(engine)


@pytest.mark.parametrize(("loops", "locked"), [(1, False), (2, True)])
def test_commands_run_under_the_lock_only_with_several_loops(store: WatchedStore, loops: int, locked: bool) -> None:
    handler = resp_server.RespHandler(store)
    engine = netloop.start(handler, resp_server.address("127.0.0.1", 0), num_event_loop=loops)
    try:
        assert (handler._lock is not None) == locked
    finally:
        stop(engine)


# -- raw sockets ------------------------------------------------------------------------------------------


def test_many_pipelined_requests_in_one_write(engine: netloop.Engine) -> None:
    with connect(engine.addrs[0]) as sock:
        sock.sendall(encode_request([b"PING"]) * 500 + b"PING\r\n" * 500 + encode_request([b"INCR", b"n"]))
        assert recv_exact(sock, 1000 * 7 + 4) == b"+PONG\r\n" * 1000 + b":1\r\n"


def test_malformed_request_closes_only_its_connection(engine: netloop.Engine, client: redis.Redis) -> None:
    client.set("k", "v")
    with connect(engine.addrs[0]) as bad:
        bad.sendall(encode_request([b"PING"]) + b"*1\r\n$x\r\n" + encode_request([b"PING"]))
        assert recv_until_closed(bad) == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert client.get("k") == b"v"  # the other connection keeps working
    with redis.Redis(port=port_of(engine), protocol=2, socket_timeout=TIMEOUT) as fresh:
        assert fresh.ping() is True


def test_oversized_declared_bulk_is_refused_at_once(engine: netloop.Engine) -> None:
    with connect(engine.addrs[0]) as sock:
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n" % (64 * 1024 * 1024 + 1))
        assert recv_until_closed(sock) == b"-ERR Protocol error: invalid bulk length\r\n"


def test_quit_closes_after_ok(engine: netloop.Engine) -> None:
    with connect(engine.addrs[0]) as sock:
        sock.sendall(encode_request([b"QUIT"]) + encode_request([b"PING"]))
        assert recv_until_closed(sock) == b"+OK\r\n"


# -- redis-cli, redis-benchmark and the command line ------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


def test_redis_cli(engine: netloop.Engine) -> None:
    cli = _tool("redis-cli")
    port = str(port_of(engine))

    def run(*args: str) -> str:
        done = subprocess.run([cli, "-p", port, *args], capture_output=True, text=True, timeout=TIMEOUT, check=True)
        return done.stdout.strip()

    assert run("PING") == "PONG"
    assert run("SET", "greeting", "hello world") == "OK"
    assert run("GET", "greeting") == "hello world"
    assert run("INCRBY", "n", "5") == "5"
    assert run("SET", "t", "v", "EX", "100") == "OK"
    assert run("TTL", "t") == "100"
    assert sorted(run("KEYS", "*").split()) == ["greeting", "n", "t"]
    assert run("GET", "nothing") == ""
    assert run("NOPE").startswith("ERR unknown command 'NOPE'")
    assert run("DBSIZE") == "3"


@pytest.mark.slow
def test_redis_benchmark(engine: netloop.Engine) -> None:
    bench = _tool("redis-benchmark")
    done = subprocess.run(
        [bench, "-p", str(port_of(engine)), "-c", "8", "-n", "2000", "-t", "ping,set,get", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rates = dict(re.findall(r"^\s*([A-Z_]+): ([\d.]+) requests per second", done.stdout.replace("\r", "\n"), re.M))
    assert set(rates) == {"PING_INLINE", "PING_MBULK", "SET", "GET"}, done.stdout
    assert all(float(rate) > 0 for rate in rates.values())
    assert "WARNING" not in done.stderr + done.stdout  # it fetched CONFIG without complaint


def test_command_line_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "resp_server", "--port", "0", "--loops", "2"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_log() -> None:
        for line in process.stderr or ():
            lines.put(line)

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        line = ""
        while "listening on" not in line:
            line = lines.get(timeout=TIMEOUT)
        found = re.search(r"tcp://127\.0\.0\.1:(\d+)", line)
        assert found, line
        port = int(found.group(1))
        with redis.Redis(port=port, protocol=2, socket_timeout=TIMEOUT) as client:
            assert client.set("k", "v") is True
            assert client.get("k") == b"v"
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
        reader.join(TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()


# -- backpressure and bounds ------------------------------------------------------------------------------

HIGH_WATER = 1024 * 1024  # the engine's default write_buffer_cap
VALUE = b"v" * 100_000


def test_empty_lines_flood_gets_a_protocol_error_and_a_close(engine: netloop.Engine) -> None:
    with connect(engine.addrs[0]) as sock:
        sock.sendall(encode_request([b"PING"]))
        assert recv_exact(sock, 7) == b"+PONG\r\n"
        flood = b"\n" * (10 * 1024 * 1024)
        sender = threading.Thread(target=_send_until_refused, args=(sock, flood))
        sender.start()
        try:
            reply = recv_until_closed(sock)
        finally:
            sender.join(TIMEOUT)
    assert reply == b"-ERR Protocol error: too many empty lines before a request\r\n"


def _send_until_refused(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server closed while we were sending: what the test expects


def test_pipelined_replies_past_the_high_water_mark_all_arrive_after_eof(engine: netloop.Engine) -> None:
    with connect(engine.addrs[0]) as sock:
        sock.sendall(encode_request([b"SET", b"big", VALUE]))
        assert recv_exact(sock, 5) == b"+OK\r\n"
        count = 300  # 30 MB of replies: held back, then answered as the client reads
        sock.sendall(encode_request([b"GET", b"big"]) * count + encode_request([b"PING"]))
        sock.shutdown(socket.SHUT_WR)  # half-closed: the server must still answer everything, then close
        expected = (b"$100000\r\n" + VALUE + b"\r\n") * count + b"+PONG\r\n"
        assert recv_until_closed(sock) == expected


def test_one_mget_of_many_big_values_streams_out(engine: netloop.Engine) -> None:
    keys = [b"k%d" % i for i in range(1000)]
    with connect(engine.addrs[0]) as sock:
        sock.sendall(encode_request([b"MSET", *[item for key in keys for item in (key, VALUE)]]))
        assert recv_exact(sock, 5) == b"+OK\r\n"
        # 100 MB in one reply, past the default write_buffer_limit of 64 MiB: written as the client reads.
        sock.sendall(encode_request([b"MGET", *keys]) + encode_request([b"PING"]))
        head = recv_exact(sock, len(b"*1000\r\n"))
        assert head == b"*1000\r\n"
        item = b"$100000\r\n" + VALUE + b"\r\n"
        for _ in keys:
            assert recv_exact(sock, len(item)) == item
        assert recv_exact(sock, 7) == b"+PONG\r\n"


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _push_until_blocked(sock: socket.socket, data: bytes) -> int:
    """Send ``data`` without reading until the peer stops taking bytes for a while; returns how much went."""
    sock.setblocking(False)
    sent = 0
    while sent < len(data) and select.select([], [sock], [], 0.5)[1]:
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            pass
    return sent


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
def test_clients_that_pipeline_without_reading_cost_bounded_memory() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "resp_server", "--port", "0"], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"tcp://127\.0\.0\.1:(\d+)", line)
        assert found, line
        address = f"tcp://127.0.0.1:{found.group(1)}"
        with connect(address) as setup:
            setup.sendall(encode_request([b"SET", b"big", VALUE]) + encode_request([b"GET", b"big"]))
            assert recv_exact(setup, 5 + 100_011)[:5] == b"+OK\r\n"
        baseline = _rss(process.pid)
        request = encode_request([b"GET", b"big"])
        flood = request * 100_000  # 10 GB of replies each, if they were all answered
        clients = [connect(address) for _ in range(4)]
        try:
            for sock in clients:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            pushed = [_push_until_blocked(sock, flood) for sock in clients]
            assert all(sent < len(flood) for sent in pushed), "the server kept reading requests it could not answer"
            grown = _rss(process.pid) - baseline
            # Per client: outbound up to the high-water mark, one read of requests and what its session parsed.
            assert grown < 4 * (HIGH_WATER + 512 * 1024) + 8 * 1024 * 1024, f"RSS grew by {grown} bytes"
            # Every connection is still served: the first replies come back whole.
            for sock in clients:
                sock.setblocking(True)
                sock.settimeout(TIMEOUT)
                assert recv_exact(sock, 2 * 100_011) == (b"$100000\r\n" + VALUE + b"\r\n") * 2
        finally:
            for sock in clients:
                sock.close()
    finally:
        process.kill()
        process.wait(TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()


# -- a request's read deadline (read_timeout, from its first byte) ------------------------------------------------


def _trickle(port: int, request: bytes, pace: float, budget: float) -> tuple[float, bool]:
    """Send ``request`` a byte every ``pace`` seconds for up to ``budget`` seconds; (seconds until the server closed
    the connection or the budget ran out, whether it closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        start = time.monotonic()
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # reset: the server closed it
                return time.monotonic() - start, True
            # Wait out the pace on the socket itself, so that the server's close ends the wait at once.
            readable, _, _ = select.select([sock], [], [], pace)
            if readable:
                try:
                    if sock.recv(4096) == b"":
                        return time.monotonic() - start, True
                except OSError:
                    return time.monotonic() - start, True
            if time.monotonic() - start > budget:
                break
        return time.monotonic() - start, False


def test_a_client_trickling_one_request_is_evicted_after_read_timeout() -> None:
    # The session takes every byte into its parser, so netloop's own read_timeout (bytes left unconsumed) never
    # saw this client: the server marks where a request starts and ends (Conn.start_message/end_message).
    engine = resp_server.start(port=0, read_timeout=0.3)
    port = int(engine.addrs[0].rsplit(":", 1)[1])
    try:
        request = encode_request([b"SET", b"k", b"v" * 200])
        took, closed = _trickle(port, request, pace=0.02, budget=3.0)
        assert closed, f"still open after {took:.2f} s of trickling"
        assert 0.25 < took < 2.0
        with connect(engine.addrs[0]) as sock:
            sock.sendall(b"PING\r\n")
            assert recv_exact(sock, 7) == b"+PONG\r\n"
    finally:
        engine.stop()


def test_requests_that_each_complete_in_time_are_never_evicted() -> None:
    engine = resp_server.start(port=0, read_timeout=0.3)
    port = int(engine.addrs[0].rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            start = time.monotonic()
            answered = 0
            while time.monotonic() - start < 0.9:  # three read_timeouts, one short request at a time
                sock.sendall(b"PING\r\n")
                assert recv_exact(sock, 7) == b"+PONG\r\n"
                answered += 1
                readable, _, _ = select.select([sock], [], [], 0.05)
                assert not readable, "the server closed (or sent) between requests"
            assert answered > 5
    finally:
        engine.stop()
