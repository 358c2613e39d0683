"""Real asyncio libraries on netloop's loops, against real servers the tests start: redis.asyncio against
redis-server, asyncpg against a private PostgreSQL cluster, httpx's AsyncClient and aiohttp's client against a
stdlib HTTP server. Each is used from ``netloop.aio.run`` and from inside an ``async def on_traffic``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import TIMEOUT, connect, recv_exact, serving

import netloop
import netloop.aio
from bench.resp_differential import free_port
from bench.resp_differential import redis_server as _redis_server

# -- the servers -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    with _redis_server() as port:
        yield f"redis://127.0.0.1:{port}/0"


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found is not None:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A private PostgreSQL cluster in a temporary directory on a free loopback port; yields its DSN.

    PostgreSQL refuses to run as root: as root the cluster is made and run by the ``postgres`` user.
    """
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs it)")
    prefix: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="netloop-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(directory)
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(directory)
            pytest.skip("running as root without runuser to run PostgreSQL as the postgres user")
        os.chown(directory, user.pw_uid, user.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    data, port = directory / "data", free_port()

    def run(*argv: str) -> None:
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=60)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-k {directory} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    pytest.importorskip("asyncpg")
    with postgres_cluster() as dsn:
        yield dsn


class _Answer(http.server.BaseHTTPRequestHandler):
    """``GET /<word>`` answers ``word`` reversed, as JSON."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"reversed": self.path.lstrip("/")[::-1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


# -- what each library does: a word in, an answer from the server out -----------------------------------------


async def ask_redis(url: str, word: str) -> str:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.set(f"netloop:{word}", word.upper())
        async with client.pipeline(transaction=True) as pipe:
            pipe.get(f"netloop:{word}").incr(f"netloop:count:{word}")
            value, _ = await pipe.execute()
        return bytes(value).decode()
    finally:
        await client.aclose()


async def ask_postgres(dsn: str, word: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS words (word text)")
            await conn.execute("INSERT INTO words VALUES ($1)", word)
            answer = await conn.fetchval("SELECT upper(word) FROM words WHERE word = $1", word)
        return str(answer)
    finally:
        await conn.close()


async def ask_httpx(url: str, word: str) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=url) as client:
        first, second = await client.get(f"/{word}"), await client.get(f"/{word}")  # the second reuses the connection
        assert first.json() == second.json()
        return str(first.json()["reversed"])


async def ask_aiohttp(url: str, word: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession(url) as session, session.get(f"/{word}") as response:
        response.raise_for_status()
        return str((await response.json())["reversed"])


LIBRARIES: dict[str, tuple[str, Callable[[str, str], Awaitable[str]], Callable[[str], str]]] = {
    "redis": ("redis_url", ask_redis, str.upper),
    "asyncpg": ("postgres_dsn", ask_postgres, str.upper),
    "httpx": ("http_url", ask_httpx, lambda word: word[::-1]),
    "aiohttp": ("http_url", ask_aiohttp, lambda word: word[::-1]),
}
"""library -> (the fixture of its server, what it asks, the answer expected for a word)."""


def _library(name: str, request: pytest.FixtureRequest) -> tuple[str, Callable[[str, str], Awaitable[str]], str]:
    fixture, ask, expect = LIBRARIES[name]
    pytest.importorskip({"redis": "redis.asyncio"}.get(name, name))
    return request.getfixturevalue(fixture), ask, expect("netloop")


LIBRARY_PARAMS = [pytest.param(name, marks=pytest.mark.slow) if name == "asyncpg" else name for name in LIBRARIES]


@pytest.mark.parametrize("name", LIBRARY_PARAMS)
def test_library_under_netloop_aio_run(name: str, request: pytest.FixtureRequest) -> None:
    server, ask, expected = _library(name, request)

    async def main() -> tuple[str, str]:
        import asyncio

        return await ask(server, "netloop"), type(asyncio.get_running_loop()).__name__

    assert netloop.aio.run(main()) == (expected, "Loop")


class Asker(netloop.EventHandler):
    """Each line is a word; the answer the library got from its server for it is written back, in order."""

    def __init__(self, server: str, ask: Callable[[str, str], Awaitable[str]]) -> None:
        self.server = server
        self.ask = ask

    async def on_traffic(self, conn: netloop.Conn) -> None:
        data = conn.peek()
        end = data.rfind(b"\n") + 1
        conn.discard(end)
        for line in data[:end].splitlines():
            conn.write((await self.ask(self.server, line.decode())).encode() + b"\n")


@pytest.mark.parametrize("name", LIBRARY_PARAMS)
@pytest.mark.parametrize("kind", ["tcp", "edge"])
def test_library_inside_an_async_handler(name: str, kind: str, request: pytest.FixtureRequest) -> None:
    server, ask, expected = _library(name, request)
    make_answer = LIBRARIES[name][2]
    words = ["netloop", "loop", "asyncio"]
    answers = b"".join(make_answer(word).encode() + b"\n" for word in words)
    assert answers.startswith(expected.encode())
    with (
        serving(Asker(server, ask), "tcp://127.0.0.1:0", edge_triggered=kind == "edge") as engine,
        connect(engine.addrs[0]) as sock,
    ):
        sock.sendall(b"netloop\nloop\n")  # pipelined: the replies keep the requests' order
        sock.sendall(b"asyncio\n")
        assert recv_exact(sock, len(answers)) == answers
        assert engine.stats()["handler_errors"] == 0
