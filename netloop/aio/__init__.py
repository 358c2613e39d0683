"""asyncio on netloop's loops: every netloop event loop is an asyncio event loop on its own thread.

Inside any callback of an engine's loop ``asyncio.get_running_loop()`` is that loop's ``Loop``; an ``async def``
event handler's coroutine runs there as a task, the connection's later events waiting for it. ``run``,
``new_event_loop`` and ``EventLoopPolicy`` give standalone asyncio programs the same loop. See docs/asyncio.md.
"""

from netloop.aio._handler_tasks import drain
from netloop.aio._loop import Loop, loop_of
from netloop.aio._policy import EventLoopPolicy, new_event_loop, run

__all__ = ["EventLoopPolicy", "Loop", "drain", "loop_of", "new_event_loop", "run"]
