"""Thread stress: every structure two threads touch, hammered with a one-microsecond switch interval.

Many threads call ``async_write``/``async_writev``/``wake``/``close``/``EventLoop.submit``/``Engine.stop``
against busy loops, dial with a ``Client`` and submit to a ``WorkerPool``; connection counts, loads, bytes and
callbacks must add up exactly. The contract under test: a task or callback handed to a loop either runs (a
callback with None, ``ConnClosedError`` or ``EngineStoppedError``) or the call raises ``EngineStoppedError`` at
once; it is never dropped and never runs twice. Threads meet on barriers and conditions with timeouts, no sleeps.
"""

from __future__ import annotations

import gc
import itertools
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from loopback import TIMEOUT, serving, split, switching_threads_often

import netloop

LOOPS = 4
# One record of the byte stream: (writer thread, connection, the writer's sequence number, payload length).
HEADER = struct.Struct(">HHII")
Callback = Callable[[netloop.Conn, "BaseException | None"], None]


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    """Switch threads every microsecond (GIL builds), so that unlocked read-modify-write races show up."""
    with switching_threads_often():
        yield


@pytest.fixture
def frequent_collections() -> Iterator[None]:
    """Collect cyclic garbage every few allocations: the collector runs finalizers (Python code, where threads
    switch) at whatever allocation triggers it, e.g. between a check and the append it guards. On CPython 3.11 with
    the GIL that is the one way another thread gets in between an unlocked check-then-append such as the
    ``_stopped`` check and ``_tasks.append`` of a loop's submit."""
    old = gc.get_threshold()
    gc.set_threshold(10, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*old)


# -- helpers -------------------------------------------------------------------------------------------------


def run_threads(targets: list[Callable[[], None]], timeout: float = 30.0) -> None:
    """Run each target on its own thread, all released together by a barrier; re-raise the first failure."""
    barrier = threading.Barrier(len(targets), timeout=TIMEOUT)
    errors: list[BaseException] = []

    def body(target: Callable[[], None]) -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running after {timeout}s (a hang): {stuck}"
    if errors:
        raise errors[0]


