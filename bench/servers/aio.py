"""The benchmark's asyncio, uvloop and aiofastnet contenders: the examples' sans-I/O sessions on asyncio Protocols.

    python -m bench.servers.aio --loop asyncio|uvloop|aiofastnet --proto echo|http|resp --port P [--host H]
        [--tls-cert FILE --tls-key FILE]

The HTTP and RESP servers drive the very session classes the netloop examples use, so only the transport
differs between contenders. ``aiofastnet`` is the stock asyncio loop with aiofastnet's transports (its
``create_server``). With ``--tls-cert``/``--tls-key`` the listener serves TLS with the same ``ssl.SSLContext``
the netloop examples build from those flags. The process serves until SIGTERM or SIGINT, then exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

if not __package__:
    # run as a file (python bench/servers/aio.py): make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

DATE_REFRESH_S = 1.0
"""How often the HTTP date cache is refreshed, as the netloop HTTP example does."""

EXPIRE_INTERVAL_S = 0.1
"""How often the RESP store expires keys actively (Redis's default hz of 10)."""


class Session(Protocol):
    """A sans-I/O server session: bytes in, the response bytes and whether to close out."""

    def receive(self, data: bytes) -> tuple[bytes, bool]: ...


class _Streaming(asyncio.Protocol):
    """Holds the transport and stops reading while the peer is not reading what was written."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class EchoProtocol(_Streaming):
    """Writes every received byte back."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class SessionProtocol(_Streaming):
    """Feeds received bytes to a session and writes its responses."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def data_received(self, data: bytes) -> None:
        out, close = self.session.receive(data)
        if out:
            self.transport.write(out)
        if close:
            self.transport.close()


def _every(loop: asyncio.AbstractEventLoop, interval: float, job: Callable[[], object]) -> None:
    """Runs ``job`` now and then every ``interval`` seconds on ``loop``."""
    job()
    loop.call_later(interval, _every, loop, interval, job)


def protocol_factory(proto: str, loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Protocol]:
    """The protocol factory serving ``proto`` (echo, http or resp), with its periodic jobs scheduled."""
    if proto == "echo":
        return EchoProtocol
    if proto == "http":
        from bench import http_proto

        _every(loop, DATE_REFRESH_S, http_proto.DATE_CACHE.refresh)
        return lambda: SessionProtocol(http_proto.HttpSession())
    if proto == "resp":
        from resp_server.session import RespSession
        from resp_server.store import KeyValueStore

        store = KeyValueStore()
        loop.call_later(EXPIRE_INTERVAL_S, _every, loop, EXPIRE_INTERVAL_S, store.active_expire)
        return lambda: SessionProtocol(RespSession(store))
    raise ValueError(f"unknown protocol {proto!r}")


async def serve(proto: str, host: str, port: int, tls: ssl.SSLContext | None, fast: bool = False) -> None:
    """Serves ``proto`` on host:port (over TLS with ``tls``) until SIGTERM or SIGINT; through aiofastnet's
    transports when ``fast``."""
    loop = asyncio.get_running_loop()
    factory = protocol_factory(proto, loop)
    if fast:
        import aiofastnet

        server = await aiofastnet.create_server(loop, factory, host, port, ssl=tls)
    else:
        server = await loop.create_server(factory, host, port, ssl=tls)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    await stopped.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    """Parses the command line and serves until told to stop."""
    from examples.certs import add_tls_flags, tls_context

    parser = argparse.ArgumentParser(
        prog="python -m bench.servers.aio", description="Serve echo, HTTP or RESP on asyncio, uvloop or aiofastnet."
    )
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "aiofastnet"), default="asyncio")
    parser.add_argument("--proto", choices=("echo", "http", "resp"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    add_tls_flags(parser)
    args = parser.parse_args(argv)
    server = serve(args.proto, args.host, args.port, tls_context(args), fast=args.loop == "aiofastnet")
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(server)
    else:
        asyncio.run(server)


if __name__ == "__main__":
    main()
