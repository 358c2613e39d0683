"""ASGI applications the netloop.asgi tests serve (importable by a server process started from a test)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

Scope = dict[str, Any]


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client left")
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """Paths: /scope (the scope as JSON), /echo (the body back), /stream (three chunks), /pid, /fail (raises),
    /slow (answers after 50 ms), /state (the lifespan state), anything else: ``hello``."""
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    if scope["type"] == "websocket":
        await websocket_echo(scope, receive, send)
        return
    path = scope["path"][len(scope["root_path"]) :]  # routes below the mount point
    if path == "/scope":
        view = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string", "state")}
        view["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
        view["raw_path"] = scope["raw_path"].decode()
        view["query_string"] = scope["query_string"].decode()
        view["state"] = sorted(scope["state"])
        await answer(send, 200, json.dumps(view).encode(), [(b"content-type", b"application/json")])
    elif path == "/echo":
        await answer(send, 200, await read_body(receive))
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/pid":
        await answer(send, 200, str(os.getpid()).encode())
    elif path == "/fail":
        raise RuntimeError("the app failed on purpose")
    elif path == "/slow":
        await asyncio.sleep(0.05)
        await answer(send, 200, b"slow")
    elif path == "/state":
        await answer(send, 200, json.dumps(scope["state"].get("started", False)).encode())
    else:
        await answer(send, 200, b"hello")


async def lifespan(scope: Scope, receive: Any, send: Any) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    if os.environ.get("ASGI_TEST_STARTUP_FAILS"):
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    scope["state"]["started"] = True
    print("startup complete", flush=True)
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    assert message["type"] == "lifespan.shutdown"
    await asyncio.sleep(0.01)  # an await in the shutdown: the loop still runs
    print("shutdown complete", flush=True)
    await send({"type": "lifespan.shutdown.complete"})


async def websocket_echo(scope: Scope, receive: Any, send: Any) -> None:
    message = await receive()
    assert message["type"] == "websocket.connect"
    if scope["path"] == "/reject":
        await send({"type": "websocket.close", "code": 1008})
        return
    subprotocol = scope["subprotocols"][0] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked to"})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
