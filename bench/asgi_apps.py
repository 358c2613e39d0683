"""The ASGI apps ``bench.asgi_instructions`` and ``python -m bench`` serve: ``Hello, World!`` (13 bytes), or JSON.

``bare`` is a plain ASGI callable (the server's own cost shows); ``starlette`` a Starlette app (what a framework
adds on top) whose ``/`` route is the one measured. ``bare_json`` and the Starlette app's ``/json`` answer
``{"message": "Hello, World!"}`` instead, for ``python -m bench``'s JSON workloads. None takes part in the
lifespan protocol beyond acknowledging it.
"""

from __future__ import annotations

import json
from typing import Any

BODY = b"Hello, World!"
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
_BODY = {"type": "http.response.body", "body": BODY}


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send(_START)
    await send(_BODY)


def _starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("Hello, World!")

    async def message(request: Request) -> JSONResponse:
        return JSONResponse({"message": "Hello, World!"})

    return Starlette(routes=[Route("/", hello), Route("/json", message)])


try:
    starlette = _starlette()
except ImportError:  # starlette is in the test extra; the bare app needs nothing
    starlette = None


_JSON_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}


async def bare_json(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``{"message": "Hello, World!"}``, serialised per request (TechEmpower's JSON test)."""
    if scope["type"] == "lifespan":
        await bare(scope, receive, send)
        return
    await send(_JSON_START)
    await send({"type": "http.response.body", "body": json.dumps({"message": "Hello, World!"}).encode()})
