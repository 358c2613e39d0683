"""A ``Conn``'s deadlines: the user's three, and a message's ``read_timeout`` (start/end_message).

Each function here is a method of ``Conn`` (netloop/_conn.py attaches them to the class): one concern a file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netloop._errors import (
    ConnTimeoutError,
)
from netloop._lifecycle import (
    CLOSED,
    DEADLINE,
    FINISHED,
    READ_DEADLINE,
    READ_TIMEOUT,
    WRITE_DEADLINE,
    next_state,
)

if TYPE_CHECKING:
    from netloop._conn import Conn


def set_deadline(self: Conn, seconds: float | None) -> None:
    """*loop* Close the connection ``seconds`` from now (``ConnTimeoutError``, kind ``deadline``); None clears."""
    self._set_deadline("deadline", seconds)


def set_read_deadline(self: Conn, seconds: float | None) -> None:
    """*loop* Close the connection if it is still reading ``seconds`` from now (kind ``read_deadline``).

    Set it when you start waiting for a message and clear it (None) or set it again once it came.
    """
    self._set_deadline("read_deadline", seconds)


def set_write_deadline(self: Conn, seconds: float | None) -> None:
    """*loop* Close the connection if outbound bytes are still buffered ``seconds`` from now.

    The error's kind is ``write_deadline``.
    """
    self._set_deadline("write_deadline", seconds)


def _set_deadline(self: Conn, kind: str, seconds: float | None) -> None:
    deadlines = self._deadlines
    if deadlines is None:
        if seconds is None or FINISHED[self._state]:
            return
        self._deadlines = deadlines = {}
    old = deadlines.pop(kind, None)
    if old is not None:
        old.cancel()
    if seconds is not None and not FINISHED[self._state]:
        deadlines[kind] = self._loop.call_later(seconds, self._deadline_passed, kind, seconds)


def start_message(self: Conn) -> None:
    """*loop* A message is in progress: with ``read_timeout`` it must end within that many seconds of this call.

    A message not ended (``end_message``) in time closes the connection with ``ConnTimeoutError`` (kind
    ``read_timeout``), however many bytes keep trickling in. Calling it again while a message is in progress
    does not move the deadline. Without ``read_timeout`` it does nothing.
    """
    limit = self._loop.message_timeout
    if limit is None or self._message is not None or self._state == CLOSED:
        return
    self._message = self._loop.now
    if self._message_timer is None:
        self._message_timer = self._loop.call_later(limit, self._message_due)


def end_message(self: Conn) -> None:
    """*loop* The message in progress is complete: its ``read_timeout`` deadline is cleared."""
    self._message = None


def _message_due(self: Conn) -> None:
    # One timer per connection, kept across messages: a message that ended lets it lapse, a later one moves it.
    self._message_timer = None
    started = self._message
    if started is None or self._state == CLOSED:
        return
    loop = self._loop
    limit = loop.message_timeout
    assert limit is not None
    due = started + limit
    if loop.now < due:
        self._message_timer = loop.call_later(due - loop.now, self._message_due)
    elif next_state(self._state, READ_TIMEOUT) == CLOSED:
        self._close(ConnTimeoutError("read_timeout", f"{self!r}: a message not complete in read_timeout={limit}s"))


def _deadline_passed(self: Conn, kind: str, seconds: float) -> None:
    if self._deadlines is not None:
        self._deadlines.pop(kind, None)
    state = self._state
    if state == CLOSED:
        return
    if kind == WRITE_DEADLINE and not self._outbound._size:
        return  # everything was sent
    if next_state(state, _DEADLINE_EVENTS[kind]) != CLOSED:
        return  # e.g. a read deadline once no longer reading
    self._close(ConnTimeoutError(kind, f"{self!r}: {kind} of {seconds}s passed"))  # at once, not lingering


_DEADLINE_EVENTS = {"deadline": DEADLINE, "read_deadline": READ_DEADLINE, "write_deadline": WRITE_DEADLINE}
