"""The entry points: ``netloop.run`` and ``netloop.start``, and the signals that stop or restart what they serve.

Above the engine and the worker supervisor: it picks one of them by the options and starts it.
"""

from __future__ import annotations

import signal
import sys
import sysconfig
import threading
from types import FrameType
from typing import Any

from netloop._address import listen_addresses
from netloop._engine import Engine, EngineCore
from netloop._errors import AddressError, NetloopError
from netloop._handler import EventHandler
from netloop._handler_loader import load_handler
from netloop._options import Options, make_options
from netloop._supervisor import start_workers


def start(handler: EventHandler | str, *addrs: str, options: Options | None = None, **kwargs: Any) -> Engine:
    """Bind ``addrs`` and serve them on background threads; returns the running ``Engine`` at once.

    ``handler`` may be a ``"module:attr"`` string (see ``load_handler``): with ``workers=N`` each worker imports it
    after the fork, so the parent never runs it and a restart loads the code anew.

    Raises ``AddressError`` for a bad address and ``TypeError``/``ValueError`` for a bad option, before
    anything is bound.
    """
    return _start(handler, addrs, options, kwargs, keep_first=False)


def _start(
    handler: EventHandler | str,
    addrs: tuple[str, ...],
    options: Options | None,
    kwargs: dict[str, Any],
    keep_first: bool,
) -> Engine:
    opts = make_options(options, kwargs)
    spec: str | None = None
    if isinstance(handler, str):
        spec = handler
        handler = EventHandler() if opts.worker_count() else load_handler(spec)
    if not isinstance(handler, EventHandler):
        raise TypeError(f"handler must be a netloop.EventHandler, got {type(handler).__name__}")
    if not addrs:
        raise AddressError("no address given; e.g. netloop.start(handler, 'tcp://127.0.0.1:9000')")
    addresses = [address for text in addrs for address in listen_addresses(text)]
    if isinstance(opts.tls, dict):
        unknown = sorted(set(opts.tls) - {address.text for address in addresses})
        if unknown:
            raise ValueError(f"tls names addresses this engine does not serve: {', '.join(unknown)}")
    if gil_reenabled():
        opts.get_logger().warning(
            "netloop: this free-threaded Python runs with the GIL enabled (an extension module or PYTHON_GIL=1 "
            "turned it on): event loops in threads will not run in parallel; use workers=N for every core"
        )
    if opts.worker_count():
        return start_workers(handler, addresses, opts, spec)
    core = EngineCore(handler, addresses, opts)
    core.keep_first = keep_first
    core.start()
    return core.engine


def gil_reenabled() -> bool:
    """True on a free-threaded build of Python whose GIL has been switched back on."""
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED")) and is_gil_enabled is not None and is_gil_enabled()


def run(handler: EventHandler | str, *addrs: str, options: Options | None = None, **kwargs: Any) -> None:
    """Serve ``addrs`` until the engine stops (``Action.SHUTDOWN``, ``engine.stop()``, SIGINT or SIGTERM).

    SIGINT/SIGTERM stop it gracefully when ``run`` is called from the main thread, including a signal that
    arrives while the engine is still starting (during ``on_boot``). With ``workers=N``, SIGHUP restarts the
    workers without dropping a connection (``Engine.restart``).
    """
    with stop_on_signals() as signals:
        # Loop 0 runs on this thread, so a one-loop server is a single-threaded process.
        engine = _start(handler, addrs, options, kwargs, keep_first=True)
        signals.attach(engine)
        core = engine._core
        core.run_kept()
        engine.wait()
        if core.fatal is not None and not isinstance(core.fatal, Exception):
            raise core.fatal  # SystemExit, KeyboardInterrupt... from a handler: the engine stopped first


class stop_on_signals:
    """Context manager: while inside, SIGINT and SIGTERM stop the attached engine (main thread only).

    A signal that arrives before ``attach`` is remembered and stops the engine as soon as it is attached.
    """

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self._pending = False
        self._hangup = False
        self._saved: dict[int, Any] = {}

    def attach(self, engine: Engine) -> None:
        self.engine = engine
        if self._pending:
            engine._core.request_stop()
        elif self._hangup:
            self._on_hangup()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.engine is None:
            self._pending = True
        else:
            self.engine._core.request_stop()

    def _on_hangup(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        engine = self.engine
        if engine is None:
            self._hangup = True  # still starting: handled once the engine is attached
            return
        try:
            engine.restart()
        except NetloopError as exc:
            engine._core.log.warning("netloop: SIGHUP ignored: %s", exc)

    def __enter__(self) -> stop_on_signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._saved[signum] = signal.signal(signum, self._on_signal)
            if hasattr(signal, "SIGHUP"):
                self._saved[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._saved.items():
            signal.signal(signum, previous)
