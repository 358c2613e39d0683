"""Events, actions from each event, the ticker, wake/close from other threads, and graceful stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from loopback import Recorder, connect, recv_exact, recv_until_closed, script_server, serving, wait_until

import netloop
from netloop import Action


def test_event_order_and_on_shutdown_before_connections_close() -> None:
    handler = Recorder()
    engine = netloop.start(handler, "tcp://127.0.0.1:0")
    sock = connect(engine.addrs[0])
    assert handler.opened.acquire(timeout=5)
    stopper = threading.Thread(target=engine.stop, args=(5,))
    stopper.start()
    # A lingering close: the server's FIN first, on_close once the peer ends too.
    assert recv_until_closed(sock) == b""
    sock.close()
    stopper.join(5)
    assert engine.stopped
    assert handler.names() == ["boot", "open", "shutdown", "close"]


def test_on_boot_shutdown_stops_at_once() -> None:
    class Stop(netloop.EventHandler):
        def on_boot(self, engine: netloop.Engine) -> Action | None:
            return Action.SHUTDOWN

    engine = netloop.start(Stop(), "tcp://127.0.0.1:0")
    assert engine.wait(5)


def test_on_boot_exception_propagates_and_frees_the_port() -> None:
    class Boom(netloop.EventHandler):
        def on_boot(self, engine: netloop.Engine) -> Action | None:
            self.addr = engine.addrs[0]
            raise RuntimeError("boot failed")

    handler = Boom()
    with pytest.raises(RuntimeError, match="boot failed"):
        netloop.start(handler, "tcp://127.0.0.1:0")
    port = int(handler.addr.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("action", [Action.CLOSE, Action.SHUTDOWN])
def test_actions_from_on_open(action: Action) -> None:
    class Opener(Recorder):
        def on_open(self, conn: netloop.Conn) -> Action | None:
            conn.write(b"bye")
            return action

    handler = Opener()
    engine = netloop.start(handler, "tcp://127.0.0.1:0")
    with connect(engine.addrs[0]) as sock:
        assert recv_until_closed(sock) == b"bye"
    if action == Action.SHUTDOWN:
        assert engine.wait(5)
    else:
        assert handler.closed.acquire(timeout=5)
        assert not engine.stopped
        engine.stop(5)


@pytest.mark.parametrize("action", [Action.CLOSE, Action.SHUTDOWN])
def test_actions_from_on_traffic(action: Action) -> None:
    class Once(Recorder):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            conn.write(conn.next().upper())
            return action

    handler = Once()
    engine = netloop.start(handler, "tcp://127.0.0.1:0")
    with connect(engine.addrs[0]) as sock:
        sock.sendall(b"hello")
        assert recv_until_closed(sock) == b"HELLO"
    assert handler.closed.acquire(timeout=5)
    assert handler.errors == [None]
    assert engine.wait(5) if action == Action.SHUTDOWN else not engine.stopped
    engine.stop(5)


def test_shutdown_from_on_close() -> None:
    class LastOne(Recorder):
        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> Action | None:
            super().on_close(conn, err)
            return Action.SHUTDOWN

    engine = netloop.start(LastOne(), "tcp://127.0.0.1:0")
    connect(engine.addrs[0]).close()
    assert engine.wait(5)


def test_ticker_runs_at_start_then_after_each_delay_and_can_shut_down() -> None:
    ticks: list[str] = []
    traffic_seen = threading.Event()

    class Ticker(netloop.EventHandler):
        def on_boot(self, engine: netloop.Engine) -> Action | None:
            ticks.append("boot")
            return None

        def on_tick(self) -> netloop._handler.TickResult:
            ticks.append("tick")
            n = ticks.count("tick")
            if n == 1:
                return 0.0
            if n == 2:
                return 3600.0 if not traffic_seen.is_set() else 0.0
            return 0.0, Action.SHUTDOWN

    engine = netloop.start(Ticker(), "tcp://127.0.0.1:0", ticker=True)
    # Tick 2 asked for an hour: no third tick comes unless something else stops the engine.
    wait_until(lambda: ticks.count("tick") >= 2, what="two ticks")
    assert not engine.wait(0.05)
    assert ticks == ["boot", "tick", "tick"]
    engine.stop(5)

    traffic_seen.set()
    ticks.clear()
    engine = netloop.start(Ticker(), "tcp://127.0.0.1:0", ticker=True)
    assert engine.wait(5), "the third tick returns SHUTDOWN"
    assert ticks == ["boot", "tick", "tick", "tick"]


def test_wake_fires_on_traffic_from_another_thread() -> None:
    class Waker(netloop.EventHandler):
        def __init__(self) -> None:
            self.conn: netloop.Conn | None = None
            self.ready = threading.Event()

        def on_open(self, conn: netloop.Conn) -> Action | None:
            self.conn = conn
            self.ready.set()
            return None

        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            conn.write(b"woken:%d" % conn.inbound_buffered())
            return None

    handler = Waker()
    callback_done = threading.Event()
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        assert handler.ready.wait(5) and handler.conn is not None
        handler.conn.wake(lambda conn, err: callback_done.set() if err is None else None)
        assert recv_exact(sock, 7) == b"woken:0"
        assert callback_done.wait(5)


def test_close_from_another_thread_flushes_then_closes() -> None:
    handler = Recorder()
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        assert handler.opened.acquire(timeout=5)
        conn = handler.events[-1][1]
        closed_cb: list[Any] = []
        done = threading.Event()
        conn.async_write(b"x" * 100_000)
        conn.close(lambda c, err: (closed_cb.append((c, err)), done.set()))
        assert recv_until_closed(sock) == b"x" * 100_000
        sock.close()
        assert done.wait(5)
        assert closed_cb == [(conn, None)]
        assert conn.closed


def test_handler_that_raises_closes_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    class Fragile(Recorder):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            data = conn.next()
            if data == b"boom":
                raise ValueError("bad request")
            conn.write(data)
            return None

    handler = Fragile()
    with serving(handler, "tcp://127.0.0.1:0", num_event_loop=1) as engine:
        good = connect(engine.addrs[0])
        bad = connect(engine.addrs[0])
        bad.sendall(b"boom")
        assert recv_until_closed(bad) == b""
        bad.close()
        assert handler.closed.acquire(timeout=5)
        assert len(handler.errors) == 1 and isinstance(handler.errors[0], ValueError)
        good.sendall(b"still here")
        assert recv_exact(good, 10) == b"still here"
        good.close()
        bad.close()
    assert any(
        "bad request" in r.getMessage() or (r.exc_info and "bad request" in str(r.exc_info[1])) for r in caplog.records
    )


def test_on_open_that_raises_closes_that_connection() -> None:
    class Fragile(Recorder):
        def on_open(self, conn: netloop.Conn) -> Action | None:
            super().on_open(conn)
            raise KeyError("no session")

    handler = Fragile()
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        assert recv_until_closed(sock) == b""
        sock.close()
        assert handler.closed.acquire(timeout=5)
        assert isinstance(handler.errors[0], KeyError)


def test_pre_write_sees_every_write() -> None:
    seen: list[bytes] = []

    class Pre(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            data = conn.next()
            conn.write(data)
            conn.writev([b"<", data, b">"])
            return None

        def on_pre_write(self, conn: netloop.Conn, data: Any) -> None:
            seen.append(bytes(data))

    with serving(Pre(), "tcp://127.0.0.1:0", pre_write=True) as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"ab")
        assert recv_exact(sock, 6) == b"ab<ab>"
    assert seen == [b"ab", b"<", b"ab", b">"]


def test_graceful_stop_flushes_buffered_output() -> None:
    """A peer that reads only after stop() began still gets every byte the server wrote."""
    payload = os.urandom(8 << 20)

    class Big(Recorder):
        def on_open(self, conn: netloop.Conn) -> Action | None:
            conn.write(payload)
            super().on_open(conn)
            return None

    handler = Big()
    engine = netloop.start(handler, "tcp://127.0.0.1:0", shutdown_timeout=20)
    sock = connect(engine.addrs[0])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    assert handler.opened.acquire(timeout=5)
    stopper = threading.Thread(target=engine.stop, args=(20,))
    stopper.start()
    assert recv_until_closed(sock) == payload
    sock.close()
    stopper.join(20)
    assert engine.stopped
    assert handler.errors == [None]
    sock.close()


def test_stop_twice_and_from_a_callback_is_harmless() -> None:
    class StopFromTraffic(netloop.EventHandler):
        def on_boot(self, engine: netloop.Engine) -> Action | None:
            self.engine = engine
            return None

        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            self.engine.stop()
            self.engine.stop()
            return None

    engine = netloop.start(StopFromTraffic(), "tcp://127.0.0.1:0")
    with connect(engine.addrs[0]) as sock:
        sock.sendall(b"x")
        assert recv_until_closed(sock) == b""
        sock.close()
        assert engine.wait(5)
    engine.stop(1)
    engine.stop()


def test_run_stops_on_sigterm_and_sigint(tmp_path: Any) -> None:
    script = """
        import sys, netloop
        class H(netloop.EventHandler):
            def on_boot(self, engine):
                print(engine.addrs[0], flush=True)
            def on_traffic(self, conn):
                conn.write(conn.next())
            def on_shutdown(self, engine):
                print("shutdown", flush=True)
        netloop.run(H(), "tcp://127.0.0.1:0")
        print("returned", flush=True)
        """
    for signum in (signal.SIGTERM, signal.SIGINT):
        with script_server(script) as (proc, url):
            with connect(url) as sock:
                sock.sendall(b"ping")
                assert recv_exact(sock, 4) == b"ping"
                proc.send_signal(signum)
                assert recv_until_closed(sock) == b""
            out, _ = proc.communicate(timeout=10)
            assert proc.returncode == 0
            assert out.split() == ["shutdown", "returned"]


def test_run_serves_one_loop_on_the_calling_thread() -> None:
    # A one-loop server started with run() is a single-threaded process (see EngineCore.keep_first).
    script = """
        import threading, netloop
        class H(netloop.EventHandler):
            def on_boot(self, engine):
                print(engine.addrs[0], flush=True)
            def on_traffic(self, conn):
                conn.discard()
                main = threading.current_thread() is threading.main_thread()
                conn.write(b"%d %d" % (threading.active_count(), main))
                return netloop.Action.SHUTDOWN
        netloop.run(H(), "tcp://127.0.0.1:0")
        """
    with script_server(script) as (proc, url):
        with connect(url) as sock:
            sock.sendall(b"?")
            assert recv_until_closed(sock) == b"1 1"
        proc.communicate(timeout=10)
        assert proc.returncode == 0


def test_run_returns_or_raises_when_on_boot_says_so() -> None:
    class Stop(netloop.EventHandler):
        def on_boot(self, engine: netloop.Engine) -> Action | None:
            return Action.SHUTDOWN

    class Boom(netloop.EventHandler):
        def on_boot(self, engine: netloop.Engine) -> Action | None:
            self.addr = engine.addrs[0]
            raise RuntimeError("boot failed")

    netloop.run(Stop(), "tcp://127.0.0.1:0")
    handler = Boom()
    with pytest.raises(RuntimeError, match="boot failed"):
        netloop.run(handler, "tcp://127.0.0.1:0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", int(handler.addr.rsplit(":", 1)[1])))


def test_run_from_a_thread_with_several_loops() -> None:
    opened_on: list[int] = []
    booted = threading.Event()

    class Echo(netloop.EventHandler):
        def on_boot(self, engine: netloop.Engine) -> Action | None:
            self.engine = engine
            booted.set()
            return None

        def on_open(self, conn: netloop.Conn) -> Action | None:
            opened_on.append(threading.get_ident())
            return None

        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            conn.write(conn.next())
            return None

    handler = Echo()
    runner = threading.Thread(target=netloop.run, args=(handler, "tcp://127.0.0.1:0"), kwargs={"num_event_loop": 2})
    runner.start()
    assert booted.wait(5)
    socks = [connect(handler.engine.addrs[0]) for _ in range(4)]
    for i, sock in enumerate(socks):
        sock.sendall(b"%d" % i)
        assert recv_exact(sock, 1) == b"%d" % i
        sock.close()
    handler.engine.stop(5)
    runner.join(5)
    assert not runner.is_alive()
    # Round-robin put connections on both loops; loop 0 ran on the thread that called run().
    assert runner.ident in opened_on and len(set(opened_on)) == 2


def test_sigterm_during_on_boot_still_stops_gracefully() -> None:
    script = textwrap.dedent(
        """
        import os, signal, netloop
        class H(netloop.EventHandler):
            def on_boot(self, engine):
                os.kill(os.getpid(), signal.SIGTERM)
            def on_shutdown(self, engine):
                print("shutdown", flush=True)
        netloop.run(H(), "tcp://127.0.0.1:0")
        print("returned", flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["shutdown", "returned"]


@pytest.mark.skipif(not os.path.exists("/proc/self/wchan"), reason="needs /proc/<pid>/task/<tid>/wchan (Linux)")
@pytest.mark.parametrize("poller", [None, "poll"])
def test_a_signal_taken_by_another_thread_still_wakes_the_loop_on_the_main_thread(poller: str | None) -> None:
    # The kernel may run a process's signal handler on any thread, and the main thread's loop may be asleep in the
    # poller then (or about to sleep, a signal that came in just after the last Python instruction): only the main
    # thread runs Python's handlers, so the loop must be woken for them, else SIGTERM waits for the next event.
    script = textwrap.dedent(
        f"""
        import signal, threading, time, netloop

        def asleep(tid):
            with open(f"/proc/self/task/{{tid}}/wchan") as f:
                return "poll" in f.read()  # do_epoll_wait, do_sys_poll

        def take_sigterm_here(main):
            deadline = time.monotonic() + 10
            pace = threading.Event()
            while not asleep(main) and time.monotonic() < deadline:
                pace.wait(0.001)  # a thread's sleep in the kernel has no event to wait on: poll it, bounded
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

        class H(netloop.EventHandler):
            def on_boot(self, engine):
                main = threading.main_thread().native_id
                threading.Thread(target=take_sigterm_here, args=(main,), daemon=True).start()
            def on_shutdown(self, engine):
                print("shutdown", flush=True)

        netloop.run(H(), "tcp://127.0.0.1:0", poller={poller!r})
        print("returned", flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["shutdown", "returned"]
