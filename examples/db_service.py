"""A TCP service whose handler awaits a database: ``async def on_traffic`` asks Redis (redis.asyncio) on the
connection's own loop, and the connection's replies keep its requests' order while the awaits run.

One request a line, one reply a line:
    SET key value -> OK      GET key -> value or (nil)      PUSH key value -> length
    TAKE key -> the oldest value pushed to key, waiting up to 5 s for one, else (nil)
Anything else gets ``ERR ...``; a line longer than 1 KiB gets ``ERR line too long`` and the connection is closed.
A client that resets while its request is awaited cancels the await (Redis forgets a pending TAKE); a plain close
is seen once the await ends (reading is held while it runs: docs/asyncio.md).

python -m examples.db_service --port 9010 [--redis redis://127.0.0.1:6379/0] [--loops N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import redis.asyncio

import netloop

MAX_LINE = 1024
TAKE_WAIT = 5  # seconds a TAKE waits for a value


class DbService(netloop.EventHandler):
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        # One client (and connection pool) per event loop: a pool belongs to the asyncio loop it was made on.
        self.clients: dict[asyncio.AbstractEventLoop, redis.asyncio.Redis] = {}

    def client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if loop not in self.clients:
            self.clients[loop] = redis.asyncio.Redis.from_url(self.redis_url, decode_responses=True)
        return self.clients[loop]

    async def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.peek()
        end = data.rfind(b"\n") + 1
        conn.discard(end)
        for line in data[:end].splitlines():
            conn.write((await self.answer(line)).encode() + b"\n")
        if conn.inbound_buffered() > MAX_LINE:
            conn.write(b"ERR line too long\n")
            return netloop.Action.CLOSE
        return None

    async def answer(self, line: bytes) -> str:
        try:
            command, *args = line.decode().split()
        except (UnicodeDecodeError, ValueError):
            return "ERR expected: COMMAND key [value]"
        db, command = self.client(), command.upper()
        if command == "SET" and len(args) == 2:
            await db.set(args[0], args[1])
            return "OK"
        if command == "GET" and len(args) == 1:
            value = await db.get(args[0])
            return "(nil)" if value is None else str(value)
        if command == "PUSH" and len(args) == 2:
            return str(await db.rpush(args[0], args[1]))
        if command == "TAKE" and len(args) == 1:
            popped = await db.blpop([args[0]], timeout=TAKE_WAIT)
            return "(nil)" if popped is None else str(popped[1])
        return f"ERR unknown command or wrong arguments: {command[:32]!r}"

    def on_shutdown(self, engine: netloop.Engine) -> None:
        # The loops' asyncio loops close with the engine, and their clients' connections with them.
        self.clients.clear()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9010)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the database's URL")
    parser.add_argument("--loops", type=int, default=1, help="event loops (threads)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.info("db service on tcp://%s:%d, database %s", args.host, args.port, args.redis)
    netloop.run(DbService(args.redis), f"tcp://{args.host}:{args.port}", num_event_loop=args.loops)


if __name__ == "__main__":
    main()
