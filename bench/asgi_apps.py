"""The ASGI apps ``bench.asgi_instructions`` serves: each answers every request ``Hello, World!`` (13 bytes).

``bare`` is a plain ASGI callable (the server's own cost shows); ``starlette`` a one-route Starlette app (what a
framework adds on top). Neither takes part in the lifespan protocol beyond acknowledging it.
"""

from __future__ import annotations

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
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("Hello, World!")

    return Starlette(routes=[Route("/", hello)])


try:
    starlette = _starlette()
except ImportError:  # starlette is in the test extra; the bare app needs nothing
    starlette = None