class Ledger:
    """Calls handed to loops, and the callbacks (or tasks) that came back: each must come back exactly once."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._ids = itertools.count()
        self.issued: dict[int, str] = {}  # call id -> what was called; the call returned normally
        self.refused: dict[int, str] = {}  # the call raised EngineStoppedError
        self.fired: Counter[int] = Counter()
        self.errors: dict[int, BaseException | None] = {}
        self.wrong: list[str] = []

    def new(self) -> int:
        return next(self._ids)

    def callback(self, key: int) -> Callback:
        def done(conn: netloop.Conn, err: BaseException | None) -> None:
            self.fire(key, err)

        return done

    def fire(self, key: int, err: BaseException | None) -> None:
        with self.cond:
            self.fired[key] += 1
            self.errors[key] = err
            self.cond.notify_all()

    def call(
        self,
        what: str,
        method: Callable[..., object],
        *args: Any,
        callback: Callable[[int], Callback] | None = None,
    ) -> int | None:
        """``method(*args, callback)`` hands a call to a loop; records it as taken or refused (then None)."""
        key = self.new()
        make = callback or self.callback
        return self._record(key, what, lambda: method(*args, make(key)))

    def submit(self, loop: netloop.EventLoop) -> int | None:
        """``loop.submit`` a task that reports back; recorded like ``call``."""
        key = self.new()
        return self._record(key, "submit", lambda: loop.submit(self.fire, key, None))

    def _record(self, key: int, what: str, hand: Callable[[], object]) -> int | None:
        try:
            hand()
        except netloop.EngineStoppedError:
            with self.cond:
                self.refused[key] = what
            return None
        with self.cond:
            self.issued[key] = what
            self.cond.notify_all()
        return key

    def wait_issued(self, n: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.issued) >= n, TIMEOUT)

    def issued_count(self) -> int:
        with self.cond:
            return len(self.issued)

    def wait_all_fired(self, timeout: float = TIMEOUT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: all(k in self.fired for k in self.issued), timeout)

    def check(self, allowed: tuple[type[BaseException], ...] = ()) -> None:
        """Every issued call came back once with an allowed error (or None); no refused call came back."""
        with self.cond:
            missing = sorted(k for k in self.issued if k not in self.fired)
            twice = sorted(k for k, n in self.fired.items() if n > 1)
            stray = sorted(k for k in self.fired if k in self.refused or k not in self.issued)
            bad = {k: e for k, e in self.errors.items() if e is not None and not isinstance(e, allowed)}
            kinds = Counter(self.issued[k] for k in missing)
            assert not missing, (
                f"{len(missing)} of {len(self.issued)} accepted calls never came back (dropped): {dict(kinds)}"
            )
            assert not twice, f"callbacks fired more than once: {twice[:10]}"
            assert not stray, f"callbacks of refused or unknown calls fired: {stray[:10]}"
            assert not bad, f"callbacks got unexpected errors: {list(bad.values())[:5]!r}"
            assert not self.wrong, self.wrong[:5]


class Server(netloop.EventHandler):
    """Records opens, closes (per connection object), reads and wakes; consumes everything it is sent."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.cond = threading.Condition()
        self.by_port: dict[int, netloop.Conn] = {}
        self.conns: list[netloop.Conn] = []
        self.closes: Counter[int] = Counter()
        self.close_errors: list[BaseException | None] = []
        self.reads = 0
        self.bytes_in = 0
        self.wakes: Counter[int] = Counter()  # on_traffic with nothing buffered, per connection

    def on_open(self, conn: netloop.Conn) -> None:
        with self.cond:
            self.by_port[conn.remote_addr[1]] = conn
            self.conns.append(conn)
            self.cond.notify_all()

    def on_traffic(self, conn: netloop.Conn) -> None:
        buffered = conn.inbound_buffered()
        data = conn.next()
        if self.echo and data:
            conn.write(data)
        with self.cond:
            if buffered:
                self.reads += 1
                self.bytes_in += len(data)
            else:
                self.wakes[id(conn)] += 1
            self.cond.notify_all()

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        with self.cond:
            self.closes[id(conn)] += 1
            self.close_errors.append(err)
            self.cond.notify_all()

    def opened(self) -> int:
        with self.cond:
            return len(self.conns)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), f"timed out waiting for {what}"

    def check_closed_once(self) -> None:
        with self.cond:
            assert len(self.closes) == len(self.conns), f"{len(self.conns)} opened, {len(self.closes)} closed"
            twice = [n for n in self.closes.values() if n != 1]
            assert not twice, f"on_close fired {twice} times for one connection"


class Peer:
    """A plain client socket whose thread reads everything until EOF, then closes."""

    def __init__(self, url: str) -> None:
        _, addr = split(url)
        self.sock = socket.create_connection(addr, timeout=TIMEOUT)
        self.port: int = self.sock.getsockname()[1]
        self.data = bytearray()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return
                self.data += chunk
        except BaseException as exc:
            self.error = exc
        finally:
            self.sock.close()

    def until_eof(self) -> bytes:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), f"peer {self.port}: no EOF after {TIMEOUT}s ({len(self.data)} bytes)"
        assert self.error is None, f"peer {self.port}: {self.error!r}"
        return bytes(self.data)


def connect_peers(engine: netloop.Engine, server: Server, count: int) -> tuple[list[Peer], list[netloop.Conn]]:
    """``count`` reading peers and the server's connection for each, once every ``on_open`` has run."""
    url = engine.addrs[0]
    peers = [Peer(url) for _ in range(count)]
    server.wait(lambda: all(p.port in server.by_port for p in peers), f"{count} connections to open")
    with server.cond:
        conns = [server.by_port[p.port] for p in peers]
    return peers, conns


