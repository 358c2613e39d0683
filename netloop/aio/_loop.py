"""``Loop``: asyncio's event loop served by a netloop ``EventLoop``: its task queue, its timer heap, its poller.

asyncio's selector event loop keeps its transports, ``sock_*`` methods, servers, TLS, subprocesses and signal
handling; only the primitives they stand on are replaced:

- ``call_soon`` appends to the netloop loop's task queue, ``call_soon_threadsafe`` goes through ``submit`` (which
  wakes the loop), ``call_at``/``call_later`` push onto its timer heap (``EventLoop.call_later``);
- readers and writers go to its poller through ``LoopSelector``;
- ``run_forever`` runs the netloop loop's body (``EventLoop._serve``: the compiled loop where it is in use), and
  ``stop`` ends it after the callbacks already queued.

A netloop engine's loop gets one when it starts (``enter``): ``asyncio.get_running_loop()`` is then that loop in
every callback on its thread, and the engine owns its lifetime (``leave``). ``Loop()`` alone is a standalone
asyncio event loop on a netloop loop of its own (``netloop.aio.new_event_loop``).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import socket
import sys
import threading
import time
from asyncio import events
from collections.abc import Callable
from contextvars import Context, copy_context
from typing import TYPE_CHECKING, Any

from netloop._errors import EngineStoppedError
from netloop.aio import _debug, _ready, _transport
from netloop.aio._selector import LoopSelector

if TYPE_CHECKING:
    from netloop._conn import Conn
    from netloop._eventloop import EventLoop, Timer
    from netloop.aio._handler_tasks import ConnTasks

# Cancelled timers are dropped from the heap once there are more than this many and they are half of it (asyncio's
# own thresholds), so a timeout cancelled per request doesn't keep its entry until it would have fired.
_MIN_COMPACT = 100

# How many rounds of queued callbacks a stopping engine loop runs for its cancelled tasks to finish.
_LEAVE_ROUNDS = 100

# The asyncio loop of each running netloop loop (any thread may read it).
_faces: dict[EventLoop, Loop] = {}


def _fire(timer: _TimerHandle) -> None:
    """A timer is due: its callback runs after the callbacks already queued, as asyncio's loop orders them."""
    timer._scheduled = False
    if not timer._cancelled:
        loop = timer._loop
        loop._queue.append((loop._run_handle, (timer,)))


class _TimerHandle(asyncio.TimerHandle):
    """asyncio's timer handle, with the netloop timer that fires it (cancelled together)."""

    __slots__ = ("_timer",)
    _timer: Timer
    _scheduled: bool  # asyncio's (typeshed leaves these two out)
    _loop: Loop


def _standalone_owner() -> EventLoop:
    """A netloop loop of its own, with no engine (no listeners, no connections unless enrolled)."""
    from netloop._engine import EngineCore
    from netloop._eventloop import EventLoop
    from netloop._options import Options

    options = Options()
    # Its only connections are transports: the loop's inlined read path hands their reads to their protocols.
    core = EngineCore(_transport.EVENTS, [], options)
    return EventLoop(0, core, core.handler, options)


