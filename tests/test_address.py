"""Address parsing, and bad addresses/options failing before anything is bound."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

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


# --- errors that name the address -----------------------------------------------------------------------

# sizeof(sockaddr_un.sun_path); a path takes all but the terminating NUL.
SUN_PATH = 108 if sys.platform.startswith("linux") else 104


def _path_of_length(directory: Path, size: int) -> str:
    head = f"{directory}/"
    assert len(head) < size, "the temporary directory's path is too long for this test"
    return head + "s" * (size - len(head))


def test_a_unix_path_over_the_length_limit_is_an_address_error_naming_it(tmp_path: Path) -> None:
    text = "unix://" + _path_of_length(tmp_path, SUN_PATH)
    with pytest.raises(netloop.AddressError) as info:
        parse_address(text)
    assert repr(text) in str(info.value)
    assert str(SUN_PATH) in str(info.value)


def test_a_unix_path_whose_encoding_is_over_the_limit_is_refused(tmp_path: Path) -> None:
    # 60 characters, 120 bytes: the limit counts the bytes the kernel gets.
    text = "unix:///" + "é" * 60
    with pytest.raises(netloop.AddressError) as info:
        parse_address(text)
    assert repr(text) in str(info.value)


def test_the_longest_unix_path_binds(tmp_path: Path) -> None:
    path = _path_of_length(tmp_path, SUN_PATH - 1)
    engine = netloop.start(netloop.EventHandler(), f"unix://{path}")
    try:
        assert engine.addrs == [f"unix://{path}"]
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
    finally:
        engine.stop(5)


def test_start_refuses_an_over_long_unix_path_before_binding_anything(tmp_path: Path) -> None:
    first = f"{tmp_path}/first.sock"
    too_long = "unix://" + _path_of_length(tmp_path, SUN_PATH + 50)
    with pytest.raises(netloop.AddressError, match="too long"):
        netloop.start(netloop.EventHandler(), f"unix://{first}", too_long)
    assert not os.path.exists(first)


@pytest.mark.parametrize("reuse_port", [False, True])
def test_address_in_use_names_the_address(reuse_port: bool) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        text = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(OSError) as info:
            netloop.start(netloop.EventHandler(), text, num_event_loop=2, reuse_port=reuse_port)
    assert type(info.value) is OSError
    assert info.value.errno == errno.EADDRINUSE
    assert f"{text}: " in str(info.value)
    assert os.strerror(errno.EADDRINUSE) in str(info.value)


def test_a_second_engine_on_the_same_port_names_the_address() -> None:
    engine = netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0")
    try:
        text = engine.addrs[0]
        with pytest.raises(OSError) as info:
            netloop.start(netloop.EventHandler(), text)
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value).startswith(f"[Errno {errno.EADDRINUSE}] {text}: ")
    finally:
        engine.stop(5)


def test_a_live_unix_socket_is_refused_naming_the_address(tmp_path: Path) -> None:
    text = f"unix://{tmp_path}/live.sock"
    engine = netloop.start(netloop.EventHandler(), text)
    try:
        with pytest.raises(OSError) as info:
            netloop.start(netloop.EventHandler(), text)
        assert info.value.errno == errno.EADDRINUSE
        assert text in str(info.value)
    finally:
        engine.stop(5)


def test_bind_errors_keep_their_type_and_name_the_address(tmp_path: Path) -> None:
    # A directory nobody may write to: bind fails with EACCES, a PermissionError, unless running as root.
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    text = f"unix://{locked}/s.sock"
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with permission to write anywhere (root)")
        with pytest.raises(PermissionError) as info:
            netloop.start(netloop.EventHandler(), text)
        assert info.value.errno == errno.EACCES
        assert text in str(info.value)
    finally:
        locked.chmod(0o700)
