"""Where ``netloop.aio`` plugs into the core: the core calls these, and ``netloop.aio`` fills them in when it is
imported (``netloop/__init__.py`` imports it), so that no module of the core imports ``netloop.aio`` back.

Until then a loop runs without an asyncio loop of its own, and a coroutine returned by a handler event is refused
with an error naming the way out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _no_asyncio(conn: Any, coro: Any) -> None:
    coro.close()
    raise RuntimeError("a handler event returned a coroutine, but netloop.aio is not loaded: import netloop")


def _enter(loop: Any) -> Any:
    return None


def _leave(running: Any) -> None:
    return None


adopt: Callable[[Any, Any], None] = _no_asyncio
"""Run the coroutine a handler event of ``conn`` returned, as a task of the connection."""
adopt_close: Callable[[Any, Any], None] = _no_asyncio
"""Run the coroutine ``on_close`` returned, once the connection's other tasks are cancelled."""
enter: Callable[[Any], Any] = _enter
"""A netloop loop starts on its thread: make it asyncio's running loop there; returns what ``leave`` needs."""
leave: Callable[[Any], None] = _leave
"""The loop has stopped: cancel its tasks, close its asyncio loop, restore the thread's running loop."""
