"""Standalone entry points: ``run``, ``new_event_loop`` (a ``loop_factory``) and ``EventLoopPolicy``."""

from __future__ import annotations

import asyncio
import sys
from asyncio import events
from collections.abc import Coroutine
from typing import Any, TypeVar

from netloop.aio._loop import Loop

T = TypeVar("T")


def new_event_loop() -> Loop:
    """A new asyncio event loop on a netloop loop of its own; also the ``loop_factory`` of ``asyncio.Runner``."""
    return Loop()


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """The default policy, with netloop's loop: ``asyncio.set_event_loop_policy(netloop.aio.EventLoopPolicy())``."""

    def new_event_loop(self) -> Loop:
        return Loop()


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """``asyncio.run(main)`` on a netloop loop: run it to completion, then cancel what is left and close the loop."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_310(main, debug)


def _run_310(main: Coroutine[Any, Any, T], debug: bool | None) -> T:
    # Python 3.10 has no asyncio.Runner: asyncio.run's steps, with the loop made here.
    if events._get_running_loop() is not None:
        raise RuntimeError("netloop.aio.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: Loop) -> None:
    pending = asyncio.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    for task in pending:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during netloop.aio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
