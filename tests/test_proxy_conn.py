"""PROXY protocol on connections: the header is read before the handler, strictly, with a deadline; UDP v2 too."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import TIMEOUT, connect, datagram_socket, recv_exact, recv_until_closed, serving, wait_until
from tls_certs import Authority

import netloop
from netloop._proxy_protocol import (
    TLV_AUTHORITY,
    HeaderComplete,
    ProxyProtocolError,
    encode_v1,
    encode_v2,
    parse_header,
)

pytestmark = pytest.mark.timeout(60)

CLIENT = ("203.0.113.7", 51000)
SERVER = ("198.51.100.1", 443)


class Teller(netloop.EventHandler):
    """Answers each connection's first bytes with who it thinks the peer is, then echoes; records what it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[Any, netloop.ProxyInfo | None]] = []
        self.data: list[bytes] = []

    def on_open(self, conn: netloop.Conn) -> None:
        with self.lock:
            self.seen.append((conn.remote_addr, conn.proxy_info))

    def on_traffic(self, conn: netloop.Conn) -> None:
        data = conn.next()
        with self.lock:
            self.data.append(data)
        host, port = conn.remote_addr[:2] if isinstance(conn.remote_addr, tuple) else (conn.remote_addr, 0)
        conn.write(b"%s %d %s" % (host.encode(), port, data))


def _refused(sock: socket.socket) -> None:
    try:
        assert recv_until_closed(sock) == b""
    except ConnectionResetError:
        pass


@pytest.mark.parametrize(
    ("mode", "header"),
    [
        ("v1", encode_v1(CLIENT, SERVER)),
        ("v2", encode_v2(CLIENT, SERVER)),
        ("auto", encode_v1(CLIENT, SERVER)),
        ("auto", encode_v2(CLIENT, SERVER)),
    ],
)
def test_the_header_names_the_client(mode: str, header: bytes) -> None:
    handler = Teller()
    with serving(handler, "tcp://127.0.0.1:0", proxy_protocol=mode) as engine, connect(engine.addrs[0]) as sock:
        sock.sendall(header + b"hello")  # header and first request in one segment: nothing past it is lost
        assert recv_exact(sock, len(b"203.0.113.7 51000 hello")) == b"203.0.113.7 51000 hello"
    (remote, info), *_ = handler.seen
    assert remote == CLIENT
    assert info is not None and info.source == CLIENT and info.destination == SERVER
    assert info.version == (1 if header.startswith(b"PROXY") else 2)


def test_a_header_in_one_byte_segments_and_tlvs() -> None:
    handler = Teller()
    header = encode_v2(("2001:db8::1", 4000), ("2001:db8::2", 443), tlvs={TLV_AUTHORITY: b"example.test"})
    with serving(handler, "tcp://127.0.0.1:0", proxy_protocol="v2") as engine, connect(engine.addrs[0]) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(header)):
            sock.send(header[i : i + 1])
        sock.sendall(b"x")
        assert recv_exact(sock, len(b"2001:db8::1 4000 x")) == b"2001:db8::1 4000 x"
    info = handler.seen[0][1]
    assert info is not None and info.authority == "example.test"


def test_local_and_unknown_keep_the_real_peer() -> None:
    handler = Teller()
    with serving(handler, "tcp://127.0.0.1:0", proxy_protocol="auto") as engine:
        for header in (encode_v2(command="LOCAL"), encode_v1()):
            with connect(engine.addrs[0]) as sock:
                sock.sendall(header + b"hc")
                got = recv_exact(sock, len(b"127.0.0.1 ")) + sock.recv(100)
                assert got.startswith(b"127.0.0.1 ") and got.endswith(b" hc")
    assert [info.command for _, info in handler.seen if info] == ["LOCAL", "PROXY"]


@pytest.mark.parametrize(
    "bad",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no header at all: the spec forbids guessing
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",  # a field missing
        b"PROXY TCP4 1.2.3.400 5.6.7.8 80 443\r\n",  # not an address
        b"PROXY " + b"9" * 200 + b"\r\n",  # past v1's 107 bytes
        encode_v2(CLIENT, SERVER)[:12] + b"\x31" + encode_v2(CLIENT, SERVER)[13:],  # version 3
    ],
)
def test_a_malformed_header_never_reaches_the_handler(bad: bytes) -> None:
    handler = Teller()
    with serving(handler, "tcp://127.0.0.1:0", proxy_protocol="auto") as engine:
        with connect(engine.addrs[0]) as sock:
            sock.sendall(bad)
            _refused(sock)
        wait_until(lambda: engine.stats()["proxy_header_failures"] == 1, what="the failure to be counted")
        with connect(engine.addrs[0]) as good:  # and the server goes on serving
            good.sendall(encode_v1(CLIENT, SERVER) + b"ok")
            assert recv_exact(good, len(b"203.0.113.7 51000 ok")) == b"203.0.113.7 51000 ok"
        stats = engine.stats()
    assert len(handler.seen) == 1 and handler.data == [b"ok"]
    assert stats["closed_error"] == 1


