"""Address parsing, and bad addresses/options failing before anything is bound."""

from __future__ import annotations

import socket

import pytest

import netloop
from netloop._address import parse_address


@pytest.mark.parametrize(
    ("text", "network", "family"),
    [
        ("tcp://127.0.0.1:9000", "tcp", socket.AF_INET),
        ("tcp4://127.0.0.1:0", "tcp", socket.AF_INET),
        ("tcp6://[::1]:0", "tcp", socket.AF_INET6),
        ("tcp://[::1]:80", "tcp", socket.AF_INET6),
        ("tcp://:9000", "tcp", socket.AF_INET),
        ("udp://127.0.0.1:53", "udp", socket.AF_INET),
        ("udp6://[::1]:0", "udp", socket.AF_INET6),
        ("unix:///tmp/x.sock", "unix", socket.AF_UNIX),
        ("TCP://localhost:1", "tcp", socket.AF_INET),
    ],
)
def test_parse(text: str, network: str, family: int) -> None:
    address = parse_address(text)
    assert (address.network, address.family) == (network, family)


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:9000",
        "sctp://127.0.0.1:9000",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:http",
        "tcp://127.0.0.1:65536",
        "tcp://::1:9000",
        "tcp6://[::1:9000",
        "unix://",
        "tcp://no-such-host.invalid:80",
    ],
)
def test_bad_address_is_named(text: str) -> None:
    with pytest.raises(netloop.AddressError) as info:
        parse_address(text)
    assert repr(text) in str(info.value)


def test_start_rejects_bad_address_before_binding_anything() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(netloop.AddressError, match="sctp"):
        netloop.start(netloop.EventHandler(), f"tcp://127.0.0.1:{port}", "sctp://x:1")
    # The valid address was not bound: it can be bound now.
    again = socket.socket()
    again.bind(("127.0.0.1", port))
    again.close()


def test_unknown_and_bad_options() -> None:
    with pytest.raises(TypeError, match="multicores"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", multicores=True)
    with pytest.raises(ValueError, match="num_event_loop"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", num_event_loop=-1)
    with pytest.raises(TypeError, match="read_buffer_cap"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", read_buffer_cap="big")
    with pytest.raises(ValueError, match="unknown poller"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", poller="select")
    with pytest.raises(ValueError, match="edge_triggered"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", poller="poll", edge_triggered=True)


def test_options_dataclass_and_overrides() -> None:
    opts = netloop.Options(num_event_loop=2, ticker=True)
    engine = netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", options=opts, ticker=False)
    try:
        assert len(engine.loops) == 2
    finally:
        engine.stop(5)


def test_bound_addresses_report_real_ports(tmp_path: object) -> None:
    path = f"{tmp_path}/s.sock"
    engine = netloop.start(
        netloop.EventHandler(), "tcp://127.0.0.1:0", "tcp6://[::1]:0", "udp://127.0.0.1:0", f"unix://{path}"
    )
    try:
        tcp, tcp6, udp, unix = engine.addrs
        assert tcp.startswith("tcp://127.0.0.1:") and not tcp.endswith(":0")
        assert tcp6.startswith("tcp6://[::1]:") and not tcp6.endswith(":0")
        assert udp.startswith("udp://127.0.0.1:") and not udp.endswith(":0")
        assert unix == f"unix://{path}"
    finally:
        engine.stop(5)
