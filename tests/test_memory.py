"""Process memory after a slow reader's outbound buffer is released: RSS comes back, not just Python's objects.

A member that never reads makes the server buffer everything sent to it. When it leaves, Python frees every chunk
(``sys.getallocatedblocks`` is back at its baseline), but glibc keeps the pages of the event loop thread's heap
that allocated them: a per-thread arena gives memory back only from the top of its 64 MiB heaps, and a few live
chunks above the freed ones pin them all. The server runs in a subprocess so its RSS is its own.
"""

from __future__ import annotations

import platform
import queue
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from loopback import TIMEOUT, split

from bench._leaks import responder_stats
from bench._tls import make_certificate
from bench.soak import address, responder_server, settled_stats

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="reads /proc; glibc's heap retention"
)

CHUNK = 4000  # above pymalloc's 512-byte limit: each queued chunk is a glibc heap block
LINES = 500
WRITES_PER_LINE = 100  # LINES * WRITES_PER_LINE * CHUNK = 200 MB queued for the member that never reads
GROWTH = 150 * 2**20  # what the server must have grown by before the members leave

SERVER = """
import sys
import netloop
from netloop.codec import LineBasedFrameCodec

CHUNK = int(sys.argv[1])

def report(*words):
    sys.stdout.write(" ".join(map(str, words)) + "\\n")  # one write: two loop threads report
    sys.stdout.flush()

class Fanout(netloop.EventHandler):
    # "sink": this member never reads. "fill N": queue N fresh CHUNK-byte blocks to every sink with async_write,
    # as examples/chat.py broadcasts; once the sink's loop has buffered them it reports the sink's outbound bytes.
    def __init__(self):
        self.codec = LineBasedFrameCodec(b"\\n")
        self.sinks = []

    def on_boot(self, engine):
        self.engine = engine
        report(engine.addrs[0])

    def on_traffic(self, conn):
        for frame in self.codec.decode(conn):
            if frame == b"sink":
                self.sinks.append(conn)
                report("sink", conn.event_loop.index)
            elif frame.startswith(b"fill "):
                for sink in self.sinks:
                    for _ in range(int(frame[5:]) - 1):
                        sink.async_write(b"x" * CHUNK)
                    sink.async_write(b"x" * CHUNK, lambda c, err: report("buffered", c.outbound_buffered(), err))
                report("filling", conn.event_loop.index)
        return None

    def on_close(self, conn, err):
        if conn in self.sinks:
            self.sinks.remove(conn)
        report("closed", self.engine.count_connections())
        return None

netloop.run(Fanout(), "tcp://127.0.0.1:0", num_event_loop=2, write_buffer_limit=0)
"""


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Reports:
    """The server's reports by their first word: waiting for one kind never drops another (the two loops interleave
    theirs: a "buffered" can come before the "filling" of the same line)."""

    def __init__(self) -> None:
        self.kinds: dict[str, queue.Queue[str]] = {}
        self.lock = threading.Lock()

    def _queue(self, kind: str) -> queue.Queue[str]:
        with self.lock:
            return self.kinds.setdefault(kind, queue.Queue())

    def put(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        self._queue(kind).put(rest)

    def next(self, kind: str) -> str:
        """The rest of the server's next ``kind`` report."""
        try:
            return self._queue(kind).get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no {kind!r} report from the server in {TIMEOUT}s") from None


@pytest.mark.slow
def test_rss_returns_near_baseline_after_a_non_reading_members_output_is_released() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER), str(CHUNK)], stdout=subprocess.PIPE, text=True
    )
    try:
        stdout = proc.stdout
        assert stdout is not None
        _, (host, port) = split(stdout.readline().strip())
        reports = Reports()

        def read_reports() -> None:
            for line in stdout:
                reports.put(line.strip())

        threading.Thread(target=read_reports, daemon=True).start()
        base = _rss(proc.pid)

        sink = socket.socket()
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read: everything stays queued
        sink.settimeout(TIMEOUT)
        sink.connect((host, port))
        sink.sendall(b"sink\n")
        sink_loop = reports.next("sink")
        sender = socket.create_connection((host, port), timeout=TIMEOUT)
        sender.sendall(f"fill {WRITES_PER_LINE}\n".encode() * LINES)
        assert reports.next("filling") != sink_loop, "the writes cross event loops, as a chat broadcast does"
        for _ in range(LINES):  # every fill has reached the sink's outbound buffer
            buffered = int(reports.next("buffered").split()[0])
        peak = _rss(proc.pid)
        assert buffered >= GROWTH, f"{buffered} bytes buffered"
        assert peak >= base + GROWTH, f"the server grew by {(peak - base) / 2**20:.0f} MB only"

        sink.close()
        sender.close()
        while reports.next("closed") != "0":
            pass
        # Freed memory may be given back a little later (a trim may wait for its turn): poll, bounded.
        limit = base + GROWTH // 5
        deadline = time.monotonic() + 3.0
        pace = threading.Event()
        while (after := _rss(proc.pid)) > limit and time.monotonic() < deadline:
            pace.wait(0.05)  # RSS has no event to wait on: poll it, bounded
        mb = 2**20
        assert after <= limit, (
            f"RSS {after / mb:.0f} MB after the members left, from {base / mb:.0f} MB at start and"
            f" {peak / mb:.0f} MB at peak: the freed output was not given back to the system"
        )
    finally:
        proc.kill()
        proc.wait()


TLS_CLIENTS = 30
ASKED = 16 * 2**20  # each client asks for this much, reads READ of it and closes without close_notify
READ = 2**20
TLS_GROWTH_LIMIT = 32 * 2**20  # a leaked connection holds most of its 16 MiB answer


@pytest.mark.slow
def test_rss_stays_bounded_after_tls_clients_drop_mid_download(tmp_path: Path) -> None:
    """The reported leak: TLS clients that ask for 16 MiB, read 1 MiB and close without close_notify left ~10 MB
    each in the server (552 MB after 50), never given back. The server here runs with its collector on, as
    deployed: it must give that memory back without waiting for a full collection."""
    files = make_certificate(tmp_path)
    server = responder_server(files, tmp_path, collector=True)
    ctx = ssl.create_default_context(cafile=str(files.cert))
    with server:
        target = address(server)
        base = responder_stats(target, ctx)["rss"]
        for _ in range(TLS_CLIENTS):
            with (
                socket.create_connection(target, timeout=TIMEOUT) as raw,
                ctx.wrap_socket(raw, server_hostname=target[0]) as sock,
            ):
                sock.sendall(f"GET /{ASKED} HTTP/1.1\r\n\r\n".encode())
                got = 0
                while got < READ:
                    chunk = sock.recv(READ - got)
                    assert chunk, f"closed after {got} bytes"
                    got += len(chunk)
        limit = base + TLS_GROWTH_LIMIT
        stats = settled_stats(target, ctx, rss_limit=limit)  # a trim may come up to a second after the frees
        mb = 2**20
        assert stats["rss"] <= limit, (
            f"RSS {stats['rss'] / mb:.0f} MB after {TLS_CLIENTS} TLS clients dropped mid-download, from"
            f" {base / mb:.0f} MB at start ({stats['live']} connections alive, {stats['full_collections']} full"
            " collections)"
        )
