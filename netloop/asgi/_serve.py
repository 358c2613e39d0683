"""Serving an ASGI app: ``serve`` (blocking, with the signals of ``netloop.run``) and the workers' handler factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from netloop._engine import Engine
from netloop._entry import start, stop_on_signals
from netloop._errors import NetloopError
from netloop.asgi._config import Config, load_app
from netloop.asgi._handler import ASGIHandler
from netloop.asgi._types import ASGIApp

WORKER_HANDLER = "netloop.asgi._serve:worker_handler"
# What each worker process serves: set by the parent before it forks, so no worker needs it on a command line.
_worker_app: tuple[str, bool, Config] | None = None


def worker_handler() -> ASGIHandler:
    """A worker's handler: imports the app after the fork (so a SIGHUP restart loads the code on disk)."""
    if _worker_app is None:
        raise NetloopError("netloop.asgi: no app to serve in this worker")
    spec, factory, config = _worker_app
    return ASGIHandler(load_app(spec, factory), config)


def serve(
    app: ASGIApp | str,
    *addrs: str,
    config: Config | None = None,
    factory: bool = False,
    on_started: Callable[[Engine], object] | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` (an ASGI callable, or ``"module:attribute"``) on ``addrs`` until SIGINT/SIGTERM or a stop.

    ``on_started(engine)`` is called once the engine serves (the app's startup done), before ``serve`` waits: start
    what rides along with the server there, a metrics port on ``engine.stats()`` say. ``options`` are netloop's
    engine options. With ``workers=N`` the app must be a ``"module:attribute"`` string:
    each worker imports it after the fork (SIGHUP restarts them). ``drain_timeout`` defaults to 5 seconds: the time
    a stop gives requests in flight, and the app's lifespan shutdown, before connections are closed.
    Raises ``NetloopError`` when the server does not start (the app's startup failing included).
    """
    global _worker_app
    config = config or Config()
    options.setdefault("drain_timeout", 5.0)
    if options.get("tls") is not None and config.scheme == "http":
        config.scheme = "https"
    handler: ASGIHandler | str
    if options.get("workers") is not None:
        if not isinstance(app, str):
            raise TypeError("netloop.asgi.serve: with workers the app is given as 'module:attribute'")
        _worker_app = (app, factory, config)
        handler = WORKER_HANDLER
    else:
        handler = ASGIHandler(load_app(app, factory) if isinstance(app, str) else app, config)
    with stop_on_signals() as signals:
        engine = start(handler, *addrs, **options)
        signals.attach(engine)
        if on_started is not None:
            try:
                on_started(engine)
            except BaseException:
                engine.stop()
                raise
        engine.wait()  # wakes for a SIGTERM whichever thread takes it
