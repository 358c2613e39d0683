"""bench/servers/aio_styles.py, the asyncio-on-netloop contenders of ``python -m bench.instructions``: each serves
what it claims to and stops cleanly on SIGTERM (the counts in docs/asyncio.md come from these servers)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess

import pytest

from bench._servers import free_port
from bench.instructions import AIO_STYLES, drive, style_argv, style_unavailable

CASES = [(server, proto) for server, (_, protos) in AIO_STYLES.items() for proto in protos]


@pytest.mark.slow  # a server process each
@pytest.mark.parametrize(("server", "proto"), CASES)
def test_style_serves_its_protocol_and_stops_on_sigterm(server: str, proto: str) -> None:
    why = style_unavailable(server, proto)
    if why:
        pytest.skip(why)
    port = free_port()
    env = dict(os.environ, NETLOOP_PURE=os.environ.get("NETLOOP_PURE", "0"))
    process = subprocess.Popen(style_argv(server, proto, port), env=env, stderr=subprocess.PIPE)
    try:
        drive(port, proto, 1, 48)  # checks every answer: the echo's length, the HTTP bodies
        if proto == "http":
            drive(port, proto, 16, 64)  # pipelined
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode(errors="replace")
    assert b"Traceback" not in err, err.decode(errors="replace")


def test_a_style_refuses_what_it_does_not_serve() -> None:
    assert style_unavailable("aio-streams-netloop", "http") == "aio-streams-netloop serves echo only"
    assert style_unavailable("aio-async-handler", "echo") == "aio-async-handler serves http only"
    if importlib.util.find_spec("uvloop") is not None:
        assert style_unavailable("aio-protocol-uvloop", "echo") is None
