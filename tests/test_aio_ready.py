"""netloop.aio's ready queue: ``call_soon``'s handles, how the netloop loop's drain runs them, and what a raising
callback or task does. Run on both cores: the compiled copies (netloop/aio/_speedups.c) and the Python reference."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

import netloop
import netloop.aio
from netloop.aio import _ready

T = TypeVar("T")
TIMEOUT = 5.0
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return netloop.aio.run(asyncio.wait_for(main(), TIMEOUT))


@pytest.mark.skipif(os.environ.get("NETLOOP_EXPECT_COMPILED") != "1", reason="CI's compiled run sets it")
def test_the_compiled_ready_queue_was_built_and_is_used() -> None:
    assert _ready.compiled

    async def main() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, netloop.aio.Loop)
        return type(loop.call_soon).__name__, type(loop.netloop_loop._run_tasks).__name__

    assert run(main) == ("CallSoon", "Drain")


def test_netloop_pure_selects_the_python_ready_queue() -> None:
    code = "from netloop.aio import _ready; print(_ready.compiled, _ready.fast_run_handle is _ready.run_handle)"
    env = dict(os.environ, NETLOOP_PURE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_call_soon_returns_asyncio_handles_with_their_callback_args_and_context() -> None:
    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        seen: list[object] = []
        done = loop.create_future()
        context = contextvars.copy_context()
        context.run(VAR.set, "given")
        VAR.set("current")
        plain = loop.call_soon(lambda *args: seen.append((args, VAR.get())), 1, "two")
        given = loop.call_soon(lambda: seen.append(VAR.get()), context=context)
        default = loop.call_soon(lambda: seen.append(VAR.get()), context=None)
        cancelled = loop.call_soon(seen.append, "never")
        cancelled.cancel()
        loop.call_soon(done.set_result, None)
        await done
        assert all(isinstance(h, asyncio.Handle) for h in (plain, given, default, cancelled))
        assert plain._args == (1, "two")  # type: ignore[attr-defined]
        assert not plain.cancelled() and cancelled.cancelled()
        assert "<lambda>" in repr(plain) and "cancelled" in repr(cancelled)
        if sys.version_info >= (3, 12):
            assert given.get_context() is context
        return seen

    assert run(main) == [((1, "two"), "current"), "given", "current"]


def test_asyncio_handles_and_netloop_tasks_share_one_queue_in_order() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, netloop.aio.Loop)
        owner = loop.netloop_loop
        seen: list[str] = []
        done = loop.create_future()
        loop.call_soon(seen.append, "handle 1")
        owner.call_soon(seen.append, "task 1")
        loop.call_soon(seen.append, "handle 2")
        owner.call_soon(seen.append, "task 2")
        loop.call_soon(done.set_result, None)
        await done
        return seen

    assert run(main) == ["handle 1", "task 1", "handle 2", "task 2"]


def test_a_callback_queued_by_a_callback_runs_in_the_next_round() -> None:
    # The drain runs what is queued when it starts: a callback that requeues itself cannot starve the poller, so a
    # socket's readiness is seen while it spins.
    async def main() -> int:
        loop = asyncio.get_running_loop()
        rounds = 0

        def spin() -> None:
            nonlocal rounds
            rounds += 1
            if not ready.done():
                loop.call_soon(spin)

        ready = loop.create_future()
        a, b = socket.socketpair()
        with a, b:
            loop.add_reader(a, ready.set_result, None)
            loop.call_soon(spin)
            b.send(b"x")
            await ready
            loop.remove_reader(a)
        return rounds

    assert run(main) >= 1


def test_a_raising_callback_goes_to_the_exception_handler_and_the_loop_goes_on() -> None:
    async def main() -> tuple[list[dict[str, Any]], list[str]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        seen: list[str] = []
        done = loop.create_future()

        def boom() -> None:
            raise ValueError("boom")

        handle = loop.call_soon(boom)
        loop.call_soon(seen.append, "after")
        loop.call_soon(done.set_result, None)
        await done
        assert reported[0]["handle"] is handle
        return reported, seen

    reported, seen = run(main)
    assert seen == ["after"]
    assert len(reported) == 1
    assert reported[0]["message"].startswith("Exception in callback ")
    assert "boom" in reported[0]["message"]
    assert isinstance(reported[0]["exception"], ValueError)
    assert reported[0]["exception"].__traceback__ is not None


def test_keyboard_interrupt_in_a_callback_leaves_the_loop() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            raise KeyboardInterrupt

        loop.call_soon(interrupt)
        await asyncio.sleep(TIMEOUT)

    with pytest.raises(KeyboardInterrupt):
        netloop.aio.run(main())


def test_a_raising_netloop_task_is_logged_and_the_rest_run(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise RuntimeError("task broke")

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, netloop.aio.Loop)
        seen: list[str] = []
        done = loop.create_future()
        loop.netloop_loop.call_soon(fail)
        loop.call_soon(seen.append, "after")
        loop.call_soon(done.set_result, None)
        await done
        return seen

    with caplog.at_level(logging.ERROR, logger="netloop"):
        assert run(main) == ["after"]
    failed = [r for r in caplog.records if "task" in r.getMessage() and "failed on event loop" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].exc_info is not None and "task broke" in str(failed[0].exc_info[1])


def test_call_soon_on_a_closed_loop_and_with_a_wrong_keyword() -> None:
    loop = netloop.aio.new_event_loop()
    try:
        with pytest.raises(TypeError):
            loop.call_soon(print, when=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            loop.call_soon()  # type: ignore[call-arg]
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)


def test_debug_mode_checks_the_thread_and_records_where_a_handle_was_made() -> None:
    async def main() -> tuple[object, BaseException | None]:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        handle = loop.call_soon(lambda: None)
        failure: list[BaseException] = []

        def elsewhere() -> None:
            try:
                loop.call_soon(lambda: None)
            except RuntimeError as exc:
                failure.append(exc)

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(TIMEOUT)
        loop.set_debug(False)
        return handle._source_traceback, failure[0] if failure else None  # type: ignore[attr-defined]

    traceback, failure = run(main)
    assert traceback  # where call_soon was called from
    assert isinstance(failure, RuntimeError)


def test_a_subclass_keeps_its_own_call_soon() -> None:
    calls: list[object] = []

    class Counting(netloop.aio.Loop):
        def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:  # type: ignore[override]
            calls.append(callback)
            return super().call_soon(callback, *args, context=context)

    async def main() -> int:
        await asyncio.sleep(0)
        return 1

    loop = Counting()
    try:
        assert loop.run_until_complete(main()) == 1
    finally:
        loop.close()
    assert calls


class Echo(netloop.EventHandler):
    async def on_traffic(self, conn: netloop.Conn) -> None:
        data = conn.next()
        await asyncio.sleep(0)  # a step through call_soon and the drain
        conn.write(data)


def test_an_engine_loop_serves_async_handlers_through_the_ready_queue() -> None:
    engine = netloop.start(Echo(), "tcp://127.0.0.1:0")
    try:
        host, port = engine.addrs[0].removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as client:
            for i in range(20):
                message = b"request %d" % i
                client.sendall(message)
                got = b""
                while len(got) < len(message):
                    chunk = client.recv(100)
                    assert chunk
                    got += chunk
                assert got == message
    finally:
        engine.stop()


STEPS = """
import asyncio, json
import netloop.aio
from netloop.aio import _ready

