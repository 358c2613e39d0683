"""The Conn reading API on real connections: next/peek/discard/read_into/inbound_buffered."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from loopback import ECHO_SCRIPT, connect, recv_exact, script_server, serving

import netloop
from netloop import Action
from netloop._conn import NO_INBOUND


class Framed(netloop.EventHandler):
    """4-byte length-prefixed frames, consumed only when complete: exercises partial consumption."""

    def __init__(self) -> None:
        self.kept: list[bytes] = []

    def on_traffic(self, conn: netloop.Conn) -> Action | None:
        while conn.inbound_buffered() >= 4:
            size = int.from_bytes(conn.peek(4), "big")
            try:
                frame = conn.next(4 + size)[4:]
            except netloop.ShortBufferError:
                assert conn.inbound_buffered() < 4 + size
                break
            self.kept.append(frame)
            conn.write(b"%d:" % len(frame) + frame[:8] + b";")
        return None


def test_partial_frames_stay_buffered_across_reads() -> None:
    handler = Framed()
    frames = [b"a" * 10, b"b" * 70_000, b"", b"c" * 200_000, b"d"]
    stream = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        # Dribble the stream in awkward pieces so frames span reads and the ring buffer wraps.
        for i in range(0, len(stream), 7777):
            sock.sendall(stream[i : i + 7777])
        expected = b"".join(b"%d:" % len(f) + f[:8] + b";" for f in frames)
        assert recv_exact(sock, len(expected)) == expected
    assert handler.kept == frames


def test_read_api_semantics_and_no_aliasing() -> None:
    results: dict[str, Any] = {}
    done = threading.Event()

    class Reader(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            if conn.inbound_buffered() < 10:
                return None
            if "peek" in results:
                conn.discard()
                conn.write(b"k")
                return None
            results["peek"] = conn.peek(3)
            results["peek_all"] = conn.peek()
            try:
                conn.next(11)
            except netloop.ShortBufferError:
                results["short"] = conn.inbound_buffered()
            results["next"] = conn.next(2)
            results["discard"] = conn.discard(1)
            buf = bytearray(3)
            results["read_into"] = (conn.read_into(buf), bytes(buf))
            results["rest"] = conn.next()
            results["empty"] = (conn.next(), conn.peek(), conn.discard(), conn.inbound_buffered())
            conn.write(b"k")
            return None

        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> Action | None:
            done.set()
            return None

    with serving(Reader(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"0123456789")
        assert recv_exact(sock, 1) == b"k"
        # More traffic arrives after the callback: what was returned must not change.
        sock.sendall(b"ZZZZZZZZZZ")
        assert recv_exact(sock, 1) == b"k"
    assert results["peek"] == b"012" and results["peek_all"] == b"0123456789"
    assert results["short"] == 10
    assert results["next"] == b"01" and results["discard"] == 1
    assert results["read_into"] == (3, b"345")
    assert results["rest"] == b"6789"
    assert results["empty"] == (b"", b"", 0, 0)


def test_returned_bytes_survive_later_reads() -> None:
    kept: list[bytes] = []

    class Keeper(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            kept.append(conn.next())
            conn.write(b"+")
            return None

    with serving(Keeper(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        for i in range(50):
            sock.sendall(bytes([65 + i % 26]) * 1000)
            assert recv_exact(sock, 1) == b"+"
    assert kept == [bytes([65 + i % 26]) * 1000 for i in range(50)]


def test_idle_connection_holds_no_inbound_buffer() -> None:
    conns: list[netloop.Conn] = []

    class Half(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            conns.append(conn)
            if conn.inbound_buffered() >= 6:
                conn.write(conn.next(6))
            return None

    with serving(Half(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"abc")
        sock.sendall(b"def")
        assert recv_exact(sock, 6) == b"abcdef"
        # A partial frame needs a buffer of the connection's own; consuming it gives the storage back.
        assert conns[-1]._inbound.capacity == 0
        sock.sendall(b"ghijkl")
        assert recv_exact(sock, 6) == b"ghijkl"
    fresh: list[netloop.Conn] = []

    class Whole(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            fresh.append(conn)
            conn.write(conn.next())
            return None

    with serving(Whole(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"abc")
        assert recv_exact(sock, 3) == b"abc"
        # Everything consumed in the callback: the connection never needed a buffer object at all.
        assert fresh[-1]._inbound is NO_INBOUND


def _minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads page-fault counts from /proc")
@pytest.mark.parametrize("size", [1024, 16384])
def test_short_reads_map_no_memory(size: int) -> None:
    # Each read allocates the loop's read size and keeps what arrived. Were those blocks mapped from the kernel
    # one by one (glibc does so above its threshold unless the loop fits the allocator), every read would cost
    # page faults and extra system calls: a few thousand echoes would fault thousands of times.
    payload = b"x" * size
    with script_server(ECHO_SCRIPT) as (proc, url), connect(url) as sock:
        for _ in range(200):  # warm up: the first requests may grow the heap
            sock.sendall(payload)
            recv_exact(sock, size)
        before = _minor_faults(proc.pid)
        for _ in range(3000):
            sock.sendall(payload)
            recv_exact(sock, size)
        faults = _minor_faults(proc.pid) - before
    assert faults < 300, f"{faults} page faults for 3000 echoes of {size} bytes"


@pytest.mark.parametrize("edge", [False, True], ids=["level", "edge"])
def test_a_fin_that_arrives_with_the_last_bytes_fires_on_eof(edge: bool) -> None:
    """The peer's last bytes and its FIN in one arrival: edge-triggered readiness gives one edge for both, so the
    read after the bytes must find the FIN before waiting for another edge (none comes)."""
    import queue

    events: queue.Queue[tuple[str, bytes]] = queue.Queue()

    class Lines(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> None:
            events.put(("traffic", conn.next()))

        def on_eof(self, conn: netloop.Conn) -> None:
            events.put(("eof", b""))
            conn.write(b"bye")
            return None

    with serving(Lines(), "tcp://127.0.0.1:0", edge_triggered=edge) as engine:
        for _ in range(20):
            with connect(engine.addrs[0]) as sock:
                sock.sendall(b"a\nb\n")
                sock.shutdown(socket.SHUT_WR)
                received = b""
                kind, data = events.get(timeout=5)
                while kind == "traffic":
                    received += data
                    kind, data = events.get(timeout=5)
                assert (kind, received) == ("eof", b"a\nb\n")
                assert recv_exact(sock, 3) == b"bye"
