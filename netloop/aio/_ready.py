"""asyncio's ready callbacks on a netloop loop's task queue: how a queued ``Handle`` runs, and the compiled copies.

A ready callback is queued on the netloop loop's task queue as ``(run_handle, (handle,))``, and the loop's drain
(``EventLoop._run_tasks``) runs it with the netloop tasks around it, in order. Where ``netloop/aio/_speedups.c`` is
built (and ``NETLOOP_PURE`` is not set), ``install`` gives a ``Loop`` its compiled copies: ``call_soon`` out of
debug mode (asyncio's own ``Handle``, filled in C), ``run_handle``, and the netloop loop's drain, which runs a
queued ``run_handle`` without a Python call. The functions here are the reference the C code mirrors, and what it
calls for everything off the common path.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import warnings
from asyncio import format_helpers
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop
    from netloop.aio._loop import Loop


def run_handle(handle: Any) -> None:
    """Run an asyncio handle from the netloop loop's task queue, unless it was cancelled since it was queued.

    ``Handle._run`` inlined (one Python call fewer per callback); a raise is reported as it reports one.
    """
    if not handle._cancelled:
        try:
            handle._context.run(handle._callback, *handle._args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            report(handle, exc)


def report(handle: Any, exc: BaseException) -> None:
    """A handle's callback raised ``exc``: to the loop's exception handler, as ``Handle._run`` reports it."""
    callback = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {"message": f"Exception in callback {callback}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def task_failed(owner: EventLoop, fn: object, exc: BaseException) -> None:
    """A task of the compiled drain raised: logged as ``EventLoop._run_tasks`` logs it."""
    owner.log.error("netloop: task %r failed on event loop %d", fn, owner.index, exc_info=exc)


def _load() -> ModuleType | None:
    if os.environ.get("NETLOOP_PURE", "") not in ("", "0"):
        return None
    try:
        module = importlib.import_module("netloop.aio._speedups")
    except ImportError:
        return None
    try:
        module.setup(asyncio.Handle, run_handle, report)
    except (TypeError, AttributeError) as exc:
        warnings.warn(
            f"netloop: the compiled asyncio queue (netloop.aio._speedups) does not fit this Python ({exc}): "
            "serving with the pure-Python one",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return module


speedups = _load()
compiled = speedups is not None
"""Whether ``Loop``s get the compiled ``call_soon``, ``run_handle`` and drain."""

fast_run_handle: Callable[[Any], None] = speedups.run_handle if speedups is not None else run_handle
"""What runs a queued handle out of debug mode: the compiled copy where it is built."""


def install(loop: Loop, call_soon: Callable[..., asyncio.Handle]) -> None:
    """Give ``loop`` the compiled ``call_soon`` and its netloop loop the compiled drain; nothing where the compiled
    copies are not in use, or where ``type(loop)`` has a ``call_soon`` of its own. ``call_soon`` is the Python
    ``Loop.call_soon``: the compiled one calls it in debug mode, on a closed loop, and for calls it cannot take."""
    if speedups is None or type(loop).call_soon is not call_soon:
        return
    owner = loop.netloop_loop
    slow = functools.partial(call_soon, loop)
    loop.call_soon = speedups.CallSoon(loop, owner._tasks.append, slow)  # type: ignore[method-assign]
    # Looked up on the loop by its body (the compiled one too), so the instance's attribute is the one that runs.
    owner._run_tasks = speedups.Drain(owner._tasks, functools.partial(task_failed, owner))  # type: ignore[method-assign]
