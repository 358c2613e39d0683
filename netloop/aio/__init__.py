"""asyncio on netloop's loops: every netloop event loop is an asyncio event loop on its own thread.

Inside any callback of an engine's loop ``asyncio.get_running_loop()`` is that loop's ``Loop``; an ``async def``
event handler's coroutine runs there as a task, the connection's later events waiting for it. ``run``,
``new_event_loop`` and ``EventLoopPolicy`` give standalone asyncio programs the same loop. See docs/asyncio.md.
"""

from netloop import _async_hooks
from netloop.aio._handler_tasks import adopt, adopt_close, drain
from netloop.aio._loop import Loop, enter, leave, loop_of
from netloop.aio._policy import EventLoopPolicy, new_event_loop, run
from netloop.aio._streams import StreamServer, StreamWriter, serve, start_server

# The core reaches netloop.aio through these hooks only (netloop/_async_hooks.py): no import goes round in a circle.
_async_hooks.adopt = adopt
_async_hooks.adopt_close = adopt_close
_async_hooks.enter = enter
_async_hooks.leave = leave

__all__ = [
    "EventLoopPolicy",
    "Loop",
    "StreamServer",
    "StreamWriter",
    "drain",
    "loop_of",
    "new_event_loop",
    "run",
    "serve",
    "start_server",
]
