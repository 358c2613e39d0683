"""X-Forwarded-For / X-Forwarded-Proto (``proxy_headers``, ``forwarded_allow_ips``): the rules, then real requests."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("httptools")

import netloop
from netloop.asgi import ASGIHandler, Config
from netloop.asgi._forwarded import TrustedProxies
from netloop.proxy_protocol import encode_v1
from tests.asgi_apps import app as sample_app

TIMEOUT = 10.0


# -- the rules, without sockets ---------------------------------------------------------------------------------


def test_trusted_addresses_networks_and_literals() -> None:
    trusted = TrustedProxies("10.0.0.1, 192.168.0.0/16 ,2001:db8::/32, ::1, some-proxy, not/a-network")
    assert "10.0.0.1" in trusted and "10.0.0.2" not in trusted
    assert "192.168.4.5" in trusted and "192.169.0.1" not in trusted
    assert "2001:db8::7" in trusted and "2001:db9::7" not in trusted
    assert "0:0:0:0:0:0:0:1" in trusted  # an IPv6 address however it is written
    assert "some-proxy" in trusted and "not/a-network" in trusted and "other" not in trusted
    assert None not in trusted and "" not in trusted
    assert "9" * 1000 not in trusted  # too long to cache, judged all the same
    assert "::ffff:10.0.0.1" not in trusted  # an IPv4-mapped IPv6 address is not its IPv4 one


def test_a_network_with_host_bits_or_a_prefix_too_long_is_a_literal() -> None:
    trusted = TrustedProxies("10.0.0.1/8, 10.0.0.0/33, 0.0.0.0/0")
    assert trusted.literals == {"10.0.0.1/8", "10.0.0.0/33"}
    assert "203.0.113.1" in trusted and "::1" not in trusted  # /0: every IPv4 address, no IPv6 one


def test_star_trusts_every_peer_a_unix_socket_too() -> None:
    trusted = TrustedProxies(["10.0.0.1", "*"])
    assert trusted.trusts(("203.0.113.1", 5)) and trusted.trusts(None)
    assert not TrustedProxies("127.0.0.1").trusts(None)


def test_none_reads_the_environment_else_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    default = TrustedProxies(None)
    assert "127.0.0.1" in default and "::1" in default and "127.0.0.2" not in default
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.9.9.9")
    from_env = TrustedProxies(None)
    assert "10.9.9.9" in from_env and "127.0.0.1" not in from_env


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("203.0.113.7", ("203.0.113.7", 0)),
        ("203.0.113.7:4321", ("203.0.113.7", 4321)),
        # the first untrusted address from the right: 198.51.100.2 lies about who came before it
        ("203.0.113.7, 198.51.100.2, 10.0.0.5, 10.0.0.6", ("198.51.100.2", 0)),
        ("10.0.0.5, 10.0.0.6", ("10.0.0.5", 0)),  # all trusted: the leftmost
        ("2001:db9::1", ("2001:db9::1", 0)),
        ("[2001:db9::1]:8080", ("2001:db9::1", 8080)),
        ("2001:db9::2, [2001:db8::5]:80", ("2001:db9::2", 0)),
        ("[2001:db8::5]:80", ("2001:db8::5", 80)),
        ("1.2.3.4:notaport", ("1.2.3.4:notaport", 0)),
        ("1.2.3.4:99999", ("1.2.3.4:99999", 0)),
        ("[::1", ("[::1", 0)),
        ("[::1]x", ("[::1]x", 0)),
        ("[::1]:x", ("::1", 0)),
        ("not-an-ip", ("not-an-ip", 0)),
        ("", None),
        (" , ", None),
    ],
)
def test_forwarded_client(forwarded_for: str, client: tuple[str, int] | None) -> None:
    trusted = TrustedProxies("10.0.0.0/8, 2001:db8::/32")
    assert trusted.forwarded_client(forwarded_for) == client


def test_a_garbage_hop_is_never_trimmed_into_a_trusted_one() -> None:
    trusted = TrustedProxies("10.0.0.1")
    assert trusted.forwarded_client("203.0.113.9, 10.0.0.1:bad") == ("10.0.0.1:bad", 0)


def test_with_star_the_leftmost_address_is_the_client() -> None:
    assert TrustedProxies("*").forwarded_client("203.0.113.7, 10.0.0.5") == ("203.0.113.7", 0)


# -- over sockets -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(config: Config, bind: str = "tcp://127.0.0.1:0", **options: Any) -> Iterator[netloop.Engine]:
    engine = netloop.start(ASGIHandler(sample_app, config), bind, drain_timeout=0.3, **options)
    try:
        yield engine
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT), "engine did not stop"


def scope_of(
    engine: netloop.Engine, headers: bytes, source: str = "127.0.0.1", preamble: bytes = b""
) -> tuple[dict[str, Any], tuple[str, int]]:
    """The scope ``/scope`` echoes for a request with ``headers``, from ``source``; and the client socket's name."""
    host, port = engine.addrs[0].partition("://")[2].rsplit(":", 1)
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((source, 0))
        sock.connect((host.strip("[]"), int(port)))
        name = sock.getsockname()[:2]
        sock.sendall(preamble + b"GET /scope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body), name


def test_a_trusted_peer_sets_client_and_scheme() -> None:
    with serving(Config(access_log=False, forwarded_allow_ips="127.0.0.1")) as engine:
        scope, _ = scope_of(engine, b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
        assert scope["client"] == ["203.0.113.7", 0] and scope["scheme"] == "https"
        # two X-Forwarded-For fields are one list; of two X-Forwarded-Proto, the last
        scope, _ = scope_of(
            engine,
            b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.1, 127.0.0.1\r\n"
            b"X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n",
        )
        assert scope["client"] == ["198.51.100.1", 0] and scope["scheme"] == "http"
        scope, name = scope_of(engine, b"X-Forwarded-Proto: gopher\r\n")
        assert scope["client"] == list(name) and scope["scheme"] == "http"


def test_an_untrusted_peer_is_not_believed() -> None:
    with serving(Config(access_log=False, forwarded_allow_ips="127.0.0.1")) as engine:
        scope, name = scope_of(engine, b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n", "127.0.0.2")
    assert scope["client"] == ["127.0.0.2", name[1]] and scope["scheme"] == "http"


def test_no_proxy_headers_ignores_them() -> None:
    config = Config(access_log=False, proxy_headers=False, forwarded_allow_ips="*")
    with serving(config) as engine:
        scope, name = scope_of(engine, b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
    assert scope["client"] == list(name) and scope["scheme"] == "http"


def test_an_ipv6_peer_is_trusted_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    try:
        engine_cm = serving(Config(access_log=False), "tcp6://[::1]:0")
        engine = engine_cm.__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        scope, _ = scope_of(engine, b"X-Forwarded-For: [2001:db8::9]:443\r\nX-Forwarded-Proto: https\r\n", "::1")
    finally:
        engine_cm.__exit__(None, None, None)
    assert scope["client"] == ["2001:db8::9", 443] and scope["scheme"] == "https"


def test_the_proxy_protocol_address_is_the_peer_that_is_judged() -> None:
    for allow, expected in (("127.0.0.1", ["192.0.2.9", 4242]), ("192.0.2.9", ["203.0.113.7", 0])):
        with serving(Config(access_log=False, forwarded_allow_ips=allow), proxy_protocol="v1") as engine:
            port = int(engine.addrs[0].rsplit(":", 1)[1])
            header = encode_v1(("192.0.2.9", 4242), ("127.0.0.1", port))
            scope, _ = scope_of(engine, b"X-Forwarded-For: 203.0.113.7\r\n", preamble=header)
        assert scope["client"] == expected, allow


def test_hostile_forwarded_headers_are_served_in_bounded_time() -> None:
    # 4000 distinct trusted hops (every one parsed), a 60 KB garbage value, bytes no address has
    many = b", ".join(b"10.%d.%d.1" % divmod(i, 250) for i in range(4000))
    with serving(Config(access_log=False, forwarded_allow_ips="10.0.0.0/8, 127.0.0.1")) as engine:
        started = time.monotonic()
        scope, _ = scope_of(engine, b"X-Forwarded-For: " + many + b"\r\n")
        assert scope["client"] == ["10.0.0.1", 0]  # all trusted: the leftmost
        assert time.monotonic() - started < 2.0
        scope, _ = scope_of(engine, b"X-Forwarded-For: " + b"[:" * 30_000 + b"\r\n")
        assert scope["client"] == ["[:" * 30_000, 0]
        scope, _ = scope_of(engine, b"X-Forwarded-For: \xc3\xa9:\xc3\xa9\r\nX-Forwarded-Proto: \xc3\xa9https\r\n")
        assert scope["client"] == ["\xc3\xa9:\xc3\xa9", 0] and scope["scheme"] == "http"  # read as latin-1
        # the connection after them is served as ever
        scope, name = scope_of(engine, b"")
        assert scope["client"] == list(name)


def test_websocket_scheme_follows_x_forwarded_proto() -> None:
    ws_client = pytest.importorskip("websockets.sync.client")
    pytest.importorskip("wsproto")
    seen: list[dict[str, Any]] = []

    async def recorder(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            seen.append(scope)
            await receive()
            await send({"type": "websocket.accept"})
            await receive()

    config = Config(access_log=False, lifespan="off", forwarded_allow_ips="127.0.0.1")
    engine = netloop.start(ASGIHandler(recorder, config), "tcp://127.0.0.1:0", drain_timeout=0.3)
    try:
        base = "ws://" + engine.addrs[0].removeprefix("tcp://")
        for proto in ("https", "http"):
            headers = {"X-Forwarded-Proto": proto, "X-Forwarded-For": "203.0.113.7, 127.0.0.1"}
            with ws_client.connect(base + "/", additional_headers=headers, open_timeout=TIMEOUT):
                pass
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT), "engine did not stop"
    assert [(s["scheme"], s["client"]) for s in seen] == [("wss", ("203.0.113.7", 0)), ("ws", ("203.0.113.7", 0))]


def test_each_request_of_a_kept_alive_connection_is_judged_on_its_own_fields() -> None:
    with serving(Config(access_log=False, forwarded_allow_ips="127.0.0.1")) as engine:
        port = int(engine.addrs[0].rsplit(":", 1)[1])
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        try:
            seen = []
            for headers in ({"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}, {}):
                client.request("GET", "/scope", headers=headers)
                scope = json.loads(client.getresponse().read())
                seen.append((scope["client"], scope["scheme"]))
            assert client.sock is not None
            name = list(client.sock.getsockname()[:2])
        finally:
            client.close()
    assert seen == [(["203.0.113.7", 0], "https"), (name, "http")]
