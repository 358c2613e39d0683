"""The write path of ``Conn``: a send at once, the rest buffered and flushed, backpressure, our FIN.

Each function here is a method of ``Conn`` (netloop/_conn.py attaches them to the class): one concern a file.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import TYPE_CHECKING, Any

from netloop._buffer import flat
from netloop._buffer.elastic import OutboundBuffer
from netloop._conn_shared import (
    DRAIN_WAITERS,
    NO_OUTBOUND,
    PAUSED_BY_INBOUND,
    PAUSED_BY_PRESSURE,
    PRESSURE,
    Buffer,
    frozen,
)
from netloop._errors import (
    ConnClosedError,
    OutboundLimitError,
)
from netloop._lifecycle import (
    CLOSED,
    CLOSING,
    FINISHED,
    FINISHING,
    FLUSHED,
    SENDS,
    SHUT_WR,
    SHUTTING,
    next_state,
)

# The ioctl that tells how much of what a socket sent its peer has not yet taken (SIOCOUTQ), where there is one.
if sys.platform.startswith("linux"):
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
else:
    _OUTQ = None

if TYPE_CHECKING:
    from netloop._conn import Conn


def _buffer_rest(self: Conn, data: Buffer, sent: int) -> None:
    if type(data) is memoryview:
        data = flat(data)  # ``sent`` counts bytes
    out = self._outbound
    loop = self._loop
    limit = loop.write_limit
    if limit and out._size + len(data) - sent > limit:
        self._fail_soon(
            OutboundLimitError(
                f"{self!r}: {out._size + len(data) - sent} outbound bytes would pass write_buffer_limit={limit}"
            )
        )
        return
    if out is NO_OUTBOUND:
        self._outbound = out = OutboundBuffer()
    was_empty = not out._size
    if sent:
        out.append(memoryview(data)[sent:] if type(data) is bytes else bytes(memoryview(data)[sent:]))
    else:
        out.append(frozen(data))
    crossed = loop.pressure_bit
    # At the cap, not only past it: a handler that writes until outbound_buffered() >= write_buffer_cap and
    # then waits for on_drain must get it.
    if out._size >= loop.high_water and not self._pause & crossed:
        self._pause |= crossed
        if crossed == PAUSED_BY_PRESSURE:
            loop.pauses += 1
        self._update_interest()
    elif was_empty:
        self._update_interest()


def flush(self: Conn) -> None:
    """*loop* Try to send buffered outbound bytes now; a send error closes the connection after the callback."""
    if self._outbound._size and self._state != CLOSED:
        self._flush(True)


def _flush(self: Conn, in_callback: bool) -> None:
    if self._send_buffered(in_callback):
        self._sent_buffered()


def _send_buffered(self: Conn, in_callback: bool) -> bool:
    """Gather-write buffered bytes until the kernel refuses; False when a send error ended the connection."""
    out = self._outbound
    sendmsg = self._sock.sendmsg
    while out._size:
        chunks = out.chunks()
        try:
            sent = sendmsg(chunks)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            self._send_failed(exc, in_callback)
            return False
        out.advance(sent)
        loop = self._loop
        self._seen = loop.now
        loop.bytes_out += sent
        if out._size and sent < sum(len(c) for c in chunks):
            break
    return True


def _send_failed(self: Conn, exc: OSError, in_callback: bool) -> None:
    if in_callback:
        self._fail_soon(exc)
    else:
        self._close(exc)


def _sent_buffered(self: Conn) -> None:
    """After a flush: resume reading below the low-water mark, send the FIN or close once drained."""
    out = self._outbound
    pause = self._pause
    if out._size:
        if pause & PRESSURE and out._size <= self._loop.low_water:
            self._drained(pause)
        return
    self._outbound = NO_OUTBOUND  # drained: an idle connection holds no buffer
    if self._state in (CLOSING, SHUTTING, FINISHING):
        self._flushed()
    elif pause & PRESSURE:
        self._drained(pause)
    else:
        self._update_interest()


def _drained(self: Conn, pause: int) -> None:
    """Outbound fell to the low-water mark after passing the high-water mark: read again, tell the handler."""
    self._pause = pause & ~PRESSURE
    self._resume()
    if pause & PAUSED_BY_INBOUND:
        self._loop.call_soon(self._deliver_held)
    if DRAIN_WAITERS:  # netloop.aio: wake the coroutines waiting in drain(conn)
        waiter = DRAIN_WAITERS.pop(self, None)
        if waiter is not None:
            waiter()
    self._loop.heap_released()
    self._loop.call_soon(self._fire_drain)


def _fire_drain(self: Conn) -> None:
    if SENDS[self._state]:  # else closing, shut or failed: the handler writes no more
        self._fire("on_drain")


def _flushed(self: Conn) -> None:
    """Outbound is flushed in CLOSING, SHUTTING or FINISHING: our FIN goes out, or the descriptor closes."""
    if next_state(self._state, FLUSHED) == CLOSED:
        self._close(self._err)
        return
    try:
        self._shut_wr()
    except OSError as exc:
        self._close(exc if self._err is None else self._err)
        return
    if self._state == SHUTTING:
        self._to(FLUSHED)
        self._update_interest()
    else:
        self._linger(FLUSHED)


def _linger(self: Conn, event: str) -> None:
    """Our FIN is sent and the handler is done: tell it now (``on_close``), then wait for the peer's EOF.

    Until the EOF or ``linger_timeout`` the descriptor stays open and what the peer sends is discarded, so
    it reads what we sent before it learns of the close (never a reset under its unread bytes).
    """
    self._to(event)
    self._loop.lingering += 1
    self._cancel_deadlines()  # the user's: from here only linger_timeout (or the peer) ends it
    self._update_interest()
    self._arm_deadline()
    self._report_closed(self._err)


def _peer_has_all(self: Conn) -> bool:
    """Every byte we sent, our FIN included, is acknowledged (TCP) or read (Unix) by the peer.

    Linux's SIOCOUTQ; where the kernel cannot tell, False (the lingering runs its course).
    """
    if _OUTQ is None:
        return False
    try:
        unsent: int = struct.unpack("i", fcntl.ioctl(self._fd, _OUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return False
    return unsent == 0


def _shut_wr(self: Conn) -> None:
    self._sock.shutdown(socket.SHUT_WR)


def outbound_buffered(self: Conn) -> int:
    """*loop* How many bytes wait for the kernel to take them."""
    return self._outbound._size


def send_to(self: Conn, data: Buffer, addr: Any) -> int:
    """*loop* Send a datagram to ``addr`` (UDP only)."""
    raise TypeError("send_to is for UDP connections")


def shutdown_write(self: Conn) -> None:
    """*loop* Send our FIN once the buffered outbound bytes are flushed; reading goes on.

    Later writes raise ``ConnClosedError``. When the peer's EOF comes too, the connection closes.
    """
    state = self._state
    if FINISHED[state]:
        raise ConnClosedError(f"shutdown_write on closed connection {self!r}")
    after = next_state(state, SHUT_WR)
    if after == FINISHING:
        self._close_request(None)  # the peer's FIN came already: as a close
    elif after != state:
        self._to(SHUT_WR)
        if not self._outbound._size:
            self._flushed()
