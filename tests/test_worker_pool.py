"""``WorkerPool``: bounded threads for blocking jobs, overload refusal, release, and a loop that keeps serving."""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Iterator

import pytest
from loopback import TIMEOUT, connect, recv_exact

import netloop


class Gate:
    """Jobs that block until opened, counting how many run at once."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.running = 0
        self.most = 0

    def job(self, value: int) -> int:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.changed.notify_all()
        self.opened.wait(TIMEOUT)
        with self.lock:
            self.running -= 1
        return value * 2

    def wait_running(self, n: int) -> bool:
        with self.lock:
            return self.changed.wait_for(lambda: self.running == n, TIMEOUT)


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.opened.set()


def test_pool_runs_at_most_size_jobs_and_queues_the_rest(gate: Gate) -> None:
    with netloop.WorkerPool(2) as pool:
        futures = [pool.submit(gate.job, i) for i in range(5)]
        assert gate.wait_running(2)
        assert pool.unfinished() == 5
        assert not any(f.done() for f in futures)
        gate.opened.set()
        assert [f.result(TIMEOUT) for f in futures] == [0, 2, 4, 6, 8]
    assert gate.most == 2
    assert pool.unfinished() == 0


def test_nonblocking_pool_refuses_when_full(gate: Gate) -> None:
    with netloop.WorkerPool(2, nonblocking=True) as pool:
        assert pool.nonblocking and pool.size == 2
        first = [pool.submit(gate.job, i) for i in range(2)]
        assert gate.wait_running(2)
        with pytest.raises(netloop.PoolOverloadError):
            pool.submit(gate.job, 99)
        assert pool.unfinished() == 2
        gate.opened.set()
        assert [f.result(TIMEOUT) for f in first] == [0, 2]
        # A slot is free again once a job has finished, not before.
        assert pool.submit(gate.job, 3).result(TIMEOUT) == 6


def test_release_waits_for_running_jobs() -> None:
    started = threading.Event()
    finished = threading.Event()

    def job() -> None:
        started.set()
        time.sleep(0.1)  # the blocking work that release() must wait for
        finished.set()

    pool = netloop.WorkerPool(1)
    pool.submit(job)
    assert started.wait(TIMEOUT)
    pool.release()
    assert finished.is_set()
    with pytest.raises(RuntimeError):
        pool.submit(job)
    pool.release()  # idempotent


def test_a_failing_job_is_logged_and_kept_in_its_future(caplog: pytest.LogCaptureFixture) -> None:
    def job() -> None:
        raise ValueError("bad input")

    with caplog.at_level(logging.ERROR, logger="netloop"), netloop.WorkerPool(1) as pool:
        future = pool.submit(job)
        assert isinstance(future.exception(TIMEOUT), ValueError)
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in caplog.records)
    assert pool.unfinished() == 0


@pytest.mark.parametrize("size", [0, -1])
def test_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        netloop.WorkerPool(size)


def test_size_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="size"):
        netloop.WorkerPool("4")  # type: ignore[arg-type]


class BlockingEcho(netloop.EventHandler):
    """The seed's blocking echo: a ``slow`` message is echoed by a pool job after 1 s, anything else at once."""

    def __init__(self, pool: netloop.WorkerPool) -> None:
        self.pool = pool

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.next()
        if data.startswith(b"slow"):
            self.pool.submit(self.slow_echo, conn, data)
        else:
            conn.write(data)
        return None

    @staticmethod
    def slow_echo(conn: netloop.Conn, data: bytes) -> None:
        time.sleep(1)
        conn.async_write(data)


@pytest.mark.slow
def test_loop_keeps_serving_while_a_pool_job_blocks() -> None:
    with netloop.WorkerPool(4, nonblocking=True) as pool:
        engine = netloop.start(BlockingEcho(pool), "tcp://127.0.0.1:0")
        try:
            with connect(engine.addrs[0]) as slow, connect(engine.addrs[0]) as fast:
                slow_sent = time.monotonic()
                slow.sendall(b"slow")
                fast.sendall(b"fast")
                assert recv_exact(fast, 4) == b"fast"
                fast_answered = time.monotonic()
                # The fast echo came back while the slow one was still being worked on.
                assert select.select([slow], [], [], 0)[0] == []
                assert recv_exact(slow, 4) == b"slow"
                slow_answered = time.monotonic()
        finally:
            engine.stop(timeout=10)
    assert fast_answered - slow_sent < 0.5
    assert slow_answered - slow_sent >= 0.9
