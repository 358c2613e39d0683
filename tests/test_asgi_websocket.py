"""netloop.asgi over WebSocket (wsproto): the ``websockets`` client against an ASGI app on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("wsproto")
pytest.importorskip("httptools")
ws_client = pytest.importorskip("websockets.sync.client")
ws_exceptions = pytest.importorskip("websockets.exceptions")

import netloop  # noqa: E402
from netloop.asgi import ASGIHandler, Config  # noqa: E402
from tests.asgi_apps import app as sample_app  # noqa: E402

TIMEOUT = 10.0


@contextlib.contextmanager
def serving(app: Any = sample_app, config: Config | None = None) -> Iterator[str]:
    engine = netloop.start(ASGIHandler(app, config or Config(access_log=False)), "tcp://127.0.0.1:0", drain_timeout=0.3)
    try:
        yield engine.addrs[0].replace("tcp://", "ws://")
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT), "engine did not stop"


def test_text_and_binary_messages_echo() -> None:
    with serving() as base, ws_client.connect(base + "/", open_timeout=TIMEOUT) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=TIMEOUT) == "héllo"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01binary"
        big = os.urandom(300_000)  # fragmented on the way in, one message to the app
        ws.send(big)
        assert ws.recv(timeout=TIMEOUT) == big


def test_subprotocol_is_negotiated() -> None:
    with serving() as base, ws_client.connect(base + "/", subprotocols=["chat", "superchat"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"


def test_the_app_closes_with_its_code_and_reason() -> None:
    with serving() as base, ws_client.connect(base + "/") as ws:
        ws.send("close")
        with pytest.raises(ws_exceptions.ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 4000
        assert ws.close_reason == "asked to"


def test_a_close_before_accept_is_a_403() -> None:
    with serving() as base, pytest.raises(ws_exceptions.InvalidStatus) as raised:
        ws_client.connect(base + "/reject", open_timeout=TIMEOUT)
    assert raised.value.response.status_code == 403


def test_the_app_hears_the_clients_close_code_and_reason() -> None:
    heard: list[dict[str, Any]] = []
    done = threading.Event()

    async def listener(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        heard.append(await receive())
        done.set()

    with serving(listener, Config(access_log=False, lifespan="off")) as base:
        with ws_client.connect(base + "/") as ws:
            ws.close(code=4321, reason="bye")
        assert done.wait(TIMEOUT)
    assert heard == [{"type": "websocket.disconnect", "code": 4321, "reason": "bye"}]  # the reason too (ASGI 2.4)


def test_a_message_past_ws_max_size_closes_with_1009() -> None:
    config = Config(access_log=False, ws_max_size=1000)
    with serving(config=config) as base, ws_client.connect(base + "/", max_size=None) as ws:
        ws.send("a" * 1000)  # at the limit: served
        assert ws.recv(timeout=TIMEOUT) == "a" * 1000
        ws.send("a" * 1001)
        with pytest.raises(ws_exceptions.ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 1009


def test_a_ping_gets_its_pong_and_answered_pings_keep_the_connection() -> None:
    config = Config(access_log=False, ws_ping_interval=0.05, ws_ping_timeout=0.1)
    with serving(config=config) as base, ws_client.connect(base + "/") as ws:
        assert ws.ping().wait(TIMEOUT)  # the server's pong
        ws.send("still here")
        assert ws.recv(timeout=TIMEOUT) == "still here"
        assert ws.ping().wait(TIMEOUT)  # several ping intervals later, still open: the client answered them


def test_a_client_that_does_not_answer_pings_is_closed_1011() -> None:
    config = Config(access_log=False, ws_ping_interval=0.05, ws_ping_timeout=0.1)
    with serving(config=config) as base:
        host, port = base.removeprefix("ws://").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key
        )
        data = b""
        while chunk := sock.recv(65536):  # never answering: the pings pile up until the close
            data += chunk
    assert data.startswith(b"HTTP/1.1 101")
    frames = data.partition(b"\r\n\r\n")[2]
    assert frames[0] == 0x89  # a ping first
    close = frames.rfind(b"\x88")
    assert close >= 0 and int.from_bytes(frames[close + 2 : close + 4], "big") == 1011


def test_scope() -> None:
    seen: list[dict[str, Any]] = []

    async def recorder(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        seen.append(scope)
        await receive()
        await send({"type": "websocket.close"})

    config = Config(access_log=False, lifespan="off", root_path="/r")
    with serving(recorder, config) as base, pytest.raises(ws_exceptions.InvalidStatus):
        ws_client.connect(base + "/a%20b?x=1", additional_headers={"X-Y": "z"})
    [scope] = seen
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["path"] == "/r/a b" and scope["raw_path"] == b"/r/a%20b" and scope["query_string"] == b"x=1"
    assert (b"x-y", b"z") in scope["headers"]
    assert scope["subprotocols"] == [] and scope["client"][0] == "127.0.0.1"


def test_a_bad_handshake_gets_400_and_the_close() -> None:
    with serving() as base:
        host, port = base.removeprefix("ws://").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        # No Sec-WebSocket-Key: wsproto refuses the handshake.
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400")
