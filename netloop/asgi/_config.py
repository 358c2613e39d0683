"""What an ASGI server serves and how: the application and the settings every connection reads."""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from netloop._errors import NetloopError
from netloop.asgi._types import ASGIApp

log = logging.getLogger("netloop.asgi")
access_log = logging.getLogger("netloop.asgi.access")


@dataclass
class Config:
    """Settings of an ASGI server; every field has the default ``python -m netloop.asgi`` uses."""

    root_path: str = ""
    """The ASGI ``root_path``: the path prefix the application is mounted under behind a proxy."""
    timeout_keep_alive: float = 5.0
    """Close a kept-alive connection that sends no new request for this long (and a new one that sends nothing)."""
    limit_concurrency: int | None = None
    """Most connections plus running requests per process; a request past it is answered 503."""
    limit_request_head: int = 65536
    """Most bytes of a request line and header fields; past it: 431 (414 is not used)."""
    limit_request_fields: int = 100
    """Most header fields in a request; past it: 431."""
    limit_request_body: int | None = None
    """Most bytes of a request body; past it: 413 (None: no limit, the body is streamed to the app)."""
    lifespan: str = "auto"
    """``auto`` (run the lifespan protocol unless the app refuses it), ``on`` (its failure stops the start), ``off``."""
    access_log: bool = True
    """Log one line per response on the ``netloop.asgi.access`` logger (at INFO)."""
    ws: bool = True
    """Serve WebSocket upgrades (needs wsproto); False answers them as plain HTTP requests."""
    ws_max_size: int = 16 * 1024 * 1024
    """Most bytes of one WebSocket message; past it the connection is closed with code 1009."""
    ws_ping_interval: float | None = 20.0
    """Send a WebSocket ping this often (None: never)."""
    ws_ping_timeout: float | None = 20.0
    """Close a WebSocket (1011) whose pong does not come within this long of a ping."""
    scheme: str = "http"
    """``http`` or ``https`` (``ws``/``wss`` follow): set to https when the server speaks TLS."""
    proxy_headers: bool = True
    """Read ``X-Forwarded-Proto`` and ``X-Forwarded-For`` from a trusted peer (``forwarded_allow_ips``) into the
    scope's ``scheme`` and ``client``, as uvicorn's ``--proxy-headers`` does."""
    forwarded_allow_ips: str | list[str] | None = None
    """The trusted peers: IP addresses and networks, comma-separated or a list, ``*`` for every peer; None: the
    ``FORWARDED_ALLOW_IPS`` environment variable, else ``127.0.0.1,::1``. The peer is the socket's, or the address
    a PROXY header names when ``proxy_protocol`` is on."""
    extra: dict[str, Any] = field(default_factory=dict)


def load_app(spec: str, factory: bool = False) -> ASGIApp:
    """The ASGI application ``"module:attribute"`` names (with ``factory``, what calling it returns).

    Raises ``NetloopError`` naming what is wrong. The current directory is importable, as for uvicorn.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise NetloopError(f"app {spec!r}: expected 'module:attribute', e.g. 'myapp.main:app'")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise NetloopError(f"app {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise NetloopError(f"app {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if factory:
        target = target()
    if not callable(target):
        raise NetloopError(f"app {spec!r} is not callable")
    return target  # type: ignore[no-any-return]
