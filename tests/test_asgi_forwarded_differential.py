"""X-Forwarded-For / X-Forwarded-Proto: netloop.asgi against uvicorn, with the same flags and the same requests.

Each configuration starts both servers; each request goes from a trusted (127.0.0.1) or an untrusted (127.0.0.2)
peer to the app's ``/scope``, and the ``client`` and ``scheme`` it echoes must be the same, except where
``expected_ours`` says why netloop's is the stricter one (and there the test checks both answers).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from loopback import TIMEOUT
from test_asgi_differential import Server, _env

pytest.importorskip("uvicorn")
pytest.importorskip("httptools")

pytestmark = pytest.mark.timeout(120)

CONFIGS: dict[str, tuple[list[str], str | None]] = {
    # name: (flags, FORWARDED_ALLOW_IPS)
    "default": ([], None),
    "env-networks": ([], "127.0.0.1, 10.0.0.0/8, 2001:db8::/32"),
    "star": (["--forwarded-allow-ips", "*"], "10.0.0.1"),
    "flag-over-env": (["--forwarded-allow-ips", "127.0.0.1,10.0.0.5"], "*"),
    "off": (["--no-proxy-headers", "--forwarded-allow-ips", "*"], None),
}
SOURCES = ("127.0.0.1", "127.0.0.2")

CASES: dict[str, bytes] = {
    "none": b"",
    "xff": b"X-Forwarded-For: 203.0.113.7\r\n",
    "xff-port": b"X-Forwarded-For: 203.0.113.7:4321\r\n",
    "xff-chain": b"X-Forwarded-For: 203.0.113.7, 198.51.100.2, 10.0.0.5, 127.0.0.1\r\n",
    "xff-all-trusted": b"X-Forwarded-For: 10.0.0.5, 10.0.0.6\r\n",
    "xff-two-fields": b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 10.0.0.5\r\n",
    "xff-ipv6": b"X-Forwarded-For: 2001:db9::1\r\n",
    "xff-ipv6-port": b"X-Forwarded-For: [2001:db9::1]:8080\r\n",
    "xff-ipv6-chain": b"X-Forwarded-For: 2001:db9::2, [2001:db8::5]:80\r\n",
    "xff-empty": b"X-Forwarded-For: \r\n",
    "xff-commas": b"X-Forwarded-For: , ,\r\n",
    "xff-garbage": b"X-Forwarded-For: not-an-ip\r\n",
    "xff-bad-port": b"X-Forwarded-For: 1.2.3.4:notaport\r\n",
    "xff-port-too-big": b"X-Forwarded-For: 1.2.3.4:99999\r\n",
    "xff-open-bracket": b"X-Forwarded-For: [::1\r\n",
    "xff-latin1": b"X-Forwarded-For: \xc3\xa9\r\n",
    "xff-long": b"X-Forwarded-For: " + b", ".join(b"10.0.%d.%d" % divmod(i, 250) for i in range(2000)) + b"\r\n",
    "proto-https": b"X-Forwarded-Proto: https\r\n",
    "proto-http": b"X-Forwarded-Proto: http\r\n",
    "proto-wss": b"X-Forwarded-Proto: wss\r\n",
    "proto-ws": b"X-Forwarded-Proto: ws\r\n",
    "proto-upper": b"X-Forwarded-Proto: HTTPS\r\n",
    "proto-other": b"X-Forwarded-Proto: gopher\r\n",
    "proto-two-fields": b"X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n",
    "both": b"X-Forwarded-Proto: https\r\nX-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n",
}


def expected_ours(case: str, theirs: dict[str, Any]) -> dict[str, Any]:
    """netloop's answer where it differs from uvicorn's on purpose (else uvicorn's)."""
    ours = dict(theirs)
    # An http scope's scheme is http or https (ASGI): uvicorn passes ws/wss through into it; netloop maps them.
    ours["scheme"] = {"ws": "http", "wss": "https"}.get(theirs["scheme"], theirs["scheme"])
    # A port past 65535 is no port: netloop keeps the hop whole as the host, as for any malformed port.
    if case == "xff-port-too-big" and theirs["client"] == ["1.2.3.4", 99999]:
        ours["client"] = ["1.2.3.4:99999", 0]
    return ours


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, dict[str, Server]]]:
    started: dict[str, dict[str, Server]] = {}
    try:
        for name, (flags, allow) in CONFIGS.items():
            env = _env()
            env.pop("FORWARDED_ALLOW_IPS", None)
            if allow is not None:
                env["FORWARDED_ALLOW_IPS"] = allow
            started[name] = {
                "netloop": Server(["netloop.asgi", "--timeout-keep-alive", "1", *flags], env),
                "uvicorn": Server(["uvicorn", "--http", "httptools", "--timeout-keep-alive", "1", *flags], env),
            }
        for pair in started.values():
            for server in pair.values():
                server.wait_serving()
        yield started
    finally:
        for pair in started.values():
            for server in pair.values():
                server.stop()


def echoed(port: int, source: str, headers: bytes) -> dict[str, Any]:
    """``client`` and ``scheme`` of the scope ``/scope`` echoes; the client socket's own address reads ``peer``."""
    with socket.socket() as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        name = list(sock.getsockname()[:2])
        sock.sendall(b"GET /scope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200
        scope = json.loads(response.read())
    return {"client": "peer" if scope["client"] == name else scope["client"], "scheme": scope["scheme"]}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_same_client_and_scheme_as_uvicorn(servers: dict[str, dict[str, Server]], config: str, source: str) -> None:
    pair = servers[config]
    for case, headers in CASES.items():
        theirs = echoed(pair["uvicorn"].port, source, headers)
        ours = echoed(pair["netloop"].port, source, headers)
        assert ours == expected_ours(case, theirs), case


def test_the_differences_are_exercised(servers: dict[str, dict[str, Server]]) -> None:
    port = servers["default"]["uvicorn"].port
    assert echoed(port, "127.0.0.1", CASES["proto-wss"])["scheme"] == "wss"
    assert echoed(port, "127.0.0.1", CASES["xff-port-too-big"])["client"] == ["1.2.3.4", 99999]
    port = servers["default"]["netloop"].port
    assert echoed(port, "127.0.0.1", CASES["proto-wss"])["scheme"] == "https"
    assert echoed(port, "127.0.0.1", CASES["xff-port-too-big"])["client"] == ["1.2.3.4:99999", 0]


def test_a_trusted_peer_is_believed_and_an_untrusted_one_not(servers: dict[str, dict[str, Server]]) -> None:
    # the corpus compares like with like; this says the comparison covers both outcomes
    for server in servers["default"].values():
        assert echoed(server.port, "127.0.0.1", CASES["both"]) == {"client": ["203.0.113.7", 0], "scheme": "https"}
        assert echoed(server.port, "127.0.0.2", CASES["both"]) == {"client": "peer", "scheme": "http"}
