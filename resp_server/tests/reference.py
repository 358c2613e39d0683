"""A real redis-server as the reference for the RESP server's tests, and a raw RESP client that reads whole replies.

``redis_server()`` starts ``redis-server`` (the Redis 7.0 the CI installs) on a free port in a temporary directory,
with persistence off, and stops it afterwards; tests that need it are skipped where it is not installed.
:class:`RawClient` sends encoded requests on a plain socket and returns each reply's exact bytes, so tests can compare
this server's bytes with Redis's.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest

from resp_server.parser import encode_request

TIMEOUT = 10.0

# RESP types whose payload is the rest of the line, and those that carry a length (a bulk) or a count (an aggregate).
_LINE_TYPES = frozenset(b"+-:_,#(")
_BULK_TYPES = frozenset(b"$=!")
_AGGREGATE_TYPES = {ord("*"): 1, ord(">"): 1, ord("~"): 1, ord("%"): 2, ord("|"): 2}


def reply_end(data: bytes | bytearray, pos: int = 0) -> int:
    """Where the one complete RESP2/RESP3 reply starting at ``pos`` ends, or -1 when ``data`` holds only part of it."""
    eol = data.find(b"\r\n", pos)
    if eol < 0:
        return -1
    kind = data[pos]
    if kind in _LINE_TYPES:
        return eol + 2
    count = int(data[pos + 1 : eol])
    if kind in _BULK_TYPES:
        end = eol + 2 + max(count, 0) + (2 if count >= 0 else 0)
        return end if len(data) >= end else -1
    if kind not in _AGGREGATE_TYPES:
        raise ValueError(f"not a RESP reply at {pos}: {bytes(data[pos : pos + 20])!r}")
    pos = eol + 2
    for _ in range(max(count, 0) * _AGGREGATE_TYPES[kind]):
        pos = reply_end(data, pos)
        if pos < 0:
            return -1
    return pos


class RawClient:
    """A blocking RESP client on a plain socket: ``call(*args)`` is the exact bytes of the reply."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buffer = bytearray()

    def send(self, *args: bytes | str) -> None:
        self.sock.sendall(encode_request([a.encode() if isinstance(a, str) else a for a in args]))

    def read_reply(self) -> bytes:
        while True:
            end = reply_end(self.buffer) if self.buffer else -1
            if end >= 0:
                reply = bytes(self.buffer[:end])
                del self.buffer[:end]
                return reply
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"closed with {bytes(self.buffer[:200])!r} unread")
            self.buffer += chunk

    def call(self, *args: bytes | str) -> bytes:
        self.send(*args)
        return self.read_reply()

    def run(self, commands: Sequence[Sequence[bytes | str]]) -> list[bytes]:
        """Pipeline ``commands`` and return each reply's bytes, in order."""
        self.sock.sendall(
            b"".join(encode_request([a.encode() if isinstance(a, str) else a for a in c]) for c in commands)
        )
        return [self.read_reply() for _ in commands]

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A fresh redis-server on a free loopback port in a temporary directory; yields its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process = subprocess.Popen(
            [*argv, "--dir", directory], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            assert process.stdout is not None
            deadline = time.monotonic() + TIMEOUT
            seen = []
            # It logs "Ready to accept connections" once it has bound and loaded: wait for that line.
            while not any("Ready to accept connections" in line for line in seen[-1:]):
                ready, _, _ = select.select([process.stdout], [], [], max(deadline - time.monotonic(), 0))
                line = process.stdout.readline() if ready else ""
                if not line:
                    raise RuntimeError("redis-server did not start: " + "".join(seen))
                seen.append(line)
            yield port
        finally:
            process.terminate()
            process.wait(TIMEOUT)
            process.stdout.close()
