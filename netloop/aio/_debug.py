"""Debug mode (option ``debug=True`` or ``NETLOOP_DEBUG=1``): misuse is loud, slow callbacks are reported.

Chosen once per loop when it starts (``enter``), so a loop out of debug mode runs none of this:

- the loop's connection class becomes a subclass whose *loop*-only methods (those whose docstring starts with
  ``*loop*``) raise ``RuntimeError`` when called from another thread;
- the handler's events are called through ``DebugHandler``: a coroutine returned where nothing awaits it
  (``on_boot``, ``on_tick``, ``on_shutdown``, ``on_pre_write``) and a return value that is neither an Action, None nor
  a coroutine are logged with the event's name, and an event that held the loop longer than the asyncio loop's
  ``slow_callback_duration`` (0.1 s unless changed) is logged with how long it took;
- the asyncio loop runs in asyncio's debug mode, and its callbacks (the steps of async handlers' tasks included) are
  timed the same way.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from netloop._conn import Conn
from netloop._handler import Action, EventHandler

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop

SLOW_CALLBACK = 0.1  # seconds; asyncio's default slow_callback_duration, used where no asyncio loop runs


def enabled(options: Any) -> bool:
    """Debug mode is on for these options: ``debug=True``, or ``NETLOOP_DEBUG`` set to 1 in the environment."""
    return bool(getattr(options, "debug", False)) or os.environ.get("NETLOOP_DEBUG", "") not in ("", "0")


# -- loop-only Conn methods from another thread -------------------------------------------------------------------


def loop_only_methods(cls: type) -> list[str]:
    """The methods of ``cls`` documented as *loop*-only (their docstring starts with ``*loop*``)."""
    names = []
    for name in dir(cls):
        member = getattr(cls, name, None)
        if callable(member) and (getattr(member, "__doc__", None) or "").startswith("*loop*"):
            names.append(name)
    return names


def _on_loop_only(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def checked(self: Conn, *args: Any, **kwargs: Any) -> Any:
        owner = self._loop.thread_id
        if owner is not None and threading.get_ident() != owner:
            raise RuntimeError(
                f"Conn.{name} may only be called on the connection's event loop (from its callbacks), not from thread "
                f"{threading.current_thread().name!r}: use async_write, async_writev, wake or close from other threads"
            )
        return method(self, *args, **kwargs)

    checked.__name__ = checked.__qualname__ = name
    checked.__doc__ = method.__doc__
    return checked


_debug_classes: dict[type[Conn], type[Conn]] = {}
_debug_classes_lock = threading.Lock()


def debug_conn_class(cls: type[Conn]) -> type[Conn]:
    """``cls`` with its *loop*-only methods refusing other threads (made once per class)."""
    with _debug_classes_lock:
        found = _debug_classes.get(cls)
        if found is None:
            members: dict[str, Any] = {"__slots__": ()}
            for name in loop_only_methods(cls):
                members[name] = _on_loop_only(name, getattr(cls, name))
            found = _debug_classes[cls] = type(f"Debug{cls.__name__}", (cls,), members)
        return found


# -- the handler's events -----------------------------------------------------------------------------------------

_CONN_EVENTS = ("on_open", "on_traffic", "on_eof", "on_drain", "on_close")
_UNAWAITED = ("on_boot", "on_tick", "on_shutdown", "on_pre_write")


def _slow_after() -> float:
    running = asyncio._get_running_loop()
    return running.slow_callback_duration if running is not None else SLOW_CALLBACK


def _valid_action(result: object) -> bool:
    return result is None or isinstance(result, Action) or (type(result) is int and result in Action._value2member_map_)


class DebugHandler(EventHandler):
    """The user's handler, its events checked and timed; every other attribute is the user's handler's."""

    def __init__(self, inner: EventHandler, log: Any) -> None:
        self.__dict__["_inner"] = inner
        self.__dict__["_log"] = log
        for event in (*_CONN_EVENTS, *_UNAWAITED):
            self.__dict__[event] = self._wrap(event, getattr(inner, event))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["_inner"], name, value)

    def __repr__(self) -> str:
        return f"<netloop debug mode for {self.__dict__['_inner']!r}>"

    def _wrap(self, event: str, method: Callable[..., Any]) -> Callable[..., Any]:
        # Named as written: a handler class defined in a function loses its "f.<locals>." prefix.
        name = f"{type(self.__dict__['_inner']).__qualname__.rsplit('<locals>.', 1)[-1]}.{event}"
        log = self.__dict__["_log"]
        check = _check_conn_event if event in _CONN_EVENTS else _CHECKS[event]

        def call(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                result = method(*args)
            finally:
                took = time.perf_counter() - start
                if took >= _slow_after():
                    log.warning("netloop (debug): %s held the event loop for %.1f ms", name, took * 1000)
            return check(log, name, result)

        call.__name__ = call.__qualname__ = event
        return call


def _check_conn_event(log: Any, name: str, result: object) -> object:
    if not (_valid_action(result) or asyncio.iscoroutine(result)):
        log.error(
            "netloop (debug): %s returned %r, which is neither an Action, None nor a coroutine: ignored", name, result
        )
        return None  # said here with the event's name: the connection does not say it again
    return result


def _unawaited(log: Any, name: str, result: object) -> bool:
    if asyncio.iscoroutine(result):
        log.error("netloop (debug): %s returned a coroutine, which nothing awaits: it never runs", name)
        result.close()
        return True
    return False


def _check_boot(log: Any, name: str, result: object) -> object:
    if not _unawaited(log, name, result) and not _valid_action(result):
        log.error("netloop (debug): %s returned %r, which is neither an Action nor None: ignored", name, result)
    return result


def _check_none(log: Any, name: str, result: object) -> object:
    if not _unawaited(log, name, result) and result is not None:
        log.error("netloop (debug): %s returned %r: its result is ignored", name, result)
    return result


def _check_tick(log: Any, name: str, result: object) -> object:
    _unawaited(log, name, result)  # anything else that is not a delay the engine refuses itself
    return result


# Each check logs what is wrong with an event's result and returns what the engine is to get instead.
_CHECKS: dict[str, Callable[[Any, str, object], object]] = {
    "on_boot": _check_boot,
    "on_tick": _check_tick,
    "on_shutdown": _check_none,
    "on_pre_write": _check_none,
}


# -- installing it on a loop --------------------------------------------------------------------------------------

_install_lock = threading.Lock()


def install(owner: EventLoop) -> None:
    """Put ``owner`` (starting, on its own thread) in debug mode; its engine's handler is wrapped once."""
    core = owner.core
    with _install_lock:
        handler = core.handler
        if not isinstance(handler, DebugHandler):
            handler = core.handler = DebugHandler(handler, owner.log)
    owner.handler = handler
    owner._conn_class = debug_conn_class(owner._conn_class)


def format_handle(handle: asyncio.Handle) -> str:
    """A handle as asyncio's debug mode names it: a task's step by its task."""
    callback = handle._callback  # type: ignore[attr-defined]
    task = getattr(callback, "__self__", None)
    return repr(task) if isinstance(task, asyncio.Task) else repr(handle)


def run_handle_timed(handle: Any) -> None:
    """``run_handle`` in debug mode: a callback that held the loop past ``slow_callback_duration`` is logged."""
    if handle._cancelled:
        return
    start = time.perf_counter()
    handle._run()
    took = time.perf_counter() - start
    loop = handle._loop
    if took >= loop.slow_callback_duration:
        loop.netloop_loop.log.warning(
            "netloop (debug): %s held the event loop for %.1f ms", format_handle(handle), took * 1000
        )