def payload(thread: int, seq: int, size: int) -> bytes:
    return bytes([(thread * 31 + seq) % 256]) * size


def record(thread: int, conn: int, seq: int, size: int) -> tuple[bytes, bytes]:
    return HEADER.pack(thread, conn, seq, size), payload(thread, seq, size)


def parse(stream: bytes, conn: int) -> list[tuple[int, int]]:
    """The (thread, seq) of each record in one connection's stream; asserts the framing and payload are intact."""
    out = []
    pos = 0
    while pos < len(stream):
        assert pos + HEADER.size <= len(stream), f"conn {conn}: torn header at byte {pos}"
        thread, dest, seq, size = HEADER.unpack_from(stream, pos)
        pos += HEADER.size
        assert dest == conn, f"conn {conn}: a record meant for conn {dest} at byte {pos}"
        assert stream[pos : pos + size] == payload(thread, seq, size), f"conn {conn}: corrupt record {thread}/{seq}"
        pos += size
        out.append((thread, seq))
    return out


def check_in_order(records: list[tuple[int, int]], conn: int) -> None:
    last: dict[int, int] = {}
    for thread, seq in records:
        assert seq > last.get(thread, -1), f"conn {conn}: thread {thread}'s write {seq} after {last[thread]}"
        last[thread] = seq


# -- async_write from many threads ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_async_writes_from_many_threads_arrive_exactly_once_and_in_order() -> None:
    server = Server()
    ledger = Ledger()
    threads, writes, conn_count = 6, 150, 8
    sent: dict[int, tuple[int, int, int]] = {}  # call id -> (conn, thread, seq)
    with serving(server, "tcp://127.0.0.1:0", num_event_loop=LOOPS) as engine:
        peers, conns = connect_peers(engine, server, conn_count)
        assert {c.event_loop.index for c in conns} == set(range(LOOPS))

        def writer(t: int) -> Callable[[], None]:
            def run() -> None:
                rng = random.Random(t)
                for seq in range(writes):
                    c = rng.randrange(conn_count)
                    size = 200_000 if rng.random() < 0.01 else rng.randrange(0, 2048)
                    head, body = record(t, c, seq, size)
                    conn = conns[c]
                    if seq % 3 == 0:
                        key = ledger.call("writev", conn.async_writev, [head, body])
                    else:
                        key = ledger.call("write", conn.async_write, head + body)
                    assert key is not None, "async_write refused by a running engine"
                    with ledger.cond:
                        sent[key] = (c, t, seq)

            return run

        run_threads([writer(t) for t in range(threads)])
        assert ledger.wait_all_fired(), "not every async_write callback fired"
        ledger.check()
        assert all(e is None for e in ledger.errors.values())
        for conn in conns:
            conn.close()
        streams = [p.until_eof() for p in peers]
    for c, stream in enumerate(streams):
        got = parse(stream, c)
        check_in_order(got, c)
        expected = sorted((t, seq) for cc, t, seq in sent.values() if cc == c)
        assert sorted(got) == expected, f"conn {c}: {len(got)} records arrived, {len(expected)} were written"
    server.check_closed_once()


