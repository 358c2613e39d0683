"""engine.stats(): every counter against traffic whose counts are known, per loop, in total and over workers."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from loopback import connect, recv_exact, recv_until_closed, serving, wait_until

import netloop

pytestmark = pytest.mark.timeout(60)


class Scripted(netloop.EventHandler):
    """Echoes; ``boom`` raises, ``bye`` closes from the handler, ``big:N`` answers N bytes, ``later`` sets a deadline
    (0.3 s) that closes it."""

    def on_traffic(self, conn: netloop.Conn) -> None:
        data = conn.next()
        if data == b"later":
            conn.set_deadline(0.3)
            return
        if data == b"boom":
            raise RuntimeError("handler failure on purpose")
        if data == b"bye":
            conn.write(b"bye")
            conn.close()
            return
        if data.startswith(b"big:"):
            conn.write(b"x" * int(data[4:]))
            return
        conn.write(data)


def _closed_by_server(sock: socket.socket) -> None:
    try:
        recv_until_closed(sock)
    except ConnectionResetError:
        pass
    sock.close()


def _int_keys(counts: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if type(v) is int and k not in ("loop", "worker")}


def test_counters_match_known_traffic() -> None:
    # A timeout is asked for by the one connection it closes (a deadline): an engine-wide idle_timeout would also
    # close the held connections below on a machine slow enough to leave them idle that long.
    with serving(Scripted(), "tcp://127.0.0.1:0", num_event_loop=2, max_connections=4) as engine:
        url = engine.addrs[0]
        # Two echo exchanges of 100 bytes each, then the peer closes: 200 in, 200 out, closed by the peer.
        for _ in range(2):
            with connect(url) as sock:
                sock.sendall(b"p" * 100)
                assert recv_exact(sock, 100) == b"p" * 100
        # The handler closes one (3 in, 3 out), one handler raises (4 in).
        bye = connect(url)
        bye.sendall(b"bye")
        assert recv_exact(bye, 3) == b"bye"
        _closed_by_server(bye)
        boom = connect(url)
        boom.sendall(b"boom")
        _closed_by_server(boom)
        # One asks for a deadline and is closed by it (5 in).
        later = connect(url)
        later.sendall(b"later")
        wait_until(lambda: engine.stats()["closed_timeout"] == 1, what="the deadline")
        _closed_by_server(later)
        # max_connections=4: four held, the fifth refused (accepted and closed at once).
        wait_until(lambda: engine.count_connections() == 0, what="every connection to close")
        held = [connect(url) for _ in range(4)]
        for sock in held:
            sock.sendall(b"h")
            assert recv_exact(sock, 1) == b"h"
        refused = connect(url)
        _closed_by_server(refused)
        stats = engine.stats()
        assert stats["connections"] == 4
        for sock in held:
            sock.close()
        wait_until(lambda: engine.count_connections() == 0, what="the held connections to close")
        stats = engine.stats()
    assert stats["accepted"] == 2 + 1 + 1 + 1 + 4 + 1
    assert stats["refused_max_connections"] == 1
    assert stats["closed_limit"] == 1
    assert stats["closed_peer"] == 2 + 4
    assert stats["closed_handler"] == 1
    assert stats["closed_error"] == 1
    assert stats["closed_timeout"] == 1
    assert stats["closed"] == stats["accepted"]
    assert stats["handler_errors"] == 1
    assert stats["bytes_in"] == 200 + 3 + 4 + 5 + 4
    assert stats["bytes_out"] == 200 + 3 + 4
    assert stats["connections"] == 0
    # Per loop: two loops and the accepting loop (index -1, whose counters are the refused connection's).
    loops = stats["loops"]
    assert [loop["loop"] for loop in loops] == [0, 1, -1]
    assert loops[2]["refused_max_connections"] == loops[2]["accepted"] == 1
    for name, value in _int_keys(stats).items():
        assert sum(loop[name] for loop in loops) == value, name


def test_backpressure_pauses_are_counted() -> None:
    with (
        serving(Scripted(), "tcp://127.0.0.1:0", write_buffer_cap=64 * 1024) as engine,
        connect(engine.addrs[0]) as sock,
    ):
        size = 32 * 1024 * 1024
        sock.sendall(b"big:%d" % size)  # far more than the kernel buffers hold: the rest waits in netloop
        wait_until(lambda: engine.stats()["backpressure_pauses"] >= 1, what="a backpressure pause")
        assert len(recv_exact(sock, size)) == size
        wait_until(lambda: engine.stats()["bytes_out"] == size, what="every byte counted as sent")


def test_workers_stats_are_the_sum_of_each_workers() -> None:
    with serving(Scripted(), "tcp://127.0.0.1:0", workers=2, worker_balancing="parent") as engine:
        url = engine.addrs[0]
        for _ in range(6):
            with connect(url) as sock:
                sock.sendall(b"0123456789")
                assert recv_exact(sock, 10) == b"0123456789"
        wait_until(lambda: engine.stats()["closed"] == 6, what="six closes counted")
        stats = engine.stats()
    assert stats["accepted"] == 6
    assert stats["bytes_in"] == stats["bytes_out"] == 60
    workers = stats["workers"]
    assert [w["worker"] for w in workers] == [0, 1]
    assert all(w["accepted"] >= 1 for w in workers)  # the parent hands them out in turn
    for name, value in _int_keys(stats).items():
        assert sum(w[name] for w in workers) == value, name
