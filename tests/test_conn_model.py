"""One connection driven through the Conn API against a model (hypothesis stateful testing).

Reads, partial consumes, writes (on the loop and from other threads), pauses, half-closes and closes from both sides:
the handler sees exactly the bytes sent, the client reads exactly the bytes written, on_eof and on_close fire once.
Every transition the connections make on the way is one the lifecycle table (netloop/_lifecycle.py) lists.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test
from loopback import connect, serving, wait_until

import netloop
from netloop import _lifecycle

QUICK = 5.0  # for what should happen at once: only a failing test waits this long


# -- a connection driven against a model -------------------------------------------------------------------------


class PuppetConn:
    """The server's side of one connection, as the model test sees it: what the handler saw, and a way to act."""

    def __init__(self, conn: netloop.Conn) -> None:
        self.conn = conn
        self.changed = threading.Condition()
        self.consumed = 0  # bytes consumed so far (updated on the loop)
        self.eof_at: int | None = None  # bytes consumed + buffered when on_eof fired
        self.eofs = 0
        self.closes: list[BaseException | None] = []
        self.action: netloop.Action | None = None  # what on_traffic returns next

    def on_loop(self, fn: Callable[[netloop.Conn], Any]) -> Any:
        """Run ``fn(conn)`` on the connection's loop and return its result (or raise what it raised)."""
        box: queue.Queue[tuple[bool, Any]] = queue.Queue()

        def task() -> None:
            try:
                box.put((True, fn(self.conn)))
            except BaseException as exc:
                box.put((False, exc))

        self.conn.event_loop.submit(task)
        ok, value = box.get(timeout=QUICK)
        if not ok:
            raise value
        return value

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = QUICK) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), f"timed out waiting for {what}"


class Puppet(netloop.EventHandler):
    """Does nothing by itself: input stays in the connection until the test has the handler consume it."""

    def __init__(self) -> None:
        self.arrivals = threading.Condition()
        self.opened: dict[Any, PuppetConn] = {}

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.context = PuppetConn(conn)
        with self.arrivals:
            self.opened[conn.remote_addr] = conn.context
            self.arrivals.notify_all()
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        puppet: PuppetConn = conn.context
        action, puppet.action = puppet.action, None
        return action

    def on_eof(self, conn: netloop.Conn) -> netloop.Action | None:
        puppet: PuppetConn = conn.context
        with puppet.changed:
            puppet.eofs += 1
            puppet.eof_at = puppet.consumed + conn.inbound_buffered()
            puppet.changed.notify_all()
        return None  # keep it open: the test decides when it closes

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        puppet: PuppetConn = conn.context
        with puppet.changed:
            puppet.closes.append(err)
            puppet.changed.notify_all()
        return None

    def take(self, local_addr: Any) -> PuppetConn:
        with self.arrivals:
            assert self.arrivals.wait_for(lambda: local_addr in self.opened, QUICK), "on_open did not fire"
            return self.opened.pop(local_addr)


CHUNK = 4096
PAUSED_BACKLOG = 64 * 1024  # what the client may send while the server does not read, well within socket buffers


