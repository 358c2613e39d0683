"""``WorkerPool``: a bounded set of threads for blocking work that must not run on an event loop."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from netloop._errors import PoolOverloadError

P = ParamSpec("P")
T = TypeVar("T")

_pool_numbers = itertools.count(1)


class WorkerPool:
    """Runs blocking jobs on at most ``size`` threads, so that handlers never block their event loop.

    A handler hands a job over with ``submit`` and returns at once; the job, on a pool thread, replies with
    ``conn.async_write`` (or any other thread-safe ``Conn`` method)::

        def on_traffic(self, conn):
            data = conn.next()
            self.pool.submit(self.slow_echo, conn, data)

        def slow_echo(self, conn, data):
            time.sleep(1)                 # blocking work: a database call, a file, a CPU-bound step
            conn.async_write(data)

    With ``nonblocking=False`` jobs beyond ``size`` wait in a queue (without bound) for a free thread. With
    ``nonblocking=True`` the pool holds at most ``size`` unfinished jobs and ``submit`` raises
    ``PoolOverloadError`` at once when it is full, so an overloaded server sheds work instead of queueing it.
    A job that raises has the exception in its ``Future``, and it is logged. ``release()`` (or leaving a
    ``with`` block) waits for every accepted job; ``submit`` raises ``RuntimeError`` after it.
    """

    def __init__(self, size: int, nonblocking: bool = False, *, logger: logging.Logger | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"WorkerPool size must be an int, got {type(size).__name__}")
        if size < 1:
            raise ValueError(f"WorkerPool size must be >= 1, got {size}")
        self._size = size
        self._nonblocking = nonblocking
        self._log = logger or logging.getLogger("netloop")
        # A name of its own tells release() when it is called from one of this pool's threads.
        self._prefix = f"netloop-pool-{next(_pool_numbers)}"
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=self._prefix)
        self._lock = threading.Lock()
        self._unfinished = 0

    def __repr__(self) -> str:
        mode = "nonblocking" if self._nonblocking else "queueing"
        return f"<netloop.WorkerPool size={self._size} {mode} unfinished={self._unfinished}>"

    @property
    def size(self) -> int:
        """The most jobs that run at once."""
        return self._size

    @property
    def nonblocking(self) -> bool:
        """True when a full pool refuses jobs (``PoolOverloadError``) instead of queueing them."""
        return self._nonblocking

    def unfinished(self) -> int:
        """Jobs accepted and not finished yet (running or queued)."""
        with self._lock:
            return self._unfinished

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on a pool thread; returns its ``Future`` at once (never blocks).

        Raises ``PoolOverloadError`` when a nonblocking pool already holds ``size`` unfinished jobs, and
        ``RuntimeError`` after ``release()``.
        """
        with self._lock:
            if self._nonblocking and self._unfinished >= self._size:
                raise PoolOverloadError(f"the WorkerPool is full: {self._size} jobs are still running")
            self._unfinished += 1
        try:
            future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._finished()
            raise
        future.add_done_callback(self._done)
        return future

    def _finished(self) -> None:
        with self._lock:
            self._unfinished -= 1

    def _done(self, future: Future[Any]) -> None:
        self._finished()
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self._log.error("netloop: a WorkerPool job raised", exc_info=exc)

    def release(self, cancel_pending: bool = False) -> None:
        """Stop taking jobs and wait for the accepted ones to finish (queued ones are dropped if ``cancel_pending``).

        Idempotent. Called from one of the pool's own jobs it does not wait (that would wait for itself).
        """
        own = threading.current_thread().name.startswith(self._prefix + "_")
        self._executor.shutdown(wait=not own, cancel_futures=cancel_pending)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
