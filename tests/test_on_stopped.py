"""``on_stopped``: after the drain, when every connection is closed; where a handler releases its ``WorkerPool``."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from loopback import TIMEOUT, connect, recv_until_closed

import netloop


class PooledAnswers(netloop.EventHandler):
    """Answers each request from a pool thread, then closes; releases the pool only once the engine has stopped."""

    def __init__(self) -> None:
        self.pool = netloop.WorkerPool(2)
        self.started = threading.Event()
        self.go = threading.Event()
        self.shutting = threading.Event()
        self.events: list[str] = []

    def job(self, data: bytes) -> bytes:
        self.started.set()
        self.go.wait(TIMEOUT)
        return b"answer:" + data

    def on_traffic(self, conn: netloop.Conn) -> None:
        future = self.pool.submit(self.job, conn.next())

        def done(future: Future[bytes]) -> None:
            conn.async_write(future.result(), lambda conn, err: conn.close())

        future.add_done_callback(done)

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        self.events.append("close")

    def on_shutdown(self, engine: netloop.Engine) -> None:
        self.events.append("shutdown")
        self.shutting.set()

    def on_stopped(self, engine: netloop.Engine) -> None:
        self.events.append(f"stopped:{engine.count_connections()}")
        self.pool.release()


def test_a_pool_released_in_on_stopped_answers_the_requests_drained() -> None:
    handler = PooledAnswers()
    engine = netloop.start(handler, "tcp://127.0.0.1:0", drain_timeout=TIMEOUT)
    try:
        with connect(engine.addrs[0]) as sock:
            sock.sendall(b"slow")
            assert handler.started.wait(TIMEOUT)
            stopper = threading.Thread(target=engine.stop, kwargs={"timeout": TIMEOUT})
            stopper.start()
            assert handler.shutting.wait(TIMEOUT)
            handler.go.set()  # the job finishes during the drain, on a pool still running
            assert recv_until_closed(sock) == b"answer:slow"
        stopper.join(TIMEOUT)
    finally:
        engine.stop(timeout=TIMEOUT)
    assert engine.wait(TIMEOUT)
    assert handler.events == ["shutdown", "close", "stopped:0"]
    assert handler.pool.unfinished() == 0


def test_on_stopped_runs_once_for_a_client_too() -> None:
    calls: list[int] = []

    class Counts(netloop.EventHandler):
        def on_stopped(self, engine: netloop.Engine) -> None:
            calls.append(engine.count_connections())

    client = netloop.Client(Counts())
    client.start()
    client.stop(timeout=TIMEOUT)
    client.stop(timeout=TIMEOUT)
    assert calls == [0]