class Loop(asyncio.SelectorEventLoop):
    """An ``asyncio.AbstractEventLoop`` served by a netloop ``EventLoop`` on the same thread.

    ``Loop()`` makes a standalone one (``netloop.aio.new_event_loop``); an engine's loops have theirs from the
    start (``netloop.aio.loop_of``), and the engine owns them: ``run_forever``, ``stop`` and ``close`` are refused.
    """

    def __init__(self, owner: EventLoop | None = None) -> None:
        self._standalone = owner is None
        self._owner: EventLoop = _standalone_owner() if owner is None else owner
        self._queue = self._owner._tasks
        self._timer_cancels = 0
        self._conn_tasks: dict[Conn, ConnTasks] = {}
        # What runs a queued asyncio callback: timed in debug mode (set_debug).
        self._run_handle: Callable[[Any], None] = _ready.fast_run_handle
        self._loop_selector = LoopSelector(self._owner)
        super().__init__(self._loop_selector)
        # The compiled call_soon and queue drain where they are built (the Python call_soon below is the reference).
        _ready.install(self, Loop.call_soon)
        # asyncio's create_future is a Python method around this call: the call itself, one Python frame fewer.
        self.create_future = functools.partial(asyncio.Future, loop=self)  # type: ignore[method-assign]
        # Asked by every Future made (for its creation traceback): the attribute, read without a Python frame.
        self.get_debug = functools.partial(getattr, self, "_debug")  # type: ignore[method-assign]

    @property
    def netloop_loop(self) -> EventLoop:
        """The netloop ``EventLoop`` serving this asyncio loop."""
        return self._owner

    # -- the self-pipe: made only for signal handlers (call_soon_threadsafe wakes the netloop loop itself) --------

    def _make_self_pipe(self) -> None:
        self._ssock = self._csock = None

    def _close_self_pipe(self) -> None:
        if self._ssock is not None:
            super()._close_self_pipe()

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:  # type: ignore[override]
        if self._ssock is None and not self._closed:  # type: ignore[attr-defined]
            super()._make_self_pipe()  # type: ignore[misc]
        super().add_signal_handler(sig, callback, *args)

    def set_debug(self, enabled: bool) -> None:
        super().set_debug(enabled)
        # Debug mode times each callback (slow_callback_duration), as asyncio's own loop does in its debug mode.
        self._run_handle = self._loop_selector.run_handle = (
            _debug.run_handle_timed if enabled else _ready.fast_run_handle
        )

    # -- transports: TCP and Unix stream sockets are netloop connections -------------------------------------

    def _make_socket_transport(
        self,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[None] | None = None,
        *,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> asyncio.Transport:
        if _transport.serves(sock) and self._owner.accepting:
            return _transport.SocketTransport(self, sock, protocol, waiter, extra, server)
        return super()._make_socket_transport(sock, protocol, waiter, extra=extra, server=server)  # type: ignore[misc,no-any-return]

    async def _sendfile_native(self, transp: Any, file: Any, offset: int, count: int | None) -> int:
        if isinstance(transp, _transport.SocketTransport):
            return await transp.sendfile_native(file, offset, count)
        return await super()._sendfile_native(transp, file, offset, count)  # type: ignore[misc,no-any-return]

    # -- callbacks and timers ------------------------------------------------------------------------------

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> asyncio.Handle:
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        if self._debug:  # type: ignore[attr-defined]
            self._check_thread()  # type: ignore[attr-defined]
            self._check_callback(callback, "call_soon")  # type: ignore[attr-defined]
            handle = asyncio.Handle(callback, args, self, context)
            if handle._source_traceback:  # type: ignore[attr-defined]
                del handle._source_traceback[-1]  # type: ignore[attr-defined]
        else:
            # _new_handle's body, inline: the call most asyncio code makes most often (a future's callbacks, a task's
            # next step).
            handle = _blank_handle(asyncio.Handle)
            handle._context = copy_context() if context is None else context  # type: ignore[attr-defined]
            handle._loop = self  # type: ignore[attr-defined]
            handle._callback = callback  # type: ignore[attr-defined]
            handle._args = args
            handle._cancelled = False
            handle._repr = None  # type: ignore[attr-defined]
            handle._source_traceback = None  # type: ignore[attr-defined]
        self._queue.append((self._run_handle, (handle,)))
        return handle

    def _call_soon(self, callback: Callable[..., object], args: Any, context: Context | None) -> asyncio.Handle:
        if self._debug:  # type: ignore[attr-defined]
            handle = asyncio.Handle(callback, args, self, context)
        else:
            handle = _new_handle(callback, args, self, context)
        self._queue.append((self._run_handle, (handle,)))
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> asyncio.Handle:
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        if self._debug:  # type: ignore[attr-defined]
            self._check_callback(callback, "call_soon_threadsafe")  # type: ignore[attr-defined]
        handle = asyncio.Handle(callback, args, self, context)
        if handle._source_traceback:  # type: ignore[attr-defined]
            del handle._source_traceback[-1]  # type: ignore[attr-defined]
        try:
            self._owner.submit(self._run_handle, handle)
        except EngineStoppedError:
            raise RuntimeError("Event loop is closed") from None
        return handle

    def _add_callback(self, handle: asyncio.Handle) -> None:
        # A signal's handler (the self-pipe's reader), or a ready handle from asyncio's own code.
        if not handle._cancelled:
            self._queue.append((self._run_handle, (handle,)))

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> asyncio.TimerHandle:
        if self._closed:  # type: ignore[attr-defined]
            raise RuntimeError("Event loop is closed")
        if self._debug:  # type: ignore[attr-defined]
            self._check_thread()  # type: ignore[attr-defined]
            self._check_callback(callback, "call_at")  # type: ignore[attr-defined]
        timer = _TimerHandle(when, callback, args, self, context)
        if timer._source_traceback:  # type: ignore[attr-defined]
            del timer._source_traceback[-1]  # type: ignore[attr-defined]
        timer._timer = self._owner.call_later(when - time.monotonic(), _fire, timer)
        timer._scheduled = True
        return timer

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        if not isinstance(handle, _TimerHandle) or not handle._scheduled:
            return
        handle._scheduled = False
        handle._timer.cancel()
        self._timer_cancels += 1
        timers = self._owner._timers
        if self._timer_cancels > _MIN_COMPACT and self._timer_cancels * 2 > len(timers):
            # In place: the running loop holds this very list.
            timers[:] = [entry for entry in timers if not entry[2].cancelled]
            heapq.heapify(timers)
            self._timer_cancels = 0

    # -- running -------------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        self._check_closed()  # type: ignore[attr-defined]
        self._check_running()  # type: ignore[attr-defined]
        if not self._standalone:
            raise RuntimeError("this asyncio loop belongs to a netloop engine's loop, which runs it")
        self._set_coroutine_origin_tracking(self._debug)  # type: ignore[attr-defined]
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook)  # type: ignore[attr-defined]
        owner = self._owner
        self._thread_id = owner.thread_id = threading.get_ident()
        events._set_running_loop(self)
        owner._running = True
        if self._stopping:  # type: ignore[has-type]
            # stop() before run_forever(): one round of what is queued, then out (as asyncio does).
            self._queue.append((_halt, (owner,)))
        try:
            owner._serve()
        finally:
            owner._running = False
            self._stopping = False
            self._thread_id = None  # type: ignore[assignment]
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)  # type: ignore[attr-defined]
            sys.set_asyncgen_hooks(*hooks)

    def stop(self) -> None:
        if not self._standalone:
            raise RuntimeError("this asyncio loop belongs to a netloop engine: stop the engine instead")
        self._stopping = True
        if self._thread_id is not None:
            # The netloop loop finishes this round (the callbacks queued before now), then returns; the queued no-op
            # keeps it from sleeping in the poller first (a timer's callback runs just before it polls).
            owner = self._owner
            owner._running = False
            try:
                owner.submit(_noop)
            except EngineStoppedError:
                pass

    def is_running(self) -> bool:
        return self._thread_id is not None

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:  # type: ignore[attr-defined]
            return
        super().close()
        # Transports still open: closed with the loop, their protocols not told (as asyncio's loop leaves them).
        for transport in list(self._transports.values()):  # type: ignore[attr-defined]
            if isinstance(transport, _transport.SocketTransport):
                transport._conn._close(None)
        if self._standalone:
            owner = self._owner
            owner._tasks.clear()  # as asyncio drops its ready callbacks on close
            owner._timers.clear()
            owner._teardown()


