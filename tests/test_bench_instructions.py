"""bench.instructions' clients and contenders without valgrind: the TLS drives against a real TLS echo server, and
which rows the optional gnet contender fills."""

from __future__ import annotations

import shutil
import ssl
import threading
from pathlib import Path

import pytest

import netloop
from bench import instructions
from bench._tls import make_certificate

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


class CountingEcho(netloop.EventHandler):
    """Echoes, and counts the connections whose handshake completed (``on_open``)."""

    def __init__(self) -> None:
        self.opened = 0
        self.echoed = 0
        self.lock = threading.Lock()

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        with self.lock:
            self.opened += 1
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.next()
        with self.lock:
            self.echoed += len(data)
        conn.write(data)
        return None


@needs_openssl
@pytest.mark.parametrize("proto", ["echo", "handshake"])
def test_tls_drive_runs_its_requests_over_tls_1_3(tmp_path: Path, proto: str) -> None:
    files = make_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.cert, files.key)
    handler = CountingEcho()
    engine = netloop.start(handler, "tcp://127.0.0.1:0", num_event_loop=1, tls=server)
    try:
        port = int(engine.addrs[0].rsplit(":", 1)[1])
        client = instructions.client_context(files)
        assert client.minimum_version == ssl.TLSVersion.TLSv1_3
        instructions.drive(port, proto, 1, 32 if proto == "echo" else 5, client)
    finally:
        engine.stop(timeout=5)
    if proto == "echo":
        # sixteen connections, 32 round trips of 1 KiB in turn
        assert (handler.opened, handler.echoed) == (instructions.CONNECTIONS, 32 * len(instructions.ECHO_MESSAGE))
    else:
        # one full handshake and one 64-byte echo per request
        assert (handler.opened, handler.echoed) == (5, 5 * len(instructions.HANDSHAKE_MESSAGE))


def test_gnet_rows_are_skipped_without_a_binary_and_outside_its_protocols(tmp_path: Path) -> None:
    binary = tmp_path / "gnet-bench"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert "--gnet-binary" in (instructions.why_skipped("gnet", "nothing-p1", None) or "")
    assert "serves" in (instructions.why_skipped("gnet", "http-p1", str(binary)) or "")
    assert "TLS" in (instructions.why_skipped("gnet", "tls-echo-1k", str(binary)) or "")
    assert "not an executable" in (instructions.why_skipped("gnet", "peek-p1", str(tmp_path / "none")) or "")
    for workload in ("nothing-p1", "peek-p1", "echo-1k"):
        assert instructions.why_skipped("gnet", workload, str(binary)) is None


def test_tls_workloads_are_not_served_by_the_asyncio_styles_nor_the_responders() -> None:
    assert "no TLS" in (instructions.why_skipped("aio-protocol-netloop", "tls-echo-1k", None) or "")
    assert instructions.why_skipped("netloop", "tls-handshake", None) is None
