"""The framework's own share: a pipelined-HTTP responder with no HTTP session behind it.

    python -m bench.servers.responder --style peek|next|nothing --port P [--host H] [--loop netloop|asyncio|uvloop]

Every request (anything ending in an empty line) gets the same canned ``Hello, World!`` answer, so what a request
costs is the transport's and the handler's few lines, not a parser's. Three handlers on netloop's public API:

- ``peek``: ``peek()`` what arrived, count the complete requests, ``discard()`` them, one ``write`` of the answers
  (the gnet-style responder: the connection keeps a partial request, the handler keeps nothing);
- ``next``: ``next()`` all of it, count, one ``write``; the handler keeps a partial request in ``conn.context``;
- ``nothing``: ``next()`` and one fixed ``write``, whatever arrived (one request per read, as the benchmark's
  client sends them): the loop's and the connection's cost alone.

``--loop asyncio`` or ``uvloop`` serves the ``peek`` logic on an asyncio Protocol (``data_received`` counts the
requests in its own buffer), the contender the netloop handlers are compared with. The process serves until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import cast

if not __package__:
    # run as a file (python bench/servers/responder.py): make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import netloop

END = b"\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
STYLES = ("peek", "next", "nothing")


def answers(count: int) -> bytes:
    """The answers to ``count`` requests, one buffer."""
    return ANSWER if count == 1 else ANSWER * count


class PeekResponder(netloop.EventHandler):
    """Peeks, consumes the complete requests with ``discard``, answers them in one write."""

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.peek()
        count = data.count(END)
        if count:
            conn.discard(data.rindex(END) + len(END))
            conn.write(answers(count))
        return None


class NextResponder(netloop.EventHandler):
    """Takes everything with ``next``, answers the complete requests, keeps a partial one in ``conn.context``."""

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.context = b""
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.context + conn.next() if conn.context else conn.next()
        count = data.count(END)
        if count:
            end = data.rindex(END) + len(END)
            conn.context = data[end:] if end < len(data) else b""
            conn.write(answers(count))
        else:
            conn.context = data
        return None


class NothingResponder(netloop.EventHandler):
    """Takes what arrived and writes one answer: the framework's cost with the least a handler can do."""

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.next()
        conn.write(ANSWER)
        return None


HANDLERS: dict[str, type[netloop.EventHandler]] = {
    "peek": PeekResponder,
    "next": NextResponder,
    "nothing": NothingResponder,
}


class PeekProtocol(asyncio.Protocol):
    """The ``peek`` responder on an asyncio transport: its own buffer for a partial request."""

    def __init__(self) -> None:
        self.rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
        count = data.count(END)
        if count:
            end = data.rindex(END) + len(END)
            self.rest = data[end:] if end < len(data) else b""
            self.transport.write(answers(count))
        else:
            self.rest = data


async def serve_asyncio(host: str, port: int) -> None:
    """Serves the responder on the running asyncio loop until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(PeekProtocol, host, port)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    """Parses the command line and serves until told to stop."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--style", choices=STYLES, default="peek")
    parser.add_argument("--loop", choices=("netloop", "asyncio", "uvloop"), default="netloop")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.loop == "netloop":
        netloop.run(HANDLERS[args.style](), f"tcp://{args.host}:{args.port}", num_event_loop=1)
    elif args.loop == "uvloop":
        import uvloop

        uvloop.run(serve_asyncio(args.host, args.port))
    else:
        asyncio.run(serve_asyncio(args.host, args.port))


if __name__ == "__main__":
    main()
