"""Clients of ``python -m bench._responder`` for the leak soaks (bench/soak.py): downloads dropped at random points,
short-lived requests, handshake floods, and the responder's own counts (``GET /stats``)."""

from __future__ import annotations

import json
import random
import selectors
import socket
import ssl
import struct
import time

from bench._servers import HOST

Address = tuple[str, int]

LEAK_TIMEOUT_S = 10.0
"""How long one client may block on a send or receive."""


def _client(target: Address, ctx: ssl.SSLContext | None) -> socket.socket:
    raw = socket.create_connection(target, timeout=LEAK_TIMEOUT_S)
    if ctx is None:
        return raw
    try:
        return ctx.wrap_socket(raw, server_hostname=HOST)
    except BaseException:
        raw.close()
        raise


def _response(sock: socket.socket, limit: int | None = None) -> bytes:
    """One response's body (``limit``: stop after that many bytes of head and body, None: read it all)."""
    got = bytearray()
    while (end := got.find(b"\r\n\r\n")) < 0 or len(got) < end + 4 + _length(got[:end]):
        if limit is not None and len(got) >= limit:
            return b""
        chunk = sock.recv(1 << 16 if limit is None else max(1, min(1 << 16, limit - len(got))))
        if not chunk:
            raise ConnectionError(f"closed by the server after {len(got)} bytes")
        got += chunk
    return bytes(got[end + 4 :])


def _length(head: bytes | bytearray) -> int:
    for line in bytes(head).split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    raise ConnectionError(f"no Content-Length in {bytes(head)!r}")


def responder_stats(target: Address, ctx: ssl.SSLContext | None) -> dict[str, int]:
    """The responder's ``GET /stats``, less the connection that asks (it is open and alive while it asks)."""
    with _client(target, ctx) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\n\r\n")
        stats: dict[str, int] = json.loads(_response(sock))
    stats["open"] -= 1
    stats["live"] -= 1
    return stats


def dropped_downloads(target: Address, ctx: ssl.SSLContext | None, count: int, size: int, rng: random.Random) -> int:
    """``count`` clients each ask for ``size`` bytes, read a random part of the answer (none, some of the head,
    some of the body) and close without close_notify, half of them with a reset; returns how many it dropped."""
    for _ in range(count):
        with _client(target, ctx) as sock:
            sock.sendall(f"GET /{size} HTTP/1.1\r\n\r\n".encode())
            _response(sock, limit=rng.randrange(0, size))
            if rng.random() < 0.5:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return count


def short_requests(target: Address, ctx: ssl.SSLContext | None, count: int, rng: random.Random) -> int:
    """``count`` short-lived connections of one to three small requests each, every answer read in full, closed
    cleanly (close_notify first on TLS) or not; returns how many answers were whole."""
    whole = 0
    for _ in range(count):
        with _client(target, ctx) as sock:
            for _ in range(rng.randint(1, 3)):
                size = rng.randrange(0, 2048)
                sock.sendall(f"GET /{size} HTTP/1.1\r\n\r\n".encode())
                whole += len(_response(sock)) == size
            if isinstance(sock, ssl.SSLSocket) and rng.random() < 0.5:
                sock.unwrap().close()
    return whole


def handshake_flood(target: Address, ctx: ssl.SSLContext, count: int, rng: random.Random) -> int:
    """``count`` connections at once: most shake hands in parallel (one thread drives them all), the rest send
    junk, half a ClientHello or nothing; then all of them close at once. Returns the handshakes completed."""
    hello = _client_hello(ctx)
    done = 0
    socks: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        for _ in range(count):
            raw = socket.create_connection(target, timeout=LEAK_TIMEOUT_S)
            roll = rng.random()
            if roll < 0.7:
                raw.setblocking(False)
                tls = ctx.wrap_socket(raw, server_hostname=HOST, do_handshake_on_connect=False)
                socks.append(tls)
                selector.register(tls, selectors.EVENT_WRITE)
                continue
            if roll < 0.8:
                raw.sendall(rng.randbytes(rng.randrange(1, 600)))
            elif roll < 0.9:
                raw.sendall(hello[: rng.randrange(1, len(hello))])
            socks.append(raw)
        deadline = time.monotonic() + LEAK_TIMEOUT_S
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(0.5):
                tls = key.fileobj
                assert isinstance(tls, ssl.SSLSocket)
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    selector.modify(tls, selectors.EVENT_READ)
                    continue
                except ssl.SSLWantWriteError:
                    selector.modify(tls, selectors.EVENT_WRITE)
                    continue
                except OSError:
                    pass
                else:
                    done += 1
                selector.unregister(tls)
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    return done


def _client_hello(ctx: ssl.SSLContext) -> bytes:
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=HOST)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
