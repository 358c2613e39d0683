"""An ASGI 3.0 server on netloop's engine: HTTP/1.1, WebSocket and lifespan. See docs/asgi.md.

    python -m netloop.asgi myapp.main:app --bind tcp://0.0.0.0:8000

It needs httptools (and wsproto for WebSocket): ``pip install netloop[asgi]``. ``import netloop`` does not import it.
"""

from netloop.asgi._config import Config, load_app
from netloop.asgi._handler import ASGIHandler
from netloop.asgi._serve import serve

__all__ = ["ASGIHandler", "Config", "load_app", "serve"]
