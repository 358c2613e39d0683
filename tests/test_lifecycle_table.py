"""The lifecycle table (netloop/_lifecycle.py) is the code: both cores follow it, and nothing happens that it lacks.

A differential test drives one connection through generated lifecycle steps (``lifecycle_harness``) on the pure and
the compiled core, each in a process of its own, and compares every observable step: values returned, exceptions,
state names, handler events and the bytes the peer got. Each run also reports every (state, event) it asked of the
table: none may be unlisted.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from core_process import Core, both_cores, core_env
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import netloop
from netloop import _compiled, _lifecycle
from netloop._lifecycle import (
    CLOSE,
    CLOSED,
    DELIVER,
    FINISHED,
    OPEN,
    OPENED,
    PEER_FIN,
    READS,
    REFUSE,
    SENDS,
    STATE_NAMES,
    STATES,
    TRANSITIONS,
    WRITES,
    LifecycleError,
    next_state,
)

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "lifecycle_harness.py"
DOC = HERE.parent / "docs" / "lifecycle.md"


# -- the table itself ---------------------------------------------------------------------------------------------


def test_every_state_has_an_answer_for_reads_and_writes() -> None:
    for table in (READS, WRITES, SENDS, FINISHED, STATE_NAMES):
        assert len(table) == len(STATES)
    for (state, event), to in TRANSITIONS.items():
        assert state in STATES and to in STATES and event in _lifecycle.EVENTS, (state, event, to)


def test_an_unlisted_transition_raises() -> None:
    with pytest.raises(LifecycleError, match="no transition for 'peer_fin' in state closed"):
        next_state(CLOSED, PEER_FIN)
    with pytest.raises(LifecycleError, match="in state open"):
        next_state(OPEN, OPENED)  # an open connection does not open again
    with pytest.raises(LifecycleError, match="no transition for 'no-such-event'"):
        next_state(OPEN, "no-such-event")
    assert next_state(OPEN, CLOSE) == _lifecycle.CLOSING


def test_a_connection_refuses_an_unlisted_transition_and_keeps_its_state() -> None:
    a, b = socket.socketpair()
    opened: list[netloop.Conn] = []

    class Keep(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
            opened.append(conn)
            return None

    client = netloop.Client(Keep())
    client.start()
    try:
        conn = client.enroll(a)
        box: list[object] = []

        def attempt() -> None:
            try:
                conn._to(OPENED)
            except LifecycleError as exc:
                box.append(exc)
            box.append(STATE_NAMES[conn._state])

        done = threading.Event()
        conn.event_loop.submit(lambda: (attempt(), done.set()))
        assert done.wait(5)
        assert isinstance(box[0], LifecycleError) and box[1] == "open"
    finally:
        client.stop()
        b.close()


def test_the_permission_tuples_agree_with_the_transitions() -> None:
    # A state that shows reads closes on a read deadline; one that refuses writes is not sent to.
    for state in STATES:
        if READS[state] == DELIVER:
            assert TRANSITIONS[state, _lifecycle.READ_DEADLINE] == CLOSED
        if WRITES[state] == REFUSE:
            assert not SENDS[state]
        if FINISHED[state]:
            assert (state, _lifecycle.DEADLINE) not in TRANSITIONS  # the user's deadlines are cancelled by then


def test_the_docs_table_is_rendered_from_the_module() -> None:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(_lifecycle.BEGIN), text.index(_lifecycle.END) + len(_lifecycle.END)
    assert text[start:end] == _lifecycle.render(), "run: python -m netloop._lifecycle docs/lifecycle.md"


# -- the compiled core reads the same table -----------------------------------------------------------------------

needs_compiled = pytest.mark.skipif(not _compiled.compiled, reason="the compiled core is not built here")

WRITE_PROBE = """
import _socket, socket, types
import netloop
from netloop import _compiled, _lifecycle
from netloop._conn import NO_INBOUND, NO_OUTBOUND, Conn
from netloop._eventloop import EventLoop
from netloop._options import Options
assert netloop.compiled
if {patch}:
    # The table handed over again, with an open connection's writes queued: the compiled write must follow it.
    sends = (False,) + _lifecycle.SENDS[1:]
    unused = lambda *args: None  # the reference methods; a write of bytes never falls back to them
    _compiled.speedups.configure(
        NO_INBOUND, NO_OUTBOUND, netloop.ShortBufferError, unused, unused, _socket.socket, sends, _lifecycle.CLOSED
    )