log = []


async def main():
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, c: log.append(["reported", c["message"], repr(c["exception"])]))

    def boom(x):
        raise ValueError(x)

    done = loop.create_future()
    first = loop.call_soon(log.append, ["handle", 1])
    loop.netloop_loop.call_soon(log.append, ["netloop task"])
    loop.call_soon(boom, 3)
    never = loop.call_soon(log.append, ["never"])
    never.cancel()
    loop.call_later(0, log.append, ["timer"])
    loop.call_soon(loop.call_soon, log.append, ["queued by a callback"])
    loop.call_soon(done.set_result, None)
    log.append(["reprs", repr(first), repr(never)])
    await done
    await asyncio.sleep(0.01)


netloop.aio.run(main())
print(json.dumps([_ready.compiled, log]))
"""


def test_both_ready_queues_run_the_same_steps_the_same_way() -> None:
    # The compiled queue against its Python reference, each in a fresh interpreter.
    runs = {}
    for pure in ("0", "1"):
        env = dict(os.environ, NETLOOP_PURE=pure)
        out = subprocess.run(
            [sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        runs[pure] = json.loads(out.stdout)
    if not runs["0"][0]:
        pytest.skip("the compiled ready queue is not built here")
    assert runs["1"][0] is False
    assert runs["0"][1] == runs["1"][1]
    reprs, *log = runs["0"][1]
    assert reprs[0] == "reprs" and reprs[1].startswith("<Handle list.append(") and reprs[2] == "<Handle cancelled>"
    reported = log[2]
    assert reported[0] == "reported" and reported[2] == "ValueError(3)"
    assert reported[1].startswith("Exception in callback main.<locals>.boom(")  # its arguments: up to the version
    assert log[:2] + log[3:] == [
        ["handle", 1],
        ["netloop task"],
        ["timer"],  # due when the round began: before what a callback of the round queued
        ["queued by a callback"],
    ]
