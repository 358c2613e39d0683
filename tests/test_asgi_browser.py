"""A Starlette WebSocketRoute served by netloop.asgi, driven from headless Chromium (the system's) via Playwright."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pytest
from browser import CHROMIUM, chromium
from loopback import TIMEOUT

import netloop

pytest.importorskip("httptools")
pytest.importorskip("wsproto")
pytest.importorskip("starlette")
pytest.importorskip("playwright.sync_api")

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from netloop.asgi import ASGIHandler, Config

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian's chromium package)"),
]


# The page talks to /ws: what it hears, and the close it saw, are the script's result.
TALK = """
async ([messages, closeWith]) => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    const heard = [];
    const closed = new Promise((resolve) => {
        ws.onclose = (event) => resolve({code: event.code, reason: event.reason, clean: event.wasClean});
    });
    ws.onmessage = (event) => {
        heard.push(event.data);
        if (heard.length === messages.length + 1 && closeWith) ws.close(closeWith, "page leaving");
    };
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    for (const text of messages) ws.send(text);
    return {heard, close: await closed};
}
"""


def make_app(server_closes: queue.Queue[tuple[int, str]]) -> Starlette:
    async def page(request: Any) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>ws</title><p>ws</p>")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("welcome")
        try:
            while True:
                text = await websocket.receive_text()
                if text == "bye":
                    await websocket.close(code=4001, reason="as asked")
                    return
                await websocket.send_text(text.upper())
        except WebSocketDisconnect as gone:
            server_closes.put((gone.code, gone.reason))

    return Starlette(routes=[Route("/", page), WebSocketRoute("/ws", ws)])


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as context:
        yield context


@pytest.fixture
def served() -> Iterator[tuple[str, queue.Queue[tuple[int, str]]]]:
    closes: queue.Queue[tuple[int, str]] = queue.Queue()
    engine = netloop.start(
        ASGIHandler(make_app(closes), Config(lifespan="off")), "tcp://127.0.0.1:0", drain_timeout=1.0
    )
    try:
        yield "http://" + engine.addrs[0].removeprefix("tcp://") + "/", closes
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT)


def test_messages_both_ways_then_the_server_closes_with_its_code(browser: Any, served: Any) -> None:
    url, _ = served
    page = browser.new_page()
    page.goto(url)
    result = page.evaluate(TALK, [["hello", "netloop", "bye"], 0])
    assert result["heard"] == ["welcome", "HELLO", "NETLOOP"]
    assert result["close"] == {"code": 4001, "reason": "as asked", "clean": True}


def test_the_browser_closes_and_the_app_hears_its_code(browser: Any, served: Any) -> None:
    url, closes = served
    page = browser.new_page()
    page.goto(url)
    result = page.evaluate(TALK, [["ping"], 4002])
    assert result["heard"] == ["welcome", "PING"]
    assert result["close"]["code"] == 4002
    assert closes.get(timeout=TIMEOUT) == (4002, "page leaving")