# -- wake from many threads ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_wakes_from_many_threads_each_fire_on_traffic_once() -> None:
    server = Server()
    ledger = Ledger()
    threads, wakes, conn_count = 6, 200, 8
    woken: Counter[int] = Counter()  # id(conn) -> wakes issued
    answered: Counter[int] = Counter()  # id(conn) -> wake callbacks fired
    sent = 0
    with serving(server, "tcp://127.0.0.1:0", num_event_loop=LOOPS) as engine:
        peers, conns = connect_peers(engine, server, conn_count)

        def after_on_traffic(conn: netloop.Conn) -> Callable[[int], Callback]:
            def make(k: int) -> Callback:
                return lambda c, err: check_then_fire(k, conn, err)

            return make

        def check_then_fire(k: int, conn: netloop.Conn, err: BaseException | None) -> None:
            # The callback runs after the on_traffic its wake fired, so that one is counted already.
            with server.cond:
                seen = server.wakes[id(conn)]
            with ledger.cond:
                answered[id(conn)] += 1
                if seen < answered[id(conn)]:
                    ledger.wrong.append(f"wake callback {k} ran before its on_traffic ({seen} < {answered[id(conn)]})")
            ledger.fire(k, err)

        def waker(t: int) -> Callable[[], None]:
            def run() -> None:
                rng = random.Random(t)
                for _ in range(wakes):
                    conn = conns[rng.randrange(conn_count)]
                    key = ledger.call("wake", conn.wake, callback=after_on_traffic(conn))
                    assert key is not None, "wake refused by a running engine"
                    with ledger.cond:
                        woken[id(conn)] += 1

            return run

        def sender(p: Peer) -> Callable[[], None]:
            def run() -> None:
                nonlocal sent
                for i in range(100):
                    data = b"x" * (1 + i % 50)
                    p.sock.sendall(data)
                    with ledger.cond:
                        sent += len(data)

            return run

        run_threads([waker(t) for t in range(threads)] + [sender(p) for p in peers[:4]])
        assert ledger.wait_all_fired(), "not every wake callback fired"
        ledger.check()
        assert all(e is None for e in ledger.errors.values())
        server.wait(lambda: server.bytes_in == sent, f"{sent} bytes to be read")
        with server.cond:
            assert dict(server.wakes) == dict(woken), "on_traffic without input != wakes issued"
            assert sum(server.wakes.values()) == threads * wakes
            assert server.bytes_in == sent
        for conn in conns:
            conn.close()
        for p in peers:
            p.until_eof()
    server.check_closed_once()


