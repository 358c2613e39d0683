"""The cost of asyncio on netloop: the same servers written three asyncio ways and one callback way.

    python -m bench.servers.aio_styles --style STYLE --proto echo|http --port P [--host H]

Styles:
    protocol-netloop   bench.servers.aio's asyncio Protocols on netloop's loop (``netloop.aio.run``)
    protocol-uvloop    the same on uvloop (what ``python -m bench.servers.aio --loop uvloop`` serves)
    streams-netloop    an echo ``handle(reader, writer)`` served by ``netloop.aio.start_server``
    streams-uvloop     the same ``handle`` served by ``asyncio.start_server`` on uvloop
    async-handler      HTTP (``bench.http_proto``'s session) from an ``async def on_traffic`` netloop handler
    callback-handler   the same handler with a plain ``def on_traffic``

Each serves until SIGTERM or SIGINT, then exits with status 0; one loop, so the counts compare one thread's work.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import netloop
import netloop.aio
from bench.http_proto import DATE_CACHE, HttpSession

STYLES = (
    "protocol-netloop",
    "protocol-uvloop",
    "streams-netloop",
    "streams-uvloop",
    "async-handler",
    "callback-handler",
)
READ_SIZE = 65536


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | netloop.aio.StreamWriter) -> None:
    """The streams echo both streams styles serve."""
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        await writer.drain()


class CallbackHttp(netloop.EventHandler):
    """HTTP "Hello, World!" answered in a plain ``on_traffic``, one session per connection."""

    def on_open(self, conn: netloop.Conn) -> None:
        conn.context = HttpSession()

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        out, close = conn.context.receive(conn.next())
        if out:
            conn.write(out)
        return netloop.Action.CLOSE if close else None

    def on_tick(self) -> float:
        DATE_CACHE.refresh()
        return 1.0


class AsyncHttp(CallbackHttp):
    """The same, from an ``async def on_traffic``: each request's answer comes from a task."""

    async def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:  # type: ignore[override]
        out, close = conn.context.receive(conn.next())
        if out:
            conn.write(out)
        return netloop.Action.CLOSE if close else None


async def _until_signalled() -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()


async def _asyncio_streams(host: str, port: int) -> None:
    server = await asyncio.start_server(echo, host, port)
    await _until_signalled()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.aio_styles", description=__doc__.split("\n")[0])
    parser.add_argument("--style", choices=STYLES, required=True)
    parser.add_argument("--proto", choices=("echo", "http"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    addr = f"tcp://{args.host}:{args.port}"
    style = args.style
    if style.startswith("protocol-"):
        from bench.servers.aio import serve

        server = serve(args.proto, args.host, args.port, None)
        if style == "protocol-uvloop":
            import uvloop

            uvloop.run(server)
        else:
            netloop.aio.run(server)
        return
    if args.proto != "echo" and style.startswith("streams-"):
        parser.error("the streams styles serve echo only")
    if args.proto != "http" and style.endswith("-handler"):
        parser.error("the handler styles serve http only")
    if style == "streams-netloop":
        netloop.aio.serve(echo, addr, num_event_loop=1)
    elif style == "streams-uvloop":
        import uvloop

        uvloop.run(_asyncio_streams(args.host, args.port))
    else:
        handler = AsyncHttp() if style == "async-handler" else CallbackHttp()
        netloop.run(handler, addr, num_event_loop=1, ticker=True)


if __name__ == "__main__":
    main()
