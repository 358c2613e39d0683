"""Debug mode (``debug=True`` / ``NETLOOP_DEBUG=1``): misuse is loud, slow callbacks are reported."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from loopback import TIMEOUT, connect, recv_exact, serving, wait_until

import netloop
import netloop.aio
from netloop._lifecycle import OPEN

SLOW = 0.02  # the slow_callback_duration the tests set: a callback that blocks 0.03 s is past it


def debug_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("netloop (debug)")]


def test_a_coroutine_nothing_awaits_is_logged_with_the_event(caplog: pytest.LogCaptureFixture) -> None:
    ticked = threading.Event()

    class Careless(netloop.EventHandler):
        async def on_tick(self) -> float:  # type: ignore[override]
            return 1.0

        async def on_pre_write(self, conn: netloop.Conn, data: Any) -> None:  # type: ignore[override]
            ticked.set()

        async def on_shutdown(self, engine: netloop.Engine) -> None:  # type: ignore[override]
            pass

        def on_traffic(self, conn: netloop.Conn) -> None:
            conn.write(conn.next())

    with caplog.at_level(logging.ERROR, "netloop"):
        with serving(Careless(), "tcp://127.0.0.1:0", debug=True, ticker=True, pre_write=True) as engine:
            with connect(engine.addrs[0]) as sock:
                sock.sendall(b"x")
                assert recv_exact(sock, 1) == b"x"
            wait_until(lambda: len(debug_records(caplog)) >= 2, what="on_tick and on_pre_write to be logged")
        messages = debug_records(caplog)
    assert not ticked.is_set()
    for event in ("on_tick", "on_pre_write", "on_shutdown"):
        assert f"Careless.{event} returned a coroutine, which nothing awaits" in "\n".join(messages), messages
    assert "was never awaited" not in caplog.text  # closed, not left to the garbage collector's warning


def test_a_return_value_that_is_no_action_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Odd(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> Any:
            return "yes"

        def on_traffic(self, conn: netloop.Conn) -> Any:
            conn.write(conn.next())
            return 42

    with (
        caplog.at_level(logging.ERROR, "netloop"),
        serving(Odd(), "tcp://127.0.0.1:0", debug=True) as engine,
        connect(engine.addrs[0]) as sock,
    ):
        sock.sendall(b"x")
        assert recv_exact(sock, 1) == b"x"
        wait_until(lambda: len(debug_records(caplog)) == 2, what="both events to be logged")
    messages = "\n".join(debug_records(caplog))
    assert "Odd.on_open returned 'yes', which is neither an Action, None nor a coroutine" in messages
    assert "Odd.on_traffic returned 42" in messages


def test_out_of_debug_mode_a_return_value_that_is_no_action_is_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NETLOOP_DEBUG", raising=False)

    class Odd(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Any:
            conn.write(conn.next())
            return 42

    for debug in (False, True):
        caplog.clear()
        with (
            caplog.at_level(logging.ERROR, "netloop"),
            serving(Odd(), "tcp://127.0.0.1:0", debug=debug) as engine,
            connect(engine.addrs[0]) as sock,
        ):
            sock.sendall(b"x")
            assert recv_exact(sock, 1) == b"x"
            wait_until(lambda: any("returned 42" in r.getMessage() for r in caplog.records), what="the log")
        odd = [r.getMessage() for r in caplog.records if "returned 42" in r.getMessage()]
        assert len(odd) == 1, odd  # in debug mode, once: with the event's name
        assert "neither an Action, None nor a coroutine: ignored" in odd[0]


def test_actions_none_and_coroutines_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Fine(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> netloop.Action:
            return netloop.Action.NONE

        async def on_traffic(self, conn: netloop.Conn) -> netloop.Action:
            conn.write(conn.next())
            return netloop.Action.CLOSE

    with (
        caplog.at_level(logging.DEBUG, "netloop"),
        serving(Fine(), "tcp://127.0.0.1:0", debug=True) as engine,
        connect(engine.addrs[0]) as sock,
    ):
        sock.sendall(b"x")
        assert recv_exact(sock, 1) == b"x"
        assert sock.recv(1) == b""
    assert debug_records(caplog) == []


def test_loop_only_methods_raise_from_another_thread_in_debug_mode() -> None:
    conns: list[netloop.Conn] = []
    opened = threading.Event()

    class Keep(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> None:
            conns.append(conn)
            opened.set()

        def on_traffic(self, conn: netloop.Conn) -> None:
            conn.write(conn.next())  # on the loop: allowed

    with serving(Keep(), "tcp://127.0.0.1:0", debug=True) as engine, connect(engine.addrs[0]) as sock:
        assert opened.wait(TIMEOUT)
        conn = conns[0]
        for call in (lambda: conn.write(b"x"), conn.next, conn.peek, conn.flush, conn.pause_reading):
            with pytest.raises(RuntimeError, match="may only be called on the connection's event loop"):
                call()
        sock.sendall(b"still echoed")
        assert recv_exact(sock, 12) == b"still echoed"
        done = threading.Event()
        conn.async_write(b"!", lambda c, err: done.set())  # the thread-safe way still works
        assert recv_exact(sock, 1) == b"!" and done.wait(TIMEOUT)


def test_loop_only_methods_of_connections_a_client_dials_raise_from_another_thread_in_debug_mode() -> None:
    class Echo(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> None:
            conn.write(conn.next())

    heard = threading.Event()

    class Hear(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> None:
            if conn.next() == b"back":
                heard.set()

    with serving(Echo(), "tcp://127.0.0.1:0") as engine, netloop.Client(Hear(), debug=True) as client:
        dialed: list[netloop.Conn] = [client.dial(engine.addrs[0], timeout=TIMEOUT)]
        here = threading.Event()

        def dial_on_the_loop() -> None:  # a handler's way: the loop's own dial, not blocking
            dialed.append(client.loops[0].dial(engine.addrs[0]))
            here.set()

        client.loops[0].submit(dial_on_the_loop)
        assert here.wait(TIMEOUT)
        wait_until(lambda: dialed[1]._state == OPEN, what="the loop's dial to connect")
        for conn in dialed:
            for method, args in ((conn.write, (b"x",)), (conn.next, ()), (conn.flush, ()), (conn.pause_reading, ())):
                with pytest.raises(RuntimeError, match="may only be called on the connection's event loop"):
                    method(*args)
            heard.clear()
            conn.async_write(b"back")  # the thread-safe way still works
            assert heard.wait(TIMEOUT)


def test_out_of_debug_mode_nothing_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETLOOP_DEBUG", raising=False)
    types: list[type] = []

    class Probe(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> None:
            types.append(type(conn))

    probe = Probe()
    with serving(probe, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]):
        wait_until(lambda: len(types) == 1, what="on_open")
        assert engine.loops[0].handler is probe  # type: ignore[attr-defined]
    assert types == [netloop.Conn]


def test_netloop_debug_in_the_environment_turns_it_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NETLOOP_DEBUG", "1")

    class Odd(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Any:
            conn.write(conn.next())
            return 3.5

    with (
        caplog.at_level(logging.ERROR, "netloop"),
        serving(Odd(), "tcp://127.0.0.1:0") as engine,
        connect(engine.addrs[0]) as sock,
    ):
        sock.sendall(b"x")
        assert recv_exact(sock, 1) == b"x"
        wait_until(lambda: len(debug_records(caplog)) == 1, what="the odd return value to be logged")
    assert "Odd.on_traffic returned 3.5" in debug_records(caplog)[0]


def test_a_callback_that_blocks_the_loop_is_reported_with_its_duration(caplog: pytest.LogCaptureFixture) -> None:
    class Blocking(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> None:
            netloop.aio.loop_of(conn.event_loop).slow_callback_duration = SLOW

        def on_traffic(self, conn: netloop.Conn) -> Any:
            data = conn.next()
            if data == b"block":
                time.sleep(SLOW * 1.5)  # a blocking call in a handler: what debug mode is for
                conn.write(b"blocked\n")
                return None
            return self.blocking_task(conn)

        async def blocking_task(self, conn: netloop.Conn) -> None:
            await asyncio.sleep(0)
            time.sleep(SLOW * 1.5)  # blocks in the task's second step
            conn.write(b"task\n")

    with (
        caplog.at_level(logging.WARNING, "netloop"),
        serving(Blocking(), "tcp://127.0.0.1:0", debug=True) as engine,
        connect(engine.addrs[0]) as sock,
    ):
        sock.sendall(b"block")
        assert recv_exact(sock, 8) == b"blocked\n"
        sock.sendall(b"other")
        assert recv_exact(sock, 5) == b"task\n"
        wait_until(lambda: len(debug_records(caplog)) >= 2, what="both slow callbacks to be reported")
    messages = debug_records(caplog)
    handler_report = [m for m in messages if m.startswith("netloop (debug): Blocking.on_traffic held the event loop")]
    task_report = [m for m in messages if "blocking_task" in m and "held the event loop" in m]
    assert handler_report and task_report, messages
    took = float(handler_report[0].rsplit(" for ", 1)[1].removesuffix(" ms"))
    assert took >= SLOW * 1000


def test_a_fast_handler_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    class Quick(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> None:
            conn.write(conn.next())

    with (
        caplog.at_level(logging.WARNING, "netloop"),
        serving(Quick(), "tcp://127.0.0.1:0", debug=True) as engine,
        connect(engine.addrs[0]) as sock,
    ):
        for _ in range(20):
            sock.sendall(b"ping")
            assert recv_exact(sock, 4) == b"ping"
    assert [m for m in debug_records(caplog) if "held the event loop" in m] == []


def test_the_checked_methods_are_the_designs_loop_only_ones() -> None:
    """Found by their ``*loop*`` docstrings: a docstring reworded must not drop a method from the checks unseen."""
    from netloop.aio._debug import loop_only_methods

    design = {"next", "peek", "discard", "read_into", "inbound_buffered", "write", "writev", "flush"}
    design |= {"outbound_buffered", "send_to", "shutdown_write", "pause_reading", "resume_reading"}
    found = set(loop_only_methods(netloop.Conn))
    assert design <= found, design - found
    assert not found & {"async_write", "async_writev", "wake", "close"}  # the thread-safe ones stay free
