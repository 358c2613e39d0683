"""How a TLS server connection takes records off the socket (``netloop/_tls_records.py``): with the compiled core
OpenSSL reads ahead, so records it read but did not yet decrypt wait in OpenSSL, where no readiness event will
report them. Each test leaves records there at a point where the connection must find them itself: behind the
handshake's last message, past a round's reads, behind a pause, before a close_notify; on TLS 1.2 and 1.3.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from typing import Any

import pytest
from loopback import TIMEOUT, connect, serving, wait_until
from test_tls import BioClient, Pki, TlsEcho, issue_pki, unread_by

import netloop
from netloop import _tls_records

VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="tls1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="tls1.3"),
]


@pytest.fixture(scope="module", name="pki")
def module_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return issue_pki(tmp_path_factory)


def client_context(pki: Pki, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = pki.client_context()
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def bunched(count: int) -> list[bytes]:
    """``count`` small, distinct plaintexts: each its own record, all of them in one TCP write."""
    return [b"record %03d;" % i for i in range(count)]


def test_read_ahead_is_on_with_the_compiled_core() -> None:
    """The compiled core's TLS connections read ahead; the pure-Python core's never do."""
    if os.environ.get("NETLOOP_PURE", "") not in ("", "0"):
        assert not _tls_records.READ_AHEAD
    elif os.environ.get("NETLOOP_EXPECT_COMPILED") == "1":
        assert _tls_records.READ_AHEAD, "OpenSSL's read-ahead functions were not found through the _ssl module"
    else:
        pytest.skip("which core serves is CI's to say (NETLOOP_EXPECT_COMPILED=1 or NETLOOP_PURE=1)")


@pytest.mark.parametrize("version", VERSIONS)
def test_records_bunched_past_a_round_of_reads_all_arrive(pki: Pki, version: ssl.TLSVersion) -> None:
    """More records in one TCP write than one round reads (``READS_PER_ROUND``): the rest wait in OpenSSL, or in
    the socket, and are read on."""
    parts = bunched(100)
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine, connect(engine.addrs[0]) as sock:
        client = BioClient(sock, client_context(pki, version))
        client.handshake()
        sock.sendall(client.records(*parts))
        expected = b"".join(parts)
        assert client.read_exact(len(expected)) == expected


def test_data_behind_the_clients_finished_message_is_read(pki: Pki) -> None:
    """TLS 1.3: the client's Finished and its first records in one TCP write; the handshake's last read takes
    them along, and nothing on the socket is left to report them."""
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine, connect(engine.addrs[0]) as sock:
        client = BioClient(sock, client_context(pki, ssl.TLSVersion.TLSv1_3))
        held: list[bytes] = []

        def send(data: bytes) -> None:
            # The ClientHello goes; the Finished, written once the handshake completed here, waits for the data.
            if client.obj.version() is None:
                sock.sendall(data)
            else:
                held.append(data)

        client.handshake(send)
        assert len(held) == 1 and held[0]
        parts = bunched(5)
        sock.sendall(held[0] + client.records(*parts))
        expected = b"".join(parts)
        assert client.read_exact(len(expected)) == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_records_held_behind_a_pause_arrive_on_resume(pki: Pki, version: ssl.TLSVersion) -> None:
    """The handler pauses reading after the first record; the rest are read (into OpenSSL, with read-ahead) and
    must be shown once reading resumes, although the socket then holds nothing."""
    paused = threading.Event()
    conns: list[netloop.Conn] = []

    class PauseAfterFirst(TlsEcho):
        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            conn.write(conn.next())
            if not conns:
                conns.append(conn)
                conn.pause_reading()
                paused.set()
            return None

    parts = bunched(20)
    server = pki.server_context()
    with serving(PauseAfterFirst(), "tcp://127.0.0.1:0", tls=server) as engine, connect(engine.addrs[0]) as sock:
        client = BioClient(sock, client_context(pki, version))
        client.handshake()
        sock.sendall(client.records(*parts))
        assert paused.wait(TIMEOUT)
        if _tls_records.READ_AHEAD and os.path.exists("/proc/net/tcp"):
            # The one read before the pause took every record off the socket: only OpenSSL holds them now.
            server_addr = sock.getpeername()
            wait_until(lambda: unread_by(server_addr, sock.getsockname()) == 0, what="the socket to be read dry")
        conns[0].wake(lambda conn, err: conn.resume_reading())
        expected = b"".join(parts)
        assert client.read_exact(len(expected)) == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_records_then_close_notify_in_one_write_are_all_shown(pki: Pki, version: ssl.TLSVersion) -> None:
    """Records and the client's close_notify in one TCP write: every record reaches ``on_traffic`` (and is
    echoed) before the end is taken, and the server answers with its own close_notify."""
    parts = bunched(12)
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine, connect(engine.addrs[0]) as sock:
        client = BioClient(sock, client_context(pki, version))
        client.handshake()
        wire = client.records(*parts)
        with contextlib.suppress(ssl.SSLWantReadError):
            client.obj.unwrap()  # our close_notify; the server's is what it waits for
        close_notify = client.outgoing.read()
        assert close_notify
        sock.sendall(wire + close_notify)
        assert client.read_to_close_notify() == b"".join(parts)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_large_echo_under_backpressure_is_byte_exact(pki: Pki, version: ssl.TLSVersion) -> None:
    """4 MiB in records of every size, sent while the client reads slowly: the server's writes back up and
    reading pauses at the write cap with records in OpenSSL, then resumes; every byte comes back in order.

    The client encrypts everything before a thread sends it, and one thread decrypts what comes back: one TLS
    object is never used by two threads at once (OpenSSL does not allow it; an ``SSLSocket`` shared by a sending
    and a receiving thread sent corrupt records now and then, which the server rightly closed on)."""
    payload = os.urandom(4 << 20)
    sizes = [1, 7, 100, 1000, 4096, 16383, 16384, 16385, 40000]
    parts, at = [], 0
    while at < len(payload):
        size = sizes[len(parts) % len(sizes)]
        parts.append(payload[at : at + size])
        at += size
    options: dict[str, Any] = {"write_buffer_cap": 64 * 1024}
    with (
        serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context(), **options) as engine,
        connect(engine.addrs[0]) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        client = BioClient(sock, client_context(pki, version))
        client.handshake()
        wire = client.records(*parts)
        sender = threading.Thread(target=sock.sendall, args=(wire,), daemon=True)
        sender.start()
        got = client.read_exact(len(payload))
        sender.join(TIMEOUT)
    assert got == payload


@pytest.mark.skipif(not _tls_records.READ_AHEAD, reason="read-ahead is the compiled core's")
def test_read_ahead_refuses_what_it_cannot_verify(pki: Pki) -> None:
    """The compiled helper changes an ``_ssl`` object only when the socket it wraps and that socket's descriptor
    check out through its layout; anything else is refused, and ``has_pending`` takes only the checked type."""
    from netloop import _tls_speedups  # type: ignore[attr-defined]

    ctx = pki.client_context()
    a, b = socket.socketpair()
    other, spare = socket.socketpair()
    with a, b, other, spare:
        wrapped = ctx.wrap_socket(a, server_hostname="localhost", do_handshake_on_connect=False)
        obj = wrapped._sslobj  # type: ignore[attr-defined]
        assert not _tls_speedups.read_ahead(object(), wrapped, wrapped.fileno())
        assert not _tls_speedups.read_ahead(obj, other, wrapped.fileno())  # not the socket it wraps
        assert not _tls_speedups.read_ahead(obj, wrapped, other.fileno())  # not its descriptor
        assert _tls_speedups.read_ahead(obj, wrapped, wrapped.fileno())
        assert _tls_speedups.has_pending(obj) is False
        with pytest.raises(TypeError):
            _tls_speedups.has_pending(wrapped)
        wrapped.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_stats_count_the_plaintext_read_and_written(pki: Pki, version: ssl.TLSVersion) -> None:
    """``bytes_in``/``bytes_out`` count what the handler read and wrote: for TLS, the plaintext (docs/deploy.md)."""
    parts = bunched(20)
    expected = b"".join(parts)
    with serving(TlsEcho(), "tcp://127.0.0.1:0", tls=pki.server_context()) as engine, connect(engine.addrs[0]) as sock:
        client = BioClient(sock, client_context(pki, version))
        client.handshake()
        sock.sendall(client.records(*parts))
        assert client.read_exact(len(expected)) == expected
        wait_until(lambda: engine.stats()["bytes_out"] == len(expected), what="the plaintext counted as written")
        assert engine.stats()["bytes_in"] == len(expected)


class WhichPath(TlsEcho):
    """Echoes, and records whether the loop's inlined read path holds the connection as its reader."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[bool] = []

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        self.inline.append(conn._loop.readers.get(conn._fd) is conn)
        return super().on_traffic(conn)


@pytest.mark.parametrize("edge", [False, True], ids=["level", "edge"])
def test_tls_reads_take_the_inlined_read_path_where_the_loop_has_one(pki: Pki, edge: bool) -> None:
    """After the handshake a TLS connection is the loop's inlined reader, as plaintext is (the compiled core's C
    loop then calls OpenSSL's read itself); edge-triggered loops have no inlined path, and TLS reads through its own."""
    handler = WhichPath()
    options = {"tls": pki.server_context(), "edge_triggered": edge}
    with serving(handler, "tcp://127.0.0.1:0", **options) as engine, connect(engine.addrs[0]) as sock:
        client = BioClient(sock, client_context(pki, ssl.TLSVersion.TLSv1_3))
        client.handshake()
        for part in bunched(3):
            sock.sendall(client.records(part))
            assert client.read_exact(len(part)) == part
    assert handler.inline and set(handler.inline) == {not edge}
