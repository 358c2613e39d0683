"""The write path: immediate writes, gather writes, backpressure, async writes, and failing peers."""

from __future__ import annotations

import array
import os
import queue
import socket
import struct
import threading
from typing import Any

import pytest
from loopback import Recorder, connect, recv_exact, serving, wait_until

import netloop
from netloop import Action
from netloop._conn import NO_OUTBOUND


def test_writev_and_write_accept_any_buffer() -> None:
    class Gather(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            data = conn.next()
            scratch = bytearray(b"mutable")
            conn.writev([b"[", bytearray(data), memoryview(b"]")])
            conn.write(scratch)
            scratch[:] = b"CHANGED"  # written already or copied: the peer must see the old bytes
            return None

    with serving(Gather(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"xyz")
        assert recv_exact(sock, 12) == b"[xyz]mutable"


def test_backpressure_bounds_outbound_memory_for_a_peer_that_never_reads() -> None:
    """The server echoes a flood from a peer that never reads: reading pauses above the high-water mark."""
    cap = 256 * 1024
    peak: list[int] = [0]
    conns: list[netloop.Conn] = []

    class Echo(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            conns.append(conn)
            conn.write(conn.next())
            peak[0] = max(peak[0], conn.outbound_buffered())
            return None

    with serving(Echo(), "tcp://127.0.0.1:0", write_buffer_cap=cap) as engine:
        sock = connect(engine.addrs[0], timeout=0.5)
        sent = 0
        chunk = b"z" * 65536
        try:
            while sent < 64 << 20:  # the kernel buffers fill and send times out long before 64 MiB
                sent += sock.send(chunk)
        except TimeoutError:
            pass
        assert sent < 64 << 20, "the server kept reading a peer that never reads"
        conn = conns[-1]
        wait_until(lambda: bool(conn._pause), what="reading to pause")
        # Reading pauses at the mark (not only past it), so the peak may equal it when the reads add up to it
        # exactly; one read's worth may land on top of the mark before reading pauses.
        assert cap <= peak[0] <= cap + engine.loops[0].read_size
        # Now read everything: reading resumes and every byte comes back.
        sock.settimeout(10)
        got = 0
        sender_done = threading.Event()

        def drain() -> None:
            nonlocal got
            while got < sent:
                data = sock.recv(1 << 20)
                assert data
                got += len(data)
            sender_done.set()

        reader = threading.Thread(target=drain)
        reader.start()
        assert sender_done.wait(20)
        reader.join()
        assert got == sent
        # Drained: the connection gave its outbound buffer back (idle connections hold none).
        wait_until(lambda: conn.outbound_buffered() == 0, what="the outbound buffer to drain")
        assert conn._outbound is NO_OUTBOUND
        sock.close()


def test_async_write_from_threads_keeps_each_threads_order() -> None:
    handler = Recorder()
    with serving(handler, "tcp://127.0.0.1:0", num_event_loop=2) as engine, connect(engine.addrs[0]) as sock:
        assert handler.opened.acquire(timeout=5)
        conn = handler.events[-1][1]
        results: list[Any] = []
        lock = threading.Lock()

        def writer(tag: bytes) -> None:
            for i in range(200):
                conn.async_write(
                    tag + b"%03d," % i, lambda c, err: (lock.acquire(), results.append(err), lock.release())
                )

        threads = [threading.Thread(target=writer, args=(t,)) for t in (b"a", b"b", b"c")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        data = recv_exact(sock, 3 * 200 * 5).decode()
        for tag in "abc":
            mine = [item for item in data.split(",") if item.startswith(tag)]
            assert mine == [f"{tag}{i:03d}" for i in range(200)]
        wait_until(lambda: len(results) == 600, what="all callbacks")
        assert results == [None] * 600


def test_async_writev_sends_in_order() -> None:
    handler = Recorder()
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        assert handler.opened.acquire(timeout=5)
        handler.events[-1][1].async_writev([b"one ", bytearray(b"two "), b"three"])
        assert recv_exact(sock, 13) == b"one two three"


def test_write_to_a_reset_peer_closes_the_connection_cleanly() -> None:
    """The peer resets mid-stream: on_close gets the error, the loop keeps serving others."""
    handler = Recorder()
    payload = os.urandom(4 << 20)

    class Streamer(Recorder):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            if conn.next() == b"go":
                conn.write(payload)
            return None

    handler = Streamer()
    with serving(handler, "tcp://127.0.0.1:0") as engine:
        victim = connect(engine.addrs[0])
        victim.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        victim.sendall(b"go")
        assert len(victim.recv(1024)) > 0
        victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        victim.close()  # RST with unread data: the server's pending writes now fail
        assert handler.closed.acquire(timeout=5)
        assert isinstance(handler.errors[0], (ConnectionError, OSError))
        with connect(engine.addrs[0]) as other:
            other.sendall(b"go")
            assert recv_exact(other, len(payload)) == payload
        wait_until(lambda: engine.count_connections() == 0, what="connections to close")


def test_write_after_close_raises() -> None:
    failures: list[BaseException] = []
    done = threading.Event()

    class Late(netloop.EventHandler):
        def on_close(self, conn: netloop.Conn, err: BaseException | None) -> Action | None:
            try:
                conn.write(b"too late")
            except netloop.ConnClosedError as exc:
                failures.append(exc)
            done.set()
            return None

    with serving(Late(), "tcp://127.0.0.1:0") as engine:
        connect(engine.addrs[0]).close()
        assert done.wait(5)
    assert len(failures) == 1


def test_half_close_still_gets_the_reply() -> None:
    class Reply(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            conn.write(conn.next() * 100_000)
            return None

    with serving(Reply(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"ab")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
        assert data == b"ab" * 100_000


@pytest.mark.parametrize("edge", [False, True])
def test_socket_option_setters(edge: bool) -> None:
    values: dict[str, Any] = {}

    class Opts(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> Action | None:
            conn.set_no_delay(False)
            conn.set_keep_alive(True, idle=30, interval=5, count=4)
            conn.set_read_buffer(65536)
            conn.set_write_buffer(65536)
            conn.set_linger(0)
            s = socket.socket(fileno=os.dup(conn.fd))
            values["nodelay"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            values["keepalive"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            values["keepidle"] = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            values["linger"] = struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
            values["addrs"] = (conn.local_addr, conn.remote_addr)
            s.close()
            conn.write(b"ok")
            return None

    with serving(Opts(), "tcp://127.0.0.1:0", edge_triggered=edge) as engine, connect(engine.addrs[0]) as sock:
        assert recv_exact(sock, 2) == b"ok"
        assert values["addrs"] == (sock.getpeername(), sock.getsockname())
    assert values["nodelay"] == 0
    assert values["keepalive"] == 1 and values["keepidle"] == 30
    assert values["linger"] == (1, 0)


@pytest.mark.parametrize("how", ["write", "writev", "write-after-buffered"])
def test_a_wide_memoryview_is_written_byte_exact_and_counted_in_bytes(how: str) -> None:
    # 4-byte items: a count of items instead of bytes would send a quarter and keep a wrong rest.
    words = array.array("I", range(4 << 20))  # 16 MiB
    expected = words.tobytes()
    returned: queue.Queue[int] = queue.Queue()

    class Wide(netloop.EventHandler):
        def on_traffic(self, conn: netloop.Conn) -> Action | None:
            conn.next()
            view = memoryview(words)
            if how == "write":
                returned.put(conn.write(view))
            elif how == "writev":
                returned.put(conn.writev([b"<", view, memoryview(array.array("H", [0x3E3E]))]))
            else:
                conn.write(b"<" * (4 << 20))  # more than the kernel takes: the view goes to the buffer whole
                returned.put(conn.write(view))
            return None

    head, tail = {"write": (b"", b""), "writev": (b"<", b">>"), "write-after-buffered": (b"<" * (4 << 20), b"")}[how]
    with serving(Wide(), "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(b"go")
        got = recv_exact(sock, len(head) + len(expected) + len(tail))
        assert got == head + expected + tail
        assert returned.get(timeout=10) == (len(expected) + len(head) + len(tail) if how == "writev" else len(expected))
