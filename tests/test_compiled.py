"""The two cores: the compiled hot path (netloop/_speedups.c) and the pure-Python reference.

The whole suite runs against each (``.ci/run`` runs it twice, the second time with ``NETLOOP_PURE=1``); these tests
check which core is in use, and drive the corners where the compiled methods hand over to the Python ones.
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
import threading

import pytest
from loopback import connect, recv_exact, serving

import netloop
from netloop._compiled import COMPILED_METHODS, speedups


def test_the_flag_tells_which_core_serves() -> None:
    if netloop.compiled:
        assert speedups is not None
        assert issubclass(netloop.Conn, speedups.ConnCore)
        for name in COMPILED_METHODS:
            # ConnCore's C function, as a method of Conn itself (so the interpreter specializes its calls).
            method, core = vars(netloop.Conn)[name], vars(speedups.ConnCore)[name]
            assert type(method) is type(core) and method.__objclass__ is netloop.Conn, name
            assert method.__doc__ == core.__doc__, name
    else:
        assert speedups is None
        assert inspect.isfunction(netloop.Conn.write)
        assert inspect.isfunction(netloop.Conn.next)


@pytest.mark.skipif(not netloop.compiled, reason="the compiled core's own check")
def test_the_compiled_methods_take_only_conns() -> None:
    assert speedups is not None
    with pytest.raises(TypeError):
        speedups.methods_for(int)  # not a ConnCore: its methods would read fields it has not got
    for name in COMPILED_METHODS:
        with pytest.raises(TypeError):
            getattr(netloop.Conn, name)(speedups.ConnCore())  # a ConnCore that is not a Conn


def test_both_cores_show_the_same_signatures() -> None:
    def parameters(method: object) -> list[tuple[str, object]]:
        return [(p.name, p.default) for p in inspect.signature(method).parameters.values()]  # type: ignore[arg-type]

    empty = inspect.Parameter.empty
    assert parameters(netloop.Conn.next) == [("self", empty), ("n", -1)]
    assert parameters(netloop.Conn.write) == [("self", empty), ("data", empty)]
    assert parameters(netloop.Conn.inbound_buffered) == [("self", empty)]
    assert parameters(netloop.Conn.outbound_buffered) == [("self", empty)]


def test_netloop_pure_selects_the_python_core() -> None:
    code = "import inspect, netloop; print(netloop.compiled, inspect.isfunction(netloop.Conn.write))"
    env = dict(os.environ, NETLOOP_PURE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.skipif(os.environ.get("NETLOOP_EXPECT_COMPILED") != "1", reason="CI's compiled run sets it")
def test_the_compiled_core_was_built() -> None:
    # Without this, a build that failed quietly would run the pure-Python core twice in CI.
    assert netloop.compiled


class Mixed(netloop.EventHandler):
    """Reads and writes every way the API allows: keyword arguments, partial reads, every buffer type."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        if conn.inbound_buffered() < 12:
            return None
        head = conn.next(2)
        more = conn.next(n=2)
        try:
            conn.next(1 << 20)
        except netloop.ShortBufferError as exc:
            self.seen.append(str(exc))
        self.seen.append(conn.inbound_buffered())
        self.seen.append(conn.outbound_buffered())
        conn.write(head)
        conn.write(data=more)
        conn.write(bytearray(conn.next(4)))
        conn.write(memoryview(b"<" + conn.next() + b">")[1:-1])
        conn.writev([b"|", memoryview(b"!")])
        return None


def test_reads_and_writes_off_the_common_path_behave_the_same() -> None:
    handler = Mixed()
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"abcdefghijklmnop")
        assert recv_exact(sock, 18) == b"abcdefghijklmnop|!"
    assert handler.seen == ["asked for 1048576 bytes, 12 buffered", 12, 0]


class Upper(netloop.EventHandler):
    """``on_traffic`` as the handler's bound method, a plain function in the instance, and a bound method of another
    object (the compiled loop calls a bound method as its function with its object first, anything else as it is)."""

    def __init__(self, kind: str) -> None:
        self.seen: list[object] = []
        if kind == "function":
            self.on_traffic = lambda conn: self.reply(None, conn)  # type: ignore[method-assign]
        elif kind == "other":
            self.on_traffic = Other(self).on_traffic  # type: ignore[method-assign]

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        return self.reply(self, conn)

    def reply(self, owner: object, conn: netloop.Conn) -> netloop.Action | None:
        self.seen.append(owner)
        conn.write(conn.next().upper())
        return None


class Other:
    def __init__(self, handler: Upper) -> None:
        self.handler = handler

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        return self.handler.reply(self, conn)


@pytest.mark.parametrize("kind", ["method", "function", "other"])
def test_on_traffic_is_called_as_the_handler_holds_it(kind: str) -> None:
    handler = Upper(kind)
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"abc")
        assert recv_exact(sock, 3) == b"ABC"
    assert handler.seen, "on_traffic never ran"
    for owner in handler.seen:
        assert owner is handler if kind == "method" else owner is None if kind == "function" else type(owner) is Other


class RaisingAction:
    def __bool__(self) -> bool:
        raise RuntimeError("no truth in this action")


class BadAction(netloop.EventHandler):
    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.next()
        conn.write(data)
        if data == b"bad":
            return RaisingAction()  # type: ignore[return-value]
        return None


def test_an_error_escaping_an_event_is_logged_and_the_loop_serves_on(caplog: pytest.LogCaptureFixture) -> None:
    logged = threading.Event()

    class Flag(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "internal error" in record.getMessage():
                logged.set()

    flag = Flag()
    logging.getLogger("netloop").addHandler(flag)
    try:
        with serving(BadAction(), "tcp://127.0.0.1:0") as engine:
            with connect(engine.addrs[0]) as bad:
                bad.sendall(b"bad")
                assert recv_exact(bad, 3) == b"bad"
                assert logged.wait(10), "the escaped error was not logged"
            with connect(engine.addrs[0]) as good:
                good.sendall(b"good")
                assert recv_exact(good, 4) == b"good"
    finally:
        logging.getLogger("netloop").removeHandler(flag)
    assert any(r.exc_info and "no truth" in str(r.exc_info[1]) for r in caplog.records)