queued = []
Conn._enqueue = lambda self, data: queued.append(bytes(data)) or len(data)
loop = EventLoop(0, types.SimpleNamespace(sources=None), netloop.EventHandler(), Options())
ours, peer = socket.socketpair()
ours.setblocking(False)
conn = loop.open_accepted(ours, "peer", None, None)
conn.write(b"abc")
peer.setblocking(False)
try:
    got = peer.recv(10)
except BlockingIOError:
    got = b""
print(repr((queued, got)))
loop._teardown()
"""


@needs_compiled
def test_the_compiled_write_asks_the_table_passed_at_import() -> None:
    assert _compiled.speedups is not None
    assert _compiled.table_problems(_compiled.speedups) == []
    answers = {}
    for patch in (False, True):
        code = textwrap.dedent(WRITE_PROBE.format(patch=patch))
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=core_env(pure=False), timeout=30
        )
        assert out.returncode == 0, out.stderr
        answers[patch] = out.stdout.strip()
    assert answers[False] == repr(([], b"abc")), "an open connection sends at once"
    assert answers[True] == repr(([b"abc"], b"")), "with SENDS[OPEN] false the compiled write queues"


@needs_compiled
def test_a_compiled_table_that_differs_is_refused() -> None:
    class Stale:
        @staticmethod
        def lifecycle() -> tuple[tuple[bool, ...], int]:
            return (SENDS[:-1], CLOSED)

    assert (
        _compiled.table_problems(Stale)
        == [  # type: ignore[arg-type]
            f"its SENDS {SENDS[:-1]} are not netloop._lifecycle.SENDS {SENDS}"
        ]
    )
    assert _compiled.table_problems(object) == [  # type: ignore[arg-type]
        "it has no lifecycle(): it does not take the state table from netloop/_lifecycle.py"
    ]


@needs_compiled
def test_a_compiled_build_from_before_the_table_falls_back_to_the_pure_core_with_one_warning() -> None:
    # The child offers netloop a copy of the real extension as a build from before the table: no lifecycle(), and
    # a configure() that takes the states as numbers.
    assert _compiled.speedups is not None
    code = f"""
        import importlib.util, sys, types, warnings
        spec = importlib.util.spec_from_file_location("netloop._speedups", {_compiled.speedups.__file__!r})
        real = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(real)
        stale = types.ModuleType("netloop._speedups")
        stale.__dict__.update({{k: v for k, v in vars(real).items() if k != "lifecycle"}})
        def configure(*args):  # the old signature took PEER_EOF and CLOSED as numbers
            if not all(isinstance(a, int) for a in args[6:]):
                raise TypeError("configure() argument 7 must be int, not tuple")
        stale.configure = configure
        sys.modules["netloop._speedups"] = stale
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import netloop
        print(netloop.compiled, len(caught), caught[0].message)
        """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=core_env(pure=False),
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    compiled, warned, message = out.stdout.strip().split(" ", 2)
    assert (compiled, warned) == ("False", "1")
    assert "it has no lifecycle()" in message


# -- both cores on the same lifecycle steps -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cores() -> Iterator[tuple[Core, Core]]:
    with both_cores(HARNESS, {"steps": []}) as pair:
        yield pair


def same(cores: tuple[Core, Core], case: dict[str, Any]) -> dict[str, Any]:
    pure, compiled = (core.ask(case) for core in cores)
    assert compiled.pop("compiled") and not pure.pop("compiled")
    assert pure["unlisted"] == [], f"transitions the table does not list: {pure['unlisted']}"
    assert compiled == pure, case
    return pure


HEX = st.binary(min_size=1, max_size=3000).map(bytes.hex)
STEP = st.one_of(
    st.tuples(st.just("peer_send"), HEX),
    st.tuples(st.sampled_from(["peer_read", "peer_shut", "peer_close"]), st.none()),
    st.tuples(st.just("ready"), st.none()),
    st.tuples(st.just("ready"), st.none()),
    st.tuples(st.sampled_from(["next", "discard", "peek"]), st.one_of(st.none(), st.integers(0, 20))),
    st.tuples(
        st.sampled_from(["close", "close_async", "shutdown_write", "pause", "resume", "flush", "wake", "linger"]),
        st.none(),
    ),
    st.tuples(st.just("write_big"), st.sampled_from([0, 5, 3000, 40000])),
    st.tuples(st.just("async_write"), st.binary(max_size=100).map(bytes.hex)),
    st.tuples(st.just("deadline"), st.sampled_from(["deadline", "read_deadline", "write_deadline"])),
)
CASES = st.fixed_dictionaries(
    {
        "steps": st.lists(STEP, max_size=24),
        "eof_closes": st.booleans(),
        "limit": st.sampled_from([0, 30000]),
    }
)

# Paths worth having every run: each closing state reached, with bytes still queued and after they drained.
HALF_CLOSE_THEN_PEER = [
    ["write_big", 40000],
    ["shutdown_write", None],
    ["write_big", 5],
    ["peer_read", None],
    ["ready", None],
    ["peer_read", None],
    ["ready", None],
    ["peer_send", "6869"],
    ["ready", None],
    ["next", None],
    ["peer_shut", None],
    ["ready", None],
    ["ready", None],
]
CLOSE_WHILE_QUEUED = [
    ["write_big", 40000],
    ["close", None],
    ["write_big", 3000],
    ["peer_send", "616263"],
    ["ready", None],
    ["peer_read", None],
    ["ready", None],
    ["peer_read", None],
    ["ready", None],
    ["peer_send", "616263"],
    ["ready", None],
    ["peer_shut", None],
    ["ready", None],
]
PEER_FIRST = [
    ["peer_send", "616263"],
    ["peer_shut", None],
    ["ready", None],
    ["ready", None],
    ["write_big", 5],
    ["write_big", 40000],
    ["close_async", None],
    ["peer_read", None],
    ["ready", None],
    ["peer_read", None],
    ["ready", None],
]
LINGER_RUNS_OUT = [["peer_send", "61"], ["ready", None], ["close", None], ["peer_send", "62"], ["linger", None]]
OVER_THE_LIMIT = [["write_big", 40000], ["write_big", 40000], ["write_big", 5], ["ready", None]]


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=CASES)
@example(case={"steps": HALF_CLOSE_THEN_PEER, "eof_closes": False, "limit": 0})
@example(case={"steps": CLOSE_WHILE_QUEUED, "eof_closes": False, "limit": 0})
@example(case={"steps": PEER_FIRST, "eof_closes": False, "limit": 0})
@example(case={"steps": LINGER_RUNS_OUT, "eof_closes": False, "limit": 0})
@example(case={"steps": OVER_THE_LIMIT, "eof_closes": True, "limit": 30000})
def test_both_cores_take_the_same_lifecycle_steps_alike(cores: tuple[Core, Core], case: dict[str, Any]) -> None:
    same(cores, case)


SCRIPTS = ((HALF_CLOSE_THEN_PEER, 0), (CLOSE_WHILE_QUEUED, 0), (PEER_FIRST, 0), (LINGER_RUNS_OUT, 0))


def test_the_scripted_paths_reach_every_closing_state(cores: tuple[Core, Core]) -> None:
    states = set()
    for steps, limit in (*SCRIPTS, (OVER_THE_LIMIT, 30000)):
        answer = same(cores, {"steps": steps, "eof_closes": False, "limit": limit})
        states |= {state for state, _ in answer["asked"]} | {step[2] for step in answer["answers"][:-1]}
    assert states >= {"open", "peer-eof", "closing", "finishing", "shutting", "half-shut", "lingering", "failing"}


# -- a pending error ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["write", "writev"])
def test_a_write_after_the_limit_was_passed_in_the_same_callback_is_dropped(how: str) -> None:
    """Passing write_buffer_limit drops what was buffered and closes after the callback: a later write there is
    dropped too (0, nothing buffered), never buffered behind the bytes already thrown away."""
    from loopback import connect, serving

    seen: list[object] = []
    closed = threading.Event()

    class Flood(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            conn.next()
            conn.write(b"f" * (4 << 20))
            sent = conn.write(b"tail") if how == "write" else conn.writev([b"ta", b"il"])
            seen.extend([sent, conn.outbound_buffered(), conn.closed])
            return None

        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
            seen.append(type(err).__name__)
            closed.set()
            return None

    # A small send buffer: the kernel's autotuning may otherwise take nearly all of the 4 MiB in one send.
    options = {"write_buffer_cap": 64 * 1024, "write_buffer_limit": 256 * 1024, "socket_send_buffer": 64 * 1024}
    with serving(Flood(), "tcp://127.0.0.1:0", **options) as engine, connect(engine.addrs[0]) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"go")  # and never read
        assert closed.wait(10)
    assert seen == [0, 0, False, "OutboundLimitError"]


# -- closed before it opened ----------------------------------------------------------------------------------------


def test_a_tls_connection_closed_during_its_handshake_closes_at_once() -> None:
    """close() on a TLS connection dialled from a handler, before its handshake completed: the handler hears
    ``on_close`` with ``ConnectionAbortedError`` at once, never ``on_open``, and no FIN or close_notify is tried on
    a connection that never opened."""
    import ssl

    from loopback import connect, serving

    events: list[tuple[str, str]] = []
    closed = threading.Event()

    class Dialer(netloop.EventHandler):
        def __init__(self, target: str) -> None:
            self.target = target

        def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
            if conn.context == "upstream":
                events.append(("open", ""))
                return None
            upstream = conn.event_loop.dial(self.target, tls=ssl.create_default_context(), server_hostname="localhost")
            upstream.context = "upstream"
            upstream.close()
            return None

        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
            if conn.context == "upstream":
                events.append(("close", type(err).__name__))
                closed.set()
            return None

    with socket.create_server(("127.0.0.1", 0)) as mute:  # accepts (in its backlog), never answers the handshake
        target = f"tcp://127.0.0.1:{mute.getsockname()[1]}"
        with (
            serving(Dialer(target), "tcp://127.0.0.1:0", tls_handshake_timeout=60) as front,
            connect(front.addrs[0]),
        ):
            assert closed.wait(5), "on_close did not come before the handshake timeout"
            assert events == [("close", "ConnectionAbortedError")]


def test_a_write_queued_while_a_failed_handler_closes_the_connection_is_flushed_before_the_fin() -> None:
    """A handler that raised closes its connection gracefully (``closing``: writes are queued, flushed, then our
    FIN): a write that comes meanwhile goes out in order, as the table says, and its callback hears no error."""
    from loopback import connect, recv_until_closed, serving

    results: list[object] = []
    done = threading.Event()

    class Raises(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            conn.next()
            conn.write(b"x" * (1 << 20))  # more than the socket takes: the close has bytes to flush
            conn.async_write(b"after", lambda c, err: results.append(err))  # runs once this callback is over
            raise RuntimeError("the handler failed")

        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
            results.append(type(err).__name__)
            done.set()
            return None

    with (
        serving(Raises(), "tcp://127.0.0.1:0", socket_send_buffer=64 * 1024) as engine,
        connect(engine.addrs[0]) as sock,
    ):
        sock.sendall(b"go")
        got = recv_until_closed(sock)
        assert done.wait(10)
    assert len(got) == (1 << 20) + 5 and got.endswith(b"after")
    assert results == [None, "RuntimeError"]