def _new_handle(callback: Callable[..., object], args: Any, loop: Loop, context: Context | None) -> asyncio.Handle:
    """``asyncio.Handle(callback, args, loop, context)`` out of debug mode, without its Python ``__init__``."""
    handle = _blank_handle(asyncio.Handle)
    handle._context = copy_context() if context is None else context  # type: ignore[attr-defined]
    handle._loop = loop  # type: ignore[attr-defined]
    handle._callback = callback  # type: ignore[attr-defined]
    handle._args = args
    handle._cancelled = False
    handle._repr = None  # type: ignore[attr-defined]
    handle._source_traceback = None  # type: ignore[attr-defined]
    return handle


_blank_handle = object.__new__


def _noop() -> None:
    pass


def _halt(owner: EventLoop) -> None:
    owner._running = False


# -- an engine's loops: asyncio's running loop on their threads -------------------------------------------------


class Running:
    """The asyncio loop of a netloop loop running on this thread, and what it replaced there."""

    __slots__ = ("hooks", "loop", "previous")

    def __init__(self, loop: Loop, previous: asyncio.AbstractEventLoop | None, hooks: Any) -> None:
        self.loop = loop
        self.previous = previous
        self.hooks = hooks


def enter(owner: EventLoop) -> Running:
    """``owner`` starts on this thread: make its asyncio loop the running one here (``EventLoop.run``)."""
    loop = Loop(owner)
    if _debug.enabled(owner.options):
        _debug.install(owner)
        loop.set_debug(True)
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=loop._asyncgen_firstiter_hook, finalizer=loop._asyncgen_finalizer_hook)  # type: ignore[attr-defined]
    loop._thread_id = threading.get_ident()
    previous = events._get_running_loop()
    events._set_running_loop(loop)
    _faces[owner] = loop
    return Running(loop, previous, hooks)


def leave(running: Running) -> None:
    """The netloop loop has stopped (and closed its connections): cancel its tasks, close its asyncio loop."""
    loop = running.loop
    owner = loop._owner
    try:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        for _ in range(_LEAVE_ROUNDS):
            if not owner._tasks:
                break
            owner._run_tasks()
        owner._tasks.clear()
    finally:
        _faces.pop(owner, None)
        loop._thread_id = None  # type: ignore[assignment]
        events._set_running_loop(running.previous)
        sys.set_asyncgen_hooks(*running.hooks)
        loop.close()


def loop_of(owner: Any) -> Loop:
    """The asyncio loop of a running netloop loop (``conn.event_loop``, ``engine.loops[i]``)."""
    loop = _faces.get(owner)
    if loop is None:
        raise RuntimeError(f"{owner!r} is not running: its asyncio loop exists while it runs")
    return loop