def test_a_slow_header_times_out() -> None:
    handler = Teller()
    with serving(handler, "tcp://127.0.0.1:0", proxy_protocol="v1", proxy_header_timeout=0.3) as engine:
        with connect(engine.addrs[0]) as sock:
            sock.sendall(b"PROXY TCP4 ")  # and then nothing
            _refused(sock)
        stats = engine.stats()
    assert handler.seen == []
    assert stats["proxy_header_failures"] == 1 and stats["closed_timeout"] == 1


def test_a_source_outside_proxy_protocol_from_is_refused() -> None:
    handler = Teller()
    with serving(handler, "tcp://127.0.0.1:0", proxy_protocol="v1", proxy_protocol_from="10.0.0.0/8") as engine:
        with connect(engine.addrs[0]) as sock:
            sock.sendall(encode_v1(CLIENT, SERVER) + b"spoof")
            _refused(sock)
        assert engine.stats()["proxy_header_failures"] == 1
    assert handler.seen == []


def test_tls_after_the_header(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    issued = ca.issue("localhost", ["localhost", "127.0.0.1"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(issued.cert, issued.key)
    client_ctx = ssl.create_default_context(cafile=str(ca.cert))
    handler = Teller()
    with serving(handler, "tcp://127.0.0.1:0", proxy_protocol="v2", tls=server_ctx) as engine:
        raw = connect(engine.addrs[0])
        raw.sendall(encode_v2(CLIENT, SERVER))  # the proxy's header, then the client's TLS handshake
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"secret")
            assert recv_exact(tls, len(b"203.0.113.7 51000 secret")) == b"203.0.113.7 51000 secret"
    assert handler.seen[0][0] == CLIENT


class DatagramTeller(netloop.EventHandler):
    def on_traffic(self, conn: netloop.Conn) -> None:
        host, port = conn.remote_addr[:2]
        conn.write(b"%s %d %s" % (host.encode(), port, conn.next()))


def test_udp_datagrams_carry_a_v2_header_each() -> None:
    with serving(DatagramTeller(), "udp://127.0.0.1:0", proxy_protocol="v2") as engine:
        sock, addr = datagram_socket(engine.addrs[0])
        with sock:
            sock.sendto(b"no header", addr)  # dropped and counted
            sock.sendto(encode_v2(CLIENT, SERVER, datagram=True) + b"ping", addr)
            reply, _ = sock.recvfrom(1000)  # the reply goes back to the proxy, naming the client
            assert reply == b"203.0.113.7 51000 ping"
            assert engine.stats()["proxy_header_failures"] == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from([b"PROXY ", encode_v2(CLIENT, SERVER)[:13], b""]), junk=st.binary(max_size=300))
def test_fuzzed_headers_never_reach_the_handler(prefix: bytes, junk: bytes, fuzz_server: Any) -> None:
    engine, handler = fuzz_server
    data = prefix + junk
    with connect(engine.addrs[0]) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            answer = recv_until_closed(sock)
        except OSError:  # refused at once: reset, or no longer connected
            answer = b""
    with handler.lock:
        reached = list(handler.data)
        handler.data.clear()
    # Only what follows a valid header reaches the handler; anything else never does.
    try:
        verdict = parse_header(data, "auto")
    except ProxyProtocolError:
        verdict = None
    if isinstance(verdict, HeaderComplete):
        assert b"".join(reached) == verdict.trailing
        if verdict.trailing:
            assert answer.endswith(verdict.trailing)
    else:
        assert reached == [] and answer == b""


@pytest.fixture(scope="module")
def fuzz_server() -> Any:
    handler = Teller()
    engine = netloop.start(handler, "tcp://127.0.0.1:0", proxy_protocol="auto", proxy_header_timeout=2.0)
    try:
        yield engine, handler
    finally:
        engine.stop(timeout=TIMEOUT)
        engine.wait(TIMEOUT)