# -- close racing async_write --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_close_from_many_threads_racing_async_write() -> None:
    server = Server()
    ledger = Ledger()
    writers, closers, writes, conn_count = 4, 3, 200, 8
    total = writers * writes
    sent: dict[int, tuple[int, int, int]] = {}
    with serving(server, "tcp://127.0.0.1:0", num_event_loop=LOOPS) as engine:
        peers, conns = connect_peers(engine, server, conn_count)
        # Connection c is closed once this many writes were issued: the closes are spread over the writing.
        close_at = [(c + 1) * total // (conn_count + 2) for c in range(conn_count)]

        closes_done = threading.Barrier(closers + 1, timeout=TIMEOUT)
        late: set[int] = set()  # writes issued after every close came back: each must be refused

        def writer(t: int) -> Callable[[], None]:
            def run() -> None:
                rng = random.Random(t)
                for seq in range(writes + 10):
                    if seq == writes and t == 0:
                        closes_done.wait()
                    c = rng.randrange(conn_count)
                    head, body = record(t, c, seq, rng.randrange(0, 4096))
                    conn = conns[c]
                    key = ledger.call("write", conn.async_write, head + body)
                    assert key is not None, "async_write refused by a running engine"
                    with ledger.cond:
                        sent[key] = (c, t, seq)
                        if seq >= writes and t == 0:
                            late.add(key)

            return run

        def closer(t: int) -> Callable[[], None]:
            def run() -> None:
                order = list(range(conn_count))
                random.Random(100 + t).shuffle(order)
                order.sort(key=lambda c: close_at[c])  # same times, a different order among equals
                keys = []
                for c in order:
                    assert ledger.wait_issued(close_at[c])
                    key = ledger.call("close", conns[c].close)
                    assert key is not None, "close refused by a running engine"
                    keys.append(key)
                with ledger.cond:
                    assert ledger.cond.wait_for(lambda: all(k in ledger.fired for k in keys), TIMEOUT)
                closes_done.wait()

            return run

        run_threads([writer(t) for t in range(writers)] + [closer(t) for t in range(closers)])
        assert ledger.wait_all_fired(), "not every callback fired"
        ledger.check(allowed=(netloop.ConnClosedError,))
        server.wait(lambda: len(server.closes) == conn_count, "every connection to close")
        assert engine.count_connections() == 0
        assert all(loop.count_connections() == 0 and loop.load() == 0 for loop in engine.loops)
        streams = [p.until_eof() for p in peers]
        with ledger.cond:
            ok = {k for k, e in ledger.errors.items() if e is None}
            late_errors = [ledger.errors[k] for k in late]
    assert late_errors and all(isinstance(e, netloop.ConnClosedError) for e in late_errors), late_errors[:3]
    for c, stream in enumerate(streams):
        got = parse(stream, c)
        check_in_order(got, c)
        expected = sorted((t, seq) for k, (cc, t, seq) in sent.items() if cc == c and k in ok)
        assert sorted(got) == expected, f"conn {c}: {len(got)} records arrived, {len(expected)} writes reported success"
    server.check_closed_once()


# -- engine.stop racing everything ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("frequent_collections")
def test_stop_racing_writes_wakes_closes_and_submits_drops_nothing() -> None:
    for round_ in range(20):
        stop_round(round_)


class Finalized:
    """Cyclic garbage with a finalizer, as real programs make: the collector then runs Python code (and so may
    switch threads) wherever an allocation triggers it, e.g. between a check and the append it guards."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        for _ in range(20):
            pass


def stop_round(round_: int) -> None:
    """Six threads write, wake, close and submit against four busy loops while the engine stops under them."""
    server = Server()
    ledger = Ledger()
    engine = netloop.start(server, "tcp://127.0.0.1:0", num_event_loop=LOOPS)
    try:
        peers, conns = connect_peers(engine, server, LOOPS)
        loops = engine.loops

        def hammer(t: int) -> Callable[[], None]:
            def run() -> None:
                rng = random.Random(round_ * 100 + t)
                after_stop = 0
                deadline = time.monotonic() + 20
                while after_stop < 50:
                    assert time.monotonic() < deadline, "the engine did not stop"
                    Finalized()
                    conn = conns[rng.randrange(len(conns))]
                    op = rng.random()
                    if op < 0.35:
                        ledger.call("write", conn.async_write, b"w" * 100)
                    elif op < 0.5:
                        ledger.call("writev", conn.async_writev, [b"a", b"b"])
                    elif op < 0.75:
                        ledger.call("wake", conn.wake)
                    elif op < 0.77:
                        ledger.call("close", conn.close)
                    else:
                        ledger.submit(loops[rng.randrange(len(loops))])
                    if engine.stopped:
                        after_stop += 1

            return run

        def stopper() -> None:
            ledger.wait_issued(200)
            engine.stop(timeout=TIMEOUT)
            assert engine.stopped, "engine.stop returned before the engine stopped"

        run_threads([hammer(t) for t in range(6)] + [stopper])
        assert ledger.refused, "no call raced the stop"
        ledger.wait_all_fired(2.0)
        try:
            ledger.check(allowed=(netloop.ConnClosedError, netloop.EngineStoppedError))
        except AssertionError as exc:
            raise AssertionError(f"round {round_}: {exc}") from None
        server.wait(lambda: len(server.closes) == len(server.conns), "every connection to close")
        server.check_closed_once()
        assert engine.count_connections() == 0
        for p in peers:
            p.until_eof()
    finally:
        engine.stop(timeout=TIMEOUT)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("frequent_collections")
def test_submit_and_stop_from_many_threads_run_or_refuse_every_task() -> None:
    for round_ in range(50):
        submit_round(round_)


def submit_round(round_: int) -> None:
    """Six threads submit to four idle loops until every loop refuses; three threads stop the engine meanwhile."""
    ledger = Ledger()
    engine = netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", num_event_loop=LOOPS)
    try:
        loops = engine.loops

        def submitter(t: int) -> Callable[[], None]:
            def run() -> None:
                refused: set[int] = set()
                deadline = time.monotonic() + 20
                i = t
                while len(refused) < len(loops):
                    assert time.monotonic() < deadline, "a loop still takes tasks 20s after stop"
                    Finalized()
                    loop = loops[i % len(loops)]
                    i += 1
                    if ledger.submit(loop) is None:
                        refused.add(loop.index)

            return run

        def stopper() -> None:
            ledger.wait_issued(300)
            engine.stop(timeout=TIMEOUT)
            assert engine.stopped, "engine.stop returned before the engine stopped"

        run_threads([submitter(t) for t in range(6)] + [stopper for _ in range(3)])
        ledger.wait_all_fired(2.0)
        try:
            ledger.check()
        except AssertionError as exc:
            raise AssertionError(f"round {round_}: {exc}") from None
    finally:
        engine.stop(timeout=TIMEOUT)


# -- the balancer and the loops' load counters ---------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("balancing", [netloop.LoadBalancing.LEAST_CONNECTIONS, netloop.LoadBalancing.ROUND_ROBIN])
def test_concurrent_connects_balance_and_loads_return_to_zero(balancing: netloop.LoadBalancing) -> None:
    server = Server(echo=True)
    threads, held_each, churn_each = 8, 6, 10
    held = threads * held_each
    with serving(server, "tcp://127.0.0.1:0", num_event_loop=LOOPS, load_balancing=balancing) as engine:
        _, addr = split(engine.addrs[0])
        socks: list[list[socket.socket]] = [[] for _ in range(threads)]

        def connect_held(t: int) -> Callable[[], None]:
            def run() -> None:
                for _ in range(held_each):
                    socks[t].append(socket.create_connection(addr, timeout=TIMEOUT))

            return run

        run_threads([connect_held(t) for t in range(threads)])
        server.wait(lambda: len(server.conns) == held, f"{held} connections to open")
        loops = engine.loops
        counts = [loop.count_connections() for loop in loops]
        assert sum(counts) == engine.count_connections() == held
        assert [loop.load() for loop in loops] == counts
        # Nothing closed while they were placed: both balancers spread them exactly.
        assert counts == [held // LOOPS] * LOOPS, counts

        def churn(t: int) -> Callable[[], None]:
            def run() -> None:
                for i in range(churn_each):
                    with socket.create_connection(addr, timeout=TIMEOUT) as s:
                        s.sendall(b"ping")
                        got = b""
                        while len(got) < 4:
                            chunk = s.recv(4 - len(got))
                            assert chunk, "server closed a churning connection"
                            got += chunk
                        assert got == b"ping"
                    if i % 3 == 0 and socks[t]:
                        socks[t].pop().close()  # held connections close while others open

            return run

        run_threads([churn(t) for t in range(threads)])
        for own in socks:
            for s in own:
                s.close()
        total = held + threads * churn_each
        server.wait(lambda: len(server.conns) == total and len(server.closes) == total, "every connection to close")
        server.check_closed_once()
        assert engine.count_connections() == 0
        assert [(loop.count_connections(), loop.load()) for loop in loops] == [(0, 0)] * LOOPS


# -- WorkerPool ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_nonblocking_pool_accepts_or_refuses_every_job_and_runs_each_once() -> None:
    size, threads, attempts = 4, 8, 300
    lock = threading.Lock()
    ran: Counter[int] = Counter()
    running = 0
    most = 0
    # Each attempt lets one job finish: jobs end while others are submitted, and the pool is full now and then.
    tokens = threading.Semaphore(0)
    accepted: list[int] = []
    overloaded = 0
    ids = itertools.count()

    def job(key: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        assert tokens.acquire(timeout=TIMEOUT), "no token: more jobs accepted than attempts"
        with lock:
            ran[key] += 1
            running -= 1
        return key

    pool = netloop.WorkerPool(size, nonblocking=True)
    futures = []

    def submitter() -> None:
        nonlocal overloaded
        for _ in range(attempts):
            key = next(ids)
            try:
                future = pool.submit(job, key)
            except netloop.PoolOverloadError:
                with lock:
                    overloaded += 1
            else:
                with lock:
                    accepted.append(key)
                    futures.append(future)
            tokens.release()

    try:
        run_threads([submitter for _ in range(threads)])
        assert [f.result(TIMEOUT) for f in futures] == [f.result() for f in futures]
    finally:
        pool.release()
    assert len(accepted) + overloaded == threads * attempts
    assert overloaded, "the pool was never full: the test did not test refusal"
    assert set(ran) == set(accepted) and all(n == 1 for n in ran.values()), "a job ran twice or never"
    assert sorted(f.result() for f in futures) == sorted(accepted)
    assert most <= size, f"{most} jobs ran at once in a pool of {size}"
    assert pool.unfinished() == 0


@pytest.mark.timeout(60)
def test_pool_release_racing_submits_runs_every_accepted_job() -> None:
    for round_ in range(20):
        release_round(round_)


def release_round(round_: int) -> None:
    """Six threads submit to a nonblocking pool while a seventh releases it."""
    pool = netloop.WorkerPool(4, nonblocking=True)
    lock = threading.Lock()
    ran: Counter[int] = Counter()
    accepted: set[int] = set()
    outcomes: Counter[str] = Counter()
    ids = itertools.count()
    started = threading.Event()

    def job(key: int) -> None:
        with lock:
            ran[key] += 1

    def submitter() -> None:
        outcome = ""
        i = 0
        deadline = time.monotonic() + 20
        while outcome != "released":
            assert time.monotonic() < deadline, "submit still accepted 20s after release()"
            i += 1
            key = next(ids)
            try:
                pool.submit(job, key)
            except netloop.PoolOverloadError:
                outcome = "overloaded"
            except RuntimeError:
                outcome = "released"
            else:
                outcome = "accepted"
            with lock:
                outcomes[outcome] += 1
                if outcome == "accepted":
                    accepted.add(key)
            if i == 20:
                started.set()

    def releaser() -> None:
        assert started.wait(TIMEOUT)
        pool.release()
        # release() waits for every accepted job: none may be missing once it returns.
        with lock:
            missing = sorted(k for k in accepted if k not in ran)
        assert not missing, f"round {round_}: release() returned before accepted jobs ran: {missing[:5]}"

    run_threads([submitter for _ in range(6)] + [releaser])
    assert outcomes["released"] >= 6
    assert outcomes["accepted"] == len(accepted)
    assert set(ran) == accepted and all(n == 1 for n in ran.values()), f"round {round_}: a job ran twice or never"
    assert pool.unfinished() == 0


# -- netloop.Client placement --------------------------------------------------------------------------------


class ClientSide(netloop.EventHandler):
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.received: dict[int, bytearray] = {}
        self.opens: Counter[int] = Counter()
        self.closes: Counter[int] = Counter()

    def on_open(self, conn: netloop.Conn) -> None:
        with self.cond:
            self.opens[id(conn)] += 1
            self.received[id(conn)] = bytearray()
            self.cond.notify_all()

    def on_traffic(self, conn: netloop.Conn) -> None:
        data = conn.next()
        with self.cond:
            self.received[id(conn)] += data
            self.cond.notify_all()

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        with self.cond:
            self.closes[id(conn)] += 1
            self.cond.notify_all()


@pytest.mark.timeout(60)
def test_client_dials_from_many_threads_spread_and_count_exactly() -> None:
    threads, dials = 8, 6
    total = threads * dials
    side = ClientSide()
    ledger = Ledger()
    server = Server(echo=True)
    with serving(server, "tcp://127.0.0.1:0", num_event_loop=2) as engine:
        url = engine.addrs[0]
        client = netloop.Client(side, num_event_loop=LOOPS)
        client.start()
        try:
            conns: list[netloop.Conn] = []
            lock = threading.Lock()

            def dialer() -> None:
                for _ in range(dials):
                    conn = client.dial(url, timeout=TIMEOUT)
                    assert isinstance(conn, netloop.Conn)
                    with lock:
                        conns.append(conn)

            run_threads([dialer for _ in range(threads)])
            assert len({id(c) for c in conns}) == total
            assert client.count_connections() == total
            loops = client.loops
            # Each dial is counted as it is placed: concurrent dials see each other and spread exactly.
            assert [(loop.count_connections(), loop.load()) for loop in loops] == [(total // LOOPS,) * 2] * LOOPS
            with side.cond:
                assert all(side.opens[id(c)] == 1 for c in conns)

            def talker(part: list[netloop.Conn]) -> Callable[[], None]:
                def run() -> None:
                    for conn in part:
                        ledger.call("write", conn.async_write, b"ping")

                return run

            run_threads([talker(conns[i::threads]) for i in range(threads)])
            with side.cond:
                echoed = side.cond.wait_for(lambda: all(side.received[id(c)] == b"ping" for c in conns), TIMEOUT)
                assert echoed, "not every connection got its echo"

            def closer(part: list[netloop.Conn]) -> Callable[[], None]:
                def run() -> None:
                    for conn in part:
                        ledger.call("close", conn.close)

                return run

            # Every connection is closed by two threads at once.
            run_threads([closer(conns[i % threads :: threads]) for i in range(2 * threads)])
            assert ledger.wait_all_fired()
            ledger.check()
            with side.cond:
                assert side.cond.wait_for(lambda: len(side.closes) == total, TIMEOUT), "not every on_close fired"
                assert all(n == 1 for n in side.closes.values()), "on_close fired twice"
            assert client.count_connections() == 0
            assert [(loop.count_connections(), loop.load()) for loop in loops] == [(0, 0)] * LOOPS
        finally:
            client.stop(TIMEOUT)
        assert client.wait(TIMEOUT)
        server.wait(lambda: len(server.closes) == total, "the server to see every connection close")
        server.check_closed_once()
        assert engine.count_connections() == 0


@pytest.mark.timeout(60)
def test_client_dials_racing_stop_return_a_conn_or_refuse() -> None:
    server = Server(echo=True)
    with serving(server, "tcp://127.0.0.1:0", num_event_loop=2) as engine:
        for round_ in range(10):
            dial_stop_round(round_, engine.addrs[0])
        server.wait(lambda: len(server.closes) == len(server.conns), "the server to see every connection close")
        server.check_closed_once()


def dial_stop_round(round_: int, url: str) -> None:
    """Six threads dial until the client refuses while a seventh stops it: each dial gives a Conn or raises."""
    side = ClientSide()
    client = netloop.Client(side, num_event_loop=LOOPS)
    client.start()
    lock = threading.Lock()
    returned: list[netloop.Conn] = []
    refused = 0

    def dialer() -> None:
        nonlocal refused
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "dials still succeed 20s after stop"
            try:
                conn = client.dial(url, timeout=TIMEOUT)
            except netloop.EngineStoppedError:
                with lock:
                    refused += 1
                return
            with lock:
                returned.append(conn)

    def stopper() -> None:
        with side.cond:
            side.cond.wait_for(lambda: len(side.opens) >= 12, TIMEOUT)
        client.stop(TIMEOUT)

    try:
        run_threads([dialer for _ in range(6)] + [stopper])
    finally:
        client.stop(TIMEOUT)
    assert client.wait(TIMEOUT)
    assert refused == 6
    with side.cond:
        opened = set(side.opens)
        assert all(n == 1 for n in side.opens.values()), f"round {round_}: on_open fired twice"
        assert opened == {id(c) for c in returned}, (
            f"round {round_}: {len(opened)} connections opened, {len(returned)} dials returned one"
        )
        assert side.cond.wait_for(lambda: set(side.closes) == opened, TIMEOUT), f"round {round_}: on_close missing"
        assert all(n == 1 for n in side.closes.values()), f"round {round_}: on_close fired twice"
    assert all(c.closed for c in returned)
    assert client.count_connections() == 0
