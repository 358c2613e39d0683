"""max_connections and max_connections_per_source: past them a new connection is accepted and closed at once,
counted; existing ones are untouched."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from loopback import Recorder, connect, recv_exact, recv_until_closed, serving, split, wait_until
from tls_certs import Authority

import netloop
from netloop._proxy_protocol import encode_v1

TIMEOUT = 10.0


@pytest.mark.parametrize("loops", [1, 3])
def test_max_connections_refuses_past_the_limit_and_serves_the_rest(loops: int) -> None:
    handler = Recorder()
    with serving(handler, "tcp://127.0.0.1:0", max_connections=3, num_event_loop=loops) as engine:
        kept = [connect(engine.addrs[0]) for _ in range(3)]
        for sock in kept:
            sock.sendall(b"hi")
            assert recv_exact(sock, 2) == b"hi"
        with connect(engine.addrs[0]) as refused:
            try:
                assert recv_until_closed(refused) == b""  # closed at once: the handler never saw it
            except ConnectionResetError:
                pass
        assert engine.stats()["refused_max_connections"] == 1
        assert engine.count_connections() == 3
        for sock in kept:  # existing connections are unaffected
            sock.sendall(b"ok")
            assert recv_exact(sock, 2) == b"ok"
        kept.pop().close()
        wait_until(lambda: engine.count_connections() == 2, what="a connection to close")
        with connect(engine.addrs[0]) as again:  # room again
            again.sendall(b"back")
            assert recv_exact(again, 4) == b"back"
        for sock in kept:
            sock.close()
    assert handler.names().count("open") == 4


def test_max_connections_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", max_connections=-1)


# -- max_connections_per_source -----------------------------------------------------------------------------------


def connect_from(url: str, source: str) -> socket.socket:
    """A client connection from ``source`` (any 127.x.y.z is this host's on loopback)."""
    sock = socket.socket()
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect(split(url)[1])
    return sock


def refused(sock: socket.socket) -> bool:
    """True when the server closed ``sock`` without a byte (the handler never saw it)."""
    try:
        return recv_until_closed(sock) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("loops", [1, 3])
def test_max_connections_per_source_refuses_one_address_and_serves_another(loops: int) -> None:
    handler = Recorder()
    with serving(handler, "tcp://127.0.0.1:0", max_connections_per_source=2, num_event_loop=loops) as engine:
        url = engine.addrs[0]
        kept = [connect_from(url, "127.0.0.1") for _ in range(2)]
        for sock in kept:
            sock.sendall(b"hi")
            assert recv_exact(sock, 2) == b"hi"
        with connect_from(url, "127.0.0.1") as third:
            assert refused(third)
        with connect_from(url, "127.0.0.2") as other:  # another address has its own room
            other.sendall(b"other")
            assert recv_exact(other, 5) == b"other"
        stats = engine.stats()
        assert stats["refused_per_source"] == 1 and stats["closed_limit"] == 1
        for sock in kept:  # existing connections are unaffected
            sock.sendall(b"ok")
            assert recv_exact(sock, 2) == b"ok"
        kept.pop().close()
        wait_until(lambda: engine.count_connections() == 1, what="a connection to close")
        with connect_from(url, "127.0.0.1") as again:  # room again for that address
            again.sendall(b"back")
            assert recv_exact(again, 4) == b"back"
        for sock in kept:
            sock.close()
    assert handler.names().count("open") == 4


@pytest.mark.parametrize("balancing", ["reuse-port", "parent"])
def test_max_connections_per_source_holds_in_a_worker(balancing: str) -> None:
    options = {"workers": 1, "worker_balancing": balancing, "max_connections_per_source": 1}
    with serving(Recorder(), "tcp://127.0.0.1:0", **options) as engine:
        url = engine.addrs[0]
        with connect_from(url, "127.0.0.1") as kept:
            kept.sendall(b"kept")
            assert recv_exact(kept, 4) == b"kept"
            with connect_from(url, "127.0.0.1") as second:
                assert refused(second)
            with connect_from(url, "127.0.0.3") as other:
                other.sendall(b"other")
                assert recv_exact(other, 5) == b"other"
        wait_until(lambda: engine.stats()["refused_per_source"] == 1, what="the worker's count in the parent's stats")


def test_max_connections_per_source_counts_the_proxy_headers_address() -> None:
    # Behind a balancer every connection comes from the balancer: the client is the one the header names.
    options = {"max_connections_per_source": 1, "proxy_protocol": "v1"}
    with serving(Recorder(), "tcp://127.0.0.1:0", **options) as engine:
        url = engine.addrs[0]
        server = split(url)[1]

        def dial(client: str) -> socket.socket:
            sock = connect(url)
            sock.sendall(encode_v1((client, 4000), server) + b"hello")
            return sock

        with dial("192.0.2.1") as first, dial("192.0.2.2") as second:
            assert recv_exact(first, 5) == b"hello"
            assert recv_exact(second, 5) == b"hello"
            with dial("192.0.2.1") as again:
                assert refused(again)
        assert engine.stats()["refused_per_source"] == 1


def test_a_failed_tls_handshake_gives_its_address_room_back(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    issued = ca.issue("localhost", ["127.0.0.1"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(issued.cert, issued.key)
    client_ctx = ssl.create_default_context(cafile=str(ca.cert))
    with serving(Recorder(), "tcp://127.0.0.1:0", tls=server_ctx, max_connections_per_source=1) as engine:
        with connect(engine.addrs[0]) as garbage:
            garbage.sendall(b"not a TLS hello\r\n" * 8)
            assert refused(garbage)
        wait_until(lambda: engine.stats()["tls_handshake_failures"] == 1, what="the failed handshake")
        with (
            socket.create_connection(split(engine.addrs[0])[1], timeout=TIMEOUT) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"secure")
            assert recv_exact(tls, 6) == b"secure"
        assert engine.stats()["refused_per_source"] == 0


def test_max_connections_per_source_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_connections_per_source"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", max_connections_per_source=-1)