class ConnModel(RuleBasedStateMachine):
    """One real connection to a Puppet server; the model is the bytes each side sent, consumed and received."""

    server: ClassVar[tuple[Puppet, str]]

    def __init__(self) -> None:
        super().__init__()
        puppet, addr = self.server
        self.sock = connect(addr, timeout=QUICK)
        self.p = puppet.take(self.sock.getsockname())
        self.sent = bytearray()
        self.consumed = bytearray()
        self.written = bytearray()
        self.received = bytearray()
        self.client_shut = self.client_closed = self.eof_read = False
        self.server_shut = self.server_closed = self.paused = False
        self.sent_while_paused = 0

    def open_both_ways(self) -> bool:
        return not self.client_closed and not self.server_closed

    # -- the client ----------------------------------------------------------------------------------------

    @precondition(
        lambda self: (
            not self.client_shut
            and not self.client_closed
            and (not self.paused or self.sent_while_paused < PAUSED_BACKLOG)
        )
    )
    @rule(data=st.binary(min_size=1, max_size=CHUNK))
    def client_sends(self, data: bytes) -> None:
        self.sock.sendall(data)
        if not self.server_closed:  # a closing connection discards what comes after the close
            self.sent += data
        if self.paused:
            self.sent_while_paused += len(data)

    @precondition(lambda self: not self.client_closed and not self.eof_read)
    @rule()
    def client_reads(self) -> None:
        while len(self.received) < len(self.written):
            chunk = self.sock.recv(65536)
            assert chunk, f"EOF after {len(self.received)} of the {len(self.written)} bytes written"
            self.received += chunk
        assert self.received == self.written
        if self.server_shut or self.server_closed:
            assert self.sock.recv(1) == b"", "the server's FIN follows what it wrote"
            self.eof_read = True

    @precondition(lambda self: not self.client_shut and not self.client_closed)
    @rule()
    def client_half_closes(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)
        self.client_shut = True
        self.check_eof()

    @precondition(lambda self: not self.client_closed)
    @rule()
    def client_closes(self) -> None:
        self.sock.close()
        self.client_closed = True

    @precondition(lambda self: self.client_closed and not self.server_closed and not self.paused)
    @rule()
    def server_notices_the_client_is_gone(self) -> None:
        p = self.p
        p.wait_for(lambda: p.eofs or p.closes, "on_eof or on_close after the client closed")

    @rule()
    def events_fire_at_most_once(self) -> None:
        p = self.p
        with p.changed:
            assert len(p.closes) <= 1 and p.eofs <= 1, (p.closes, p.eofs)

    # -- the server's handler ---------------------------------------------------------------------------------

    @precondition(open_both_ways)
    @rule(k=st.integers(0, 2 * CHUNK), how=st.sampled_from(["next", "all", "discard", "read_into", "peek"]))
    def server_consumes(self, k: int, how: str) -> None:
        p = self.p

        def consume(conn: netloop.Conn) -> tuple[bytes, bool]:
            n = min(k, conn.inbound_buffered())
            if how == "peek":
                return conn.peek(n), False
            if how == "next":
                data = conn.next(n)
            elif how == "all":
                data = conn.next()
            elif how == "discard":
                data = conn.peek(n)
                assert conn.discard(n) == n
            else:
                buf = bytearray(n)
                assert conn.read_into(buf) == n
                data = bytes(buf)
            with p.changed:
                p.consumed += len(data)
            return data, True

        data, taken = p.on_loop(consume)
        start = len(self.consumed)
        assert data == self.sent[start : start + len(data)], "the handler sees the bytes sent, in order"
        if taken:
            self.consumed += data

    @precondition(open_both_ways)
    @rule()
    def server_asks_for_too_much(self) -> None:
        def ask(conn: netloop.Conn) -> tuple[int, int]:
            before = conn.inbound_buffered()
            with pytest.raises(netloop.ShortBufferError):
                conn.next(before + 1)
            return before, conn.inbound_buffered()

        before, after = self.p.on_loop(ask)
        assert before == after, "a short read consumes nothing"

    @precondition(lambda self: self.open_both_ways() and not self.paused)
    @rule()
    def server_catches_up(self) -> None:
        """While reading is on, every byte sent reaches the handler (consumed or buffered)."""
        p = self.p
        wait_until(
            lambda: p.on_loop(lambda conn: p.consumed + conn.inbound_buffered()) == len(self.sent),
            QUICK,
            "the server to receive every byte sent",
        )
        self.check_eof()

    def check_eof(self) -> None:
        """After the client's FIN, once it can be read, on_eof fires once, after every byte before it."""
        if not self.client_shut or self.paused or self.server_closed:
            return
        p = self.p
        p.wait_for(lambda: p.eofs or p.closes, "on_eof")
        if self.server_shut:
            # Both directions ended: on_eof, then the connection finishes by itself.
            p.wait_for(lambda: p.closes, "on_close after both FINs")
            self.server_closed = True
        else:
            assert p.closes == [], f"the connection closed ({p.closes}) instead of reporting on_eof"
        assert p.eofs == 1
        assert p.eof_at == len(self.sent), "on_eof fired before every byte sent was shown"

    @precondition(open_both_ways)
    @rule(data=st.binary(min_size=1, max_size=CHUNK), how=st.sampled_from(["write", "writev", "async", "asyncv"]))
    def server_writes(self, data: bytes, how: str) -> None:
        halves = [data[: len(data) // 2], data[len(data) // 2 :]]
        err: BaseException | None
        if how in ("write", "writev"):

            def write(conn: netloop.Conn) -> BaseException | None:
                try:
                    conn.write(data) if how == "write" else conn.writev(halves)
                except netloop.ConnClosedError as exc:
                    return exc
                return None

            err = self.p.on_loop(write)
        else:
            box: queue.Queue[BaseException | None] = queue.Queue()
            if how == "async":
                self.p.conn.async_write(data, lambda conn, e: box.put(e))
            else:
                self.p.conn.async_writev(halves, lambda conn, e: box.put(e))
            err = box.get(timeout=QUICK)
        if self.server_shut:
            assert isinstance(err, netloop.ConnClosedError), f"a write after shutdown_write gave {err!r}"
        else:
            assert err is None
            self.written += data

    @precondition(lambda self: self.open_both_ways() and not self.paused)
    @rule()
    def server_pauses_reading(self) -> None:
        self.p.on_loop(lambda conn: conn.pause_reading())
        self.paused = True
        self.sent_while_paused = 0

    @precondition(lambda self: self.open_both_ways() and self.paused)
    @rule()
    def server_resumes_reading(self) -> None:
        self.p.on_loop(lambda conn: conn.resume_reading())
        self.paused = False
        if self.client_shut and self.server_shut:
            # Both directions have ended: the held bytes and the EOF are read, then the connection finishes.
            p = self.p
            p.wait_for(lambda: p.closes, "on_close after both FINs")
            assert p.eofs == 1 and p.eof_at == len(self.sent), "on_eof fired before every byte sent was shown"
            self.server_closed = True
        elif self.client_shut:
            self.server_catches_up()

    @precondition(lambda self: self.open_both_ways() and not self.server_shut)
    @rule()
    def server_shuts_down_writing(self) -> None:
        self.p.on_loop(lambda conn: conn.shutdown_write())
        self.server_shut = True
        if self.client_shut and not self.paused:
            # Both directions have ended: the connection finishes by itself.
            self.p.wait_for(lambda: self.p.closes, "on_close after both FINs")
            self.server_closed = True

    @precondition(open_both_ways)
    @rule(how=st.sampled_from(["close", "close-on-loop", "action"]))
    def server_closes(self, how: str) -> None:
        p = self.p
        if how == "close":
            p.conn.close()  # from this thread
        elif how == "close-on-loop":
            p.on_loop(lambda conn: conn.close())
        else:
            p.action = netloop.Action.CLOSE
            p.conn.wake()
        self.server_closed = True

    def teardown(self) -> None:
        p = self.p
        try:
            if not self.server_closed:
                p.conn.close()
                self.server_closed = True
            if not self.client_closed and not self.eof_read:
                self.client_reads()
        finally:
            self.sock.close()
        p.wait_for(lambda: p.closes, "on_close", timeout=QUICK + 3)
        p.on_loop(lambda conn: None)  # one more turn of the loop: a second on_close would show now
        assert len(p.closes) == 1, f"on_close fired {len(p.closes)} times"
        assert p.eofs <= 1


@pytest.mark.slow
def test_a_connection_behaves_like_its_model() -> None:
    puppet = Puppet()
    with _lifecycle.recording() as performed, serving(puppet, "tcp://127.0.0.1:0") as engine:
        ConnModel.server = (puppet, engine.addrs[0])
        run_state_machine_as_test(
            ConnModel,
            # A real connection's timing varies from run to run, so a replay may take another path: generate
            # only (no shrinking replays, no example database), and a failure is reported as it was found.
            # The draws are the same every run (derandomize): which transitions 40 random runs reached varied, and
            # the coverage check below failed on a run that never shut down an open connection.
            settings=settings(
                derandomize=True,
                max_examples=40,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                phases=[Phase.generate],
                database=None,
            ),
        )
    asked = {(_lifecycle.STATE_NAMES[state], event) for state, event in performed}
    unlisted = {(_lifecycle.STATE_NAMES[s], e) for s, e in performed if (s, e) not in _lifecycle.TRANSITIONS}
    assert unlisted == set(), f"transitions the lifecycle table does not list: {sorted(unlisted)}"
    # The run went through the table, closing states included.
    assert {("open", "close"), ("open", "peer_fin"), ("closing", "flushed"), ("open", "shutdown_write")} <= asked
