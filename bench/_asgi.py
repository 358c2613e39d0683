"""The ASGI servers ``python -m bench`` compares, each serving ``bench.asgi_apps`` with one worker on one core.

netloop.asgi (compiled core), uvicorn (uvloop and httptools), granian (its Rust HTTP server, one worker, one
runtime thread) and hypercorn (uvloop worker). Workload protos are ``asgi-<app>``: ``asgi-bare``,
``asgi-bare_json``, ``asgi-starlette``.
"""

from __future__ import annotations

import importlib.util
import sys

ASGI_CONTENDERS = ("netloop-asgi", "uvicorn", "granian", "hypercorn")
_MODULES = {
    "uvicorn": ("uvicorn", "uvloop", "httptools"),
    "granian": ("granian",),
    "hypercorn": ("hypercorn", "uvloop"),
}
_APPS = ("bare", "bare_json", "starlette")


def asgi_app(proto: str) -> str:
    """The ``module:attribute`` a proto ``asgi-<app>`` serves; ValueError for another proto."""
    app = proto.removeprefix("asgi-")
    if not proto.startswith("asgi-") or app not in _APPS:
        raise ValueError(f"not an ASGI proto: {proto!r}")
    return f"bench.asgi_apps:{app}"


def asgi_server_argv(contender: str, proto: str, host: str, port: int) -> list[str]:
    """The command line of ``contender`` serving ``proto``'s app on host:port, one worker, no access log."""
    python, target = sys.executable, asgi_app(proto)
    if contender == "netloop-asgi":
        where = ["--host", host, "--port", str(port), "--loops", "1"]
        return [python, "-m", "netloop.asgi", target, *where, "--no-access-log", "--log-level", "warning"]
    if contender == "uvicorn":
        where = ["--host", host, "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
        return [python, "-m", "uvicorn", target, *where, "--no-access-log", "--log-level", "warning"]
    if contender == "granian":
        where = ["--host", host, "--port", str(port), "--workers", "1", "--runtime-threads", "1"]
        return [python, "-m", "granian", "--interface", "asgi", *where, "--http", "1", "--no-ws", "--no-log", target]
    if contender == "hypercorn":
        where = ["--bind", f"{host}:{port}", "--workers", "1", "--worker-class", "uvloop"]
        return [python, "-m", "hypercorn", *where, "--log-level", "warning", target]
    raise ValueError(f"{contender} is not an ASGI server")


def asgi_unavailable(contender: str, proto: str) -> str | None:
    """Why ``contender`` cannot serve ``proto`` here, or None."""
    if not proto.startswith("asgi-"):
        return f"{contender} serves ASGI apps only"
    needed = ("httptools",) if contender == "netloop-asgi" else _MODULES[contender]
    if proto == "asgi-starlette":
        needed += ("starlette",)
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed (pip install {' '.join(missing)})" if missing else None
