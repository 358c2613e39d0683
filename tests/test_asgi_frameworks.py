"""Real frameworks on netloop.asgi: a FastAPI app (on Starlette) driven with httpx and the websockets client."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
fastapi = pytest.importorskip("fastapi")
pytest.importorskip("multipart")  # python-multipart: FastAPI's form parsing
ws_client = pytest.importorskip("websockets.sync.client")

from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket  # noqa: E402
from fastapi.responses import FileResponse, StreamingResponse  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import netloop  # noqa: E402
from netloop.asgi import ASGIHandler, Config  # noqa: E402

TIMEOUT = 10.0


class Item(BaseModel):
    name: str
    price: float


def make_app(files: Path, events: list[str]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"greeting": "hi from the lifespan"}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.post("/items/{item_id}")
    async def update(item_id: int, item: Item, q: str | None = None) -> dict[str, Any]:
        return {"id": item_id, "q": q, "name": item.name, "total": item.price * 2}

    @app.get("/greeting")
    async def greeting(request: Request) -> dict[str, str]:
        return {"greeting": request.state.greeting}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def numbers() -> AsyncIterator[bytes]:
            for i in range(5):
                yield b"%d\n" % i

        return StreamingResponse(numbers(), media_type="text/plain")

    @app.get("/file")
    async def file() -> FileResponse:
        return FileResponse(files / "data.bin")

    @app.post("/upload")
    async def upload(note: str = Form(...), upload: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
        content = await upload.read()
        return {"note": note, "filename": upload.filename, "size": len(content), "head": content[:4].hex()}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())

    return app


@contextlib.contextmanager
def serving(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    events: list[str] = []
    (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 1024)
    app = make_app(tmp_path, events)
    engine = netloop.start(ASGIHandler(app, Config(access_log=False)), "tcp://127.0.0.1:0", drain_timeout=1.0)
    try:
        yield engine.addrs[0].replace("tcp://", "http://"), events
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT), "engine did not stop"


def test_fastapi_path_query_json_body(tmp_path: Path) -> None:
    with serving(tmp_path) as (base, _), httpx.Client(base_url=base) as client:
        response = client.post("/items/42", params={"q": "find"}, json={"name": "pen", "price": 1.5})
        invalid = client.post("/items/42", json={"name": "pen"})
    assert response.status_code == 200
    assert response.json() == {"id": 42, "q": "find", "name": "pen", "total": 3.0}
    assert invalid.status_code == 422


def test_fastapi_streaming_and_file_responses(tmp_path: Path) -> None:
    with serving(tmp_path) as (base, _), httpx.Client(base_url=base) as client:
        stream = client.get("/stream")
        file = client.get("/file")
    assert stream.text == "0\n1\n2\n3\n4\n"
    assert stream.headers.get("transfer-encoding") == "chunked"
    assert file.content == bytes(range(256)) * 1024
    assert file.headers["content-length"] == str(256 * 1024)


def test_fastapi_form_upload(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 400
    with serving(tmp_path) as (base, _), httpx.Client(base_url=base) as client:
        response = client.post("/upload", data={"note": "a file"}, files={"upload": ("x.bin", payload)})
    assert response.status_code == 200, response.text
    assert response.json() == {"note": "a file", "filename": "x.bin", "size": len(payload), "head": "00010203"}


def test_fastapi_websocket_endpoint(tmp_path: Path) -> None:
    with serving(tmp_path) as (base, _), ws_client.connect(base.replace("http", "ws") + "/ws") as ws:
        ws.send("shout")
        assert ws.recv(timeout=TIMEOUT) == "SHOUT"


def test_fastapi_lifespan_startup_state_and_shutdown(tmp_path: Path) -> None:
    with serving(tmp_path) as (base, events), httpx.Client(base_url=base) as client:
        assert events == ["startup"]  # before the first request could be served
        assert client.get("/greeting").json() == {"greeting": "hi from the lifespan"}
    assert events == ["startup", "shutdown"]


def test_many_clients_at_once(tmp_path: Path) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def client_run(base: str) -> None:
        with httpx.Client(base_url=base) as client:
            for _ in range(10):
                status = client.post("/items/1", json={"name": "n", "price": 1}).status_code
                with lock:
                    results.append(status)

    with serving(tmp_path) as (base, _):
        threads = [threading.Thread(target=client_run, args=(base,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
    assert results == [200] * 80
