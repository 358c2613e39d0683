"""A connection's lifecycle as code: its states, what each allows, and every transition between them.

One state variable per connection (``Conn._state``), and this module is the whole of what it may be and become.
``TRANSITIONS`` *is* the state machine: every change of state goes through ``next_state``, which raises
``LifecycleError`` for a (state, event) it does not list, so a combination nobody considered cannot happen
quietly. Transitions are a handful per connection; the questions asked per read or write ("may I send", "do I
show this read") are answered by the permission tuples (``READS``, ``WRITES``, ``SENDS``, ``FINISHED``), indexed
by state number, which both cores read: the compiled one gets ``SENDS`` at import (``netloop._compiled.adopt``).

Standard library only, and nothing of the core's: the connection, TLS, dialing and PROXY modules import this one.
``docs/lifecycle.md`` is rendered from it (``python -m netloop._lifecycle docs/lifecycle.md``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

# -- states ------------------------------------------------------------------------------------------------------
#
# The first eight keep their numbers of old (a compiled module built against them reads the same numbers).
OPEN = 0  # both directions open: reads shown to on_traffic, writes sent
PEER_EOF = 1  # the peer sent its FIN (on_eof fired); we may still write
CLOSING = 2  # a close was asked for: input discarded, outbound flushed, then our FIN
FINISHING = 3  # both ends are done saying things: outbound flushed, then the descriptor closes
SHUTTING = 4  # shutdown_write: outbound flushed, then our FIN; reading goes on
HALF_SHUT = 5  # our FIN is sent; reading goes on until the peer's FIN
LINGERING = 6  # finished for the handler (on_close fired); input discarded until the peer's FIN or linger_timeout
CLOSED = 7  # the descriptor is closed
FAILING = 8  # a send failed inside a callback: the connection closes with that error once the callback returns
DIALING = 9  # a dialled (or enrolled) stream connection, before its connect's outcome is known
HANDSHAKING = 10  # the TLS handshake runs; the handler has not heard of the connection yet
PROXY_HEADER = 11  # the PROXY protocol header is read (``ProxyHeaderReader``), before any connection object exists

STATE_NAMES = (
    "open",
    "peer-eof",
    "closing",
    "finishing",
    "shutting",
    "half-shut",
    "lingering",
    "closed",
    "failing",
    "dialing",
    "handshaking",
    "proxy-header",
)
STATES = tuple(range(len(STATE_NAMES)))

# -- what each state does with a read and a write ----------------------------------------------------------------

# A readable socket: not read here, shown to on_traffic (unless a pause bit holds it), or read and dropped.
NO_READ = 0
DELIVER = 1
DISCARD = 2
READS = (
    DELIVER,  # open
    NO_READ,  # peer-eof: the peer said all it will
    DISCARD,  # closing: so the peer is never blocked on us
    NO_READ,  # finishing
    DELIVER,  # shutting
    DELIVER,  # half-shut
    DISCARD,  # lingering
    NO_READ,  # closed
    NO_READ,  # failing: the handler is not shown more of a connection that is ending with an error
    NO_READ,  # dialing: not connected yet
    NO_READ,  # handshaking: the handshake reads the socket itself
    NO_READ,  # proxy-header: the header reader peeks at the socket itself
)

# A write (``write``, ``writev``, ``async_write``): tried on the socket at once (what the kernel refuses is
# buffered), buffered to go out in order later, refused (``ConnClosedError``), or dropped (returns 0: the
# connection is closing with the error a send already met).
SEND = 0
QUEUE = 1
REFUSE = 2
DROP = 3
WRITES = (
    SEND,  # open
    SEND,  # peer-eof
    QUEUE,  # closing: flushed before our FIN
    QUEUE,  # finishing: flushed before the close
    REFUSE,  # shutting: shutdown_write was called
    REFUSE,  # half-shut
    REFUSE,  # lingering
    REFUSE,  # closed
    DROP,  # failing
    QUEUE,  # dialing: sent once connected, in order
    QUEUE,  # handshaking: sent once the handshake completed
    REFUSE,  # proxy-header: there is no connection to write to
)

SENDS = tuple(w == SEND for w in WRITES)
"""Whether a write goes to the socket at once (when nothing is buffered before it): what the compiled write reads."""

FINISHED = tuple(s in (LINGERING, CLOSED) for s in STATES)
"""Whether the connection is finished for the handler (``Conn.closed``, ``fd == -1``): on_close has fired."""

FIN_SENT = tuple(s in (HALF_SHUT, LINGERING, CLOSED) for s in STATES)
"""Whether our FIN (on TLS, our close_notify too) is already sent."""

READ_NAMES = ("none", "shown to on_traffic", "discarded")
WRITE_NAMES = ("sent", "queued", "refused", "dropped")

# -- events ------------------------------------------------------------------------------------------------------

OPENED = "opened"  # the connect, the TLS handshake or the PROXY header completed: on_open fires
START_TLS = "start_tls"  # the PROXY header completed on a TLS listener: the handshake comes next
CLOSE = "close"  # a close request: Action.CLOSE, close(), the engine's graceful stop
SHUT_WR = "shutdown_write"  # Conn.shutdown_write()
PEER_FIN = "peer_fin"  # a read returned the peer's EOF
FLUSHED = "flushed"  # the outbound buffer drained in a state that waits for it (our FIN goes out, or the close)
ERROR = "error"  # a send failed inside a callback (or passed write_buffer_limit): closes after the callback
CLOSE_NOW = "close_now"  # the descriptor closes at once: a socket error, a failed handshake, the end of lingering
DEADLINE = "deadline"  # set_deadline's time passed
READ_DEADLINE = "read_deadline"  # set_read_deadline's time passed
WRITE_DEADLINE = "write_deadline"  # set_write_deadline's time passed with outbound bytes still buffered
IDLE_TIMEOUT = "idle_timeout"  # the idle_timeout option: no byte either way for that long
READ_TIMEOUT = "read_timeout"  # the read_timeout option: a message (or a partial one) not complete in time
LINGER_TIMEOUT = "linger_timeout"  # a closing step made no progress for linger_timeout
HANDSHAKE_TIMEOUT = "handshake_timeout"  # tls_handshake_timeout
HEADER_TIMEOUT = "header_timeout"  # proxy_header_timeout
DIAL_TIMEOUT = "dial_timeout"  # dial's timeout, while the connect (or the name's lookup) is under way

EVENTS = (
    OPENED,
    START_TLS,
    CLOSE,
    SHUT_WR,
    PEER_FIN,
    FLUSHED,
    ERROR,
    CLOSE_NOW,
    DEADLINE,
    READ_DEADLINE,
    WRITE_DEADLINE,
    IDLE_TIMEOUT,
    READ_TIMEOUT,
    LINGER_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    HEADER_TIMEOUT,
    DIAL_TIMEOUT,
)
DEADLINES = (
    DEADLINE,
    READ_DEADLINE,
    WRITE_DEADLINE,
    IDLE_TIMEOUT,
    READ_TIMEOUT,
    LINGER_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    HEADER_TIMEOUT,
    DIAL_TIMEOUT,
)

# -- the transitions ---------------------------------------------------------------------------------------------
#
# A transition to the state it starts from means "nothing changes" (an event that state ignores); one a state does
# not list cannot happen there, and raises. Where an event leads to CLOSED, the code closes the descriptor (the
# CLOSE_NOW transition).


def _every(event: str, to: int, *, but: tuple[int, ...] = ()) -> dict[tuple[int, str], int]:
    return {(state, event): to for state in STATES if state not in but}


def _same(event: str, *states: int) -> dict[tuple[int, str], int]:
    return {(state, event): state for state in states}


_CONN_STATES = (OPEN, PEER_EOF, CLOSING, FINISHING, SHUTTING, HALF_SHUT, FAILING, DIALING, HANDSHAKING)
"""States of a connection the handler may still act on (not finished, and a connection object exists)."""

TRANSITIONS: Mapping[tuple[int, str], int] = {
    # Opening: the dial's, the handshake's or the header's outcome.
    (DIALING, OPENED): OPEN,
    (HANDSHAKING, OPENED): OPEN,
    (PROXY_HEADER, OPENED): OPEN,
    (PROXY_HEADER, START_TLS): HANDSHAKING,
    # ... for a connection closed, shut or failed before it opened (its writes were queued, or an error is pending).
    **_same(OPENED, CLOSING, SHUTTING, FAILING),
    # A close request.
    (OPEN, CLOSE): CLOSING,
    (SHUTTING, CLOSE): CLOSING,
    (HALF_SHUT, CLOSE): LINGERING,  # our FIN is sent already: the handler is done
    (PEER_EOF, CLOSE): FINISHING,
    (DIALING, CLOSE): CLOSING,  # with writes queued; with none it closes at once (CLOSE_NOW)
    (HANDSHAKING, CLOSE): CLOSED,  # the handler never heard of it
    **_same(CLOSE, CLOSING, FINISHING, LINGERING, FAILING, CLOSED),  # closing already
    # shutdown_write (refused where FINISHED).
    (OPEN, SHUT_WR): SHUTTING,
    (DIALING, SHUT_WR): SHUTTING,
    (HANDSHAKING, SHUT_WR): SHUTTING,
    (PEER_EOF, SHUT_WR): FINISHING,  # both directions done: as a close
    **_same(SHUT_WR, CLOSING, FINISHING, SHUTTING, HALF_SHUT, FAILING),
    # The peer's FIN.
    (OPEN, PEER_FIN): PEER_EOF,
    (SHUTTING, PEER_FIN): FINISHING,
    (CLOSING, PEER_FIN): FINISHING,
    (HALF_SHUT, PEER_FIN): CLOSED,
    (LINGERING, PEER_FIN): CLOSED,
    (HANDSHAKING, PEER_FIN): CLOSED,  # the handshake fails
    (PROXY_HEADER, PEER_FIN): CLOSED,  # the header is incomplete
    **_same(PEER_FIN, FAILING),  # the pending error closes it
    # The outbound buffer drained where a step waits for it.
    (CLOSING, FLUSHED): LINGERING,  # our FIN is sent: on_close fires
    (SHUTTING, FLUSHED): HALF_SHUT,  # our FIN is sent
    (FINISHING, FLUSHED): CLOSED,
    # A send error inside a callback.
    **_every(ERROR, FAILING, but=(LINGERING, CLOSED, PROXY_HEADER)),
    # The descriptor closes.
    **_every(CLOSE_NOW, CLOSED, but=(CLOSED,)),
    # The user's deadlines (set_*deadline): cancelled when the connection finishes for the handler.
    **{(s, DEADLINE): CLOSED for s in _CONN_STATES},
    **{(s, READ_DEADLINE): CLOSED if READS[s] == DELIVER else s for s in _CONN_STATES},
    **{(s, WRITE_DEADLINE): CLOSED if WRITES[s] in (SEND, QUEUE) else s for s in _CONN_STATES},
    # The loop's timeouts (idle_timeout, read_timeout): the timing wheel skips closed connections only.
    **_every(IDLE_TIMEOUT, CLOSED, but=(CLOSED, PROXY_HEADER)),
    **{(s, READ_TIMEOUT): CLOSED if READS[s] == DELIVER else s for s in STATES if s not in (CLOSED, PROXY_HEADER)},
    # linger_timeout: armed by a close request, again for the lingering.
    (CLOSING, LINGER_TIMEOUT): CLOSED,  # when nothing was sent since it was armed; else it is armed again
    (FINISHING, LINGER_TIMEOUT): CLOSED,  # likewise
    (LINGERING, LINGER_TIMEOUT): CLOSED,
    **_same(LINGER_TIMEOUT, FAILING),  # the pending error closes it
    # The pre-open deadlines.
    **{(s, HANDSHAKE_TIMEOUT): CLOSED for s in (HANDSHAKING, SHUTTING, FAILING)},
    (PROXY_HEADER, HEADER_TIMEOUT): CLOSED,
    **{(s, DIAL_TIMEOUT): CLOSED for s in (DIALING, CLOSING, SHUTTING, FAILING, OPEN)},  # open: a UDP name lookup
}


class LifecycleError(RuntimeError):
    """A connection was asked to make a transition the lifecycle table does not list: a bug in netloop."""


# Where a test records every transition asked of the table (``recording``); None otherwise.
_performed: list[tuple[int, str]] | None = None


def next_state(state: int, event: str, table: Mapping[tuple[int, str], int] = TRANSITIONS) -> int:
    """The state that ``event`` leads to from ``state``; ``LifecycleError`` where the table lists none."""
    if _performed is not None:
        _performed.append((state, event))
    try:
        return table[state, event]
    except KeyError:
        name = STATE_NAMES[state] if 0 <= state < len(STATE_NAMES) else repr(state)
        raise LifecycleError(f"no transition for {event!r} in state {name}") from None


@contextmanager
def recording() -> Iterator[list[tuple[int, str]]]:
    """Record every (state, event) asked of ``next_state`` in this process while the block runs."""
    global _performed
    performed: list[tuple[int, str]] = []
    _performed = performed
    try:
        yield performed
    finally:
        _performed = None


# -- a UDP server's per-datagram connection: its own small model --------------------------------------------------
#
# Open, or closed: the socket is the engine's, nothing called on the datagram's Conn closes it, and there is no FIN.
DATAGRAM_TRANSITIONS: Mapping[tuple[int, str], int] = {
    (OPEN, CLOSE): CLOSED,
    (OPEN, CLOSE_NOW): CLOSED,
    (CLOSED, CLOSE): CLOSED,
}

# -- the table for humans ----------------------------------------------------------------------------------------

_RENDER_ORDER: tuple[int, ...] = (PROXY_HEADER, DIALING, HANDSHAKING, OPEN, PEER_EOF, SHUTTING, HALF_SHUT)
_RENDER_ORDER += (CLOSING, FINISHING, FAILING, LINGERING, CLOSED)
BEGIN = "<!-- generated by netloop/_lifecycle.py: begin -->"
END = "<!-- generated by netloop/_lifecycle.py: end -->"


def _cell(state: int, events: tuple[str, ...], table: Mapping[tuple[int, str], int], sep: str = "<br>") -> str:
    parts = []
    for event in events:
        to = table.get((state, event))
        if to is None:
            continue
        parts.append(f"{event}: {'ignored' if to == state else STATE_NAMES[to]}")
    return sep.join(parts) or "-"


def render() -> str:
    """The lifecycle tables as Markdown, between the ``BEGIN`` and ``END`` markers."""
    lines = [BEGIN, ""]
    header = "| state | reads | writes | close request | shutdown_write | peer's FIN | opened | error | deadlines |"
    lines += [header, "|" + "---|" * header.count(" | ") + "---|"]
    rest = tuple(e for e in EVENTS if e not in (CLOSE, SHUT_WR, PEER_FIN, OPENED, START_TLS, ERROR, *DEADLINES))

    def one(state: int, event: str) -> str:
        to = TRANSITIONS.get((state, event))
        if to is None:
            return "refused" if event == SHUT_WR and FINISHED[state] else "-"
        return "ignored" if to == state else STATE_NAMES[to]

    for state in _RENDER_ORDER:
        opened = _cell(state, (OPENED, START_TLS), TRANSITIONS).replace("opened: ", "")
        row = [
            f"`{STATE_NAMES[state]}`",
            READ_NAMES[READS[state]],
            WRITE_NAMES[WRITES[state]],
            one(state, CLOSE),
            one(state, SHUT_WR),
            one(state, PEER_FIN),
            opened,
            one(state, ERROR),
            _cell(state, DEADLINES, TRANSITIONS),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Every other event, per state:", ""]
    for state in _RENDER_ORDER:
        lines.append(f"- `{STATE_NAMES[state]}`: {_cell(state, rest, TRANSITIONS, '; ')}")
    lines += ["", "A UDP server's per-datagram connection (its own small model):", ""]
    for (state, event), to in DATAGRAM_TRANSITIONS.items():
        lines.append(f"- `{STATE_NAMES[state]}` + {event}: {STATE_NAMES[to]}")
    lines += ["", END]
    return "\n".join(lines)


def rewrite(path: str) -> bool:
    """Put ``render()`` between the markers in the file at ``path``; True when it changed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + render() + text[end:]
    if new == text:
        return False
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    return True


if __name__ == "__main__":
    for target in sys.argv[1:]:
        print(f"{target}: {'rewritten' if rewrite(target) else 'up to date'}")
