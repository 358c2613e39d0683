"""One connection driven through its whole lifecycle a step at a time: the peer, the socket's readiness, the handler.

Like ``conn_harness`` (whose reads and writes it reuses): a real socket pair and a real ``EventLoop`` that is never
run. Its steps also close (``Action.CLOSE``, ``close()``), shut down writing, pause, flush, write from "another
thread", let deadlines pass, and have the peer send, read, shut down and close; a ``ready`` step hands the
connection the events its socket has ready (``Conn._on_io``), as the loop's poller would. After every step it
answers what the step returned (or the type of what it raised), the connection's state by name, the events the
handler got since the step before, and how many bytes the peer has read.

Run as a script it answers cases, one JSON line each, on stdin/stdout: the differential test runs it once per core
(``NETLOOP_PURE``) and compares the answers. Each answer also lists every (state, event) the run asked of the
lifecycle table, and those it does not list.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import sys
import types
from typing import Any

from conn_harness import apply

import netloop
from netloop import _lifecycle
from netloop._eventloop import EventLoop
from netloop._options import Options
from netloop._poller import ERR, HUP, IN, OUT

PEER_BUFFER = 8192  # small socket buffers, so that writes of a few tens of KiB are partly buffered


class Recorder(netloop.EventHandler):
    """Records every event; ``on_eof`` closes or keeps the connection open as the case says."""

    def __init__(self, eof_closes: bool) -> None:
        self.eof_closes = eof_closes
        self.events: list[str] = []

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        self.events.append("open")
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        self.events.append(f"traffic {conn.inbound_buffered()}")
        return None

    def on_eof(self, conn: netloop.Conn) -> netloop.Action | None:
        self.events.append("eof")
        return netloop.Action.CLOSE if self.eof_closes else None

    def on_drain(self, conn: netloop.Conn) -> netloop.Action | None:
        self.events.append("drain")
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        self.events.append(f"close {type(err).__name__}")
        return None


def _fire(timer: Any) -> bool:
    """Run a pending timer now, as the loop would once its time came; False when there is none."""
    if timer is None or timer.cancelled:
        return False
    callback, args = timer.callback, timer.args
    timer.cancel()
    callback(*args)
    return True


class Run:
    def __init__(self, case: dict[str, Any]) -> None:
        self.handler = Recorder(case.get("eof_closes", False))
        core = types.SimpleNamespace(sources=None)
        options = Options(write_buffer_cap=case.get("cap", 1 << 20), write_buffer_limit=case.get("limit", 0))
        self.loop = EventLoop(0, core, self.handler, options)  # type: ignore[arg-type]
        ours, self.peer = socket.socketpair()
        for sock in (ours, self.peer):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PEER_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PEER_BUFFER)
        ours.setblocking(False)
        self.peer.setblocking(False)
        self.peer_open = True
        self.received = bytearray()
        conn = self.loop.open_accepted(ours, "peer", None, None)
        assert conn is not None
        self.conn: netloop.Conn = conn

    def step(self, name: str, arg: Any) -> Any:
        conn = self.conn
        if name.startswith("peer_"):
            return self.peer_step(name, arg)
        if name == "ready":
            return self.ready()
        if name == "close":
            return conn._act(netloop.Action.CLOSE)
        if name == "close_async":
            conn.close(lambda c, err: self.handler.events.append(f"closed-callback {type(err).__name__}"))
            return None
        if name == "shutdown_write":
            return conn.shutdown_write()
        if name == "pause":
            return conn.pause_reading()
        if name == "resume":
            return conn.resume_reading()
        if name == "flush":
            return conn.flush()
        if name == "write_big":
            data = (bytes(range(256)) * (arg // 256 + 1))[:arg]
            return [conn.write(data), conn.outbound_buffered()]
        if name == "async_write":
            data = bytes.fromhex(arg)
            conn.async_write(data, lambda c, err: self.handler.events.append(f"written {type(err).__name__}"))
            return None
        if name == "wake":
            conn.wake(lambda c, err: self.handler.events.append(f"woken {type(err).__name__}"))
            return None
        if name == "deadline":
            conn._set_deadline(arg, 60.0)
            return _fire((conn._deadlines or {}).get(arg))
        if name == "linger":
            return _fire(conn._timer)
        return apply(conn, [name, arg])

    def peer_step(self, name: str, arg: Any) -> Any:
        if not self.peer_open:
            return "gone"
        peer = self.peer
        if name == "peer_send":
            return peer.send(bytes.fromhex(arg))
        if name == "peer_read":
            got = self.drain()
            return got
        if name == "peer_shut":
            return peer.shutdown(socket.SHUT_WR)
        if name == "peer_close":
            self.drain()
            peer.close()
            self.peer_open = False
            return None
        raise ValueError(f"no step {name!r}")

    def drain(self) -> int:
        got = 0
        while select.select([self.peer], [], [], 0)[0]:
            try:
                part = self.peer.recv(1 << 16)
            except OSError:
                break
            if not part:
                break
            got += len(part)
            self.received += part
        return got

    def ready(self) -> int:
        """Hand the connection what its socket is ready for, as the level-triggered poller would."""
        conn = self.conn
        mask = conn._mask
        if conn._state == _lifecycle.CLOSED or mask < 0:
            return 0  # closed, or parked off the poller
        poll = select.poll()
        poll.register(conn._fd, select.POLLIN | select.POLLOUT)
        found = 0
        for _, ev in poll.poll(0):
            found |= (IN if ev & select.POLLIN else 0) | (OUT if ev & select.POLLOUT else 0)
            found |= (ERR if ev & select.POLLERR else 0) | (HUP if ev & select.POLLHUP else 0)
        events = found & (mask | ERR | HUP)
        if events:
            conn._on_io(events)
        return events

    def close(self) -> None:
        if self.peer_open:
            self.peer.close()
        self.loop._teardown()


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Apply each of ``case["steps"]`` (``[name, arg]``) and return every answer."""
    with _lifecycle.recording() as performed:
        run = Run(case)
        answers: list[Any] = []
        try:
            for name, arg in case["steps"]:
                try:
                    answer: Any = ["ok", run.step(name, arg)]
                except Exception as exc:
                    answer = ["raise", type(exc).__name__]
                run.loop._run_tasks()
                state = _lifecycle.STATE_NAMES[run.conn._state]
                answers.append([name, answer, state, run.conn.closed, run.handler.events, len(run.received)])
                run.handler.events = []
            if run.peer_open:
                run.drain()
        finally:
            run.close()
        answers.append(["teardown", run.handler.events])
    asked = sorted({(_lifecycle.STATE_NAMES[s], e) for s, e in performed})
    unlisted = sorted({(_lifecycle.STATE_NAMES[s], e) for s, e in performed if (s, e) not in _lifecycle.TRANSITIONS})
    return {
        "answers": answers,
        "received": [len(run.received), hashlib.sha256(run.received).hexdigest()],
        "asked": asked,
        "unlisted": unlisted,
    }


def main() -> None:
    for line in sys.stdin:
        print(json.dumps({"compiled": netloop.compiled, **run_case(json.loads(line))}), flush=True)


if __name__ == "__main__":
    main()
