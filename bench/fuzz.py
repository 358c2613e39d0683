"""Protocol fuzzing against real servers: generated and mutated inputs, each on a fresh loopback connection.

    python -m bench.fuzz [--cases 100000] [--targets http-python,http-httptools,resp,codec] [--seed N]

Targets: the benchmark's HTTP server (``bench.servers.netloop_http``) with each parser, the RESP example's handler, and
netloop's framing codecs (``netloop.codec``) behind a small frame-echo server. Each input is sent in random
segments on its own connection, then the client half-closes and reads until the server closes. The reply must be
what the example's own sans-I/O session (or, for the codecs, a byte-at-a-time ``FrameDecoder``) makes of the same
bytes. Every ``--batch`` cases a health-check request on a separate connection must be answered, and the server's
log must show no traceback or internal error. Counted failures:

- wrong: a reply other than the session's (or a malformed frame stream);
- hang: neither a reply nor a close within ``--timeout`` seconds;
- reset: the connection was reset (ECONNRESET/EPIPE) instead of closed with FIN, which can destroy replies;
- loop errors: tracebacks or "internal error" lines in the server's log; unhealthy: a failed health check.

Reported but not counted as a failure: chunking, where the example's sans-I/O session itself answers differently
when the same bytes arrive in other segments (a property of the protocol code, not of the transport). For the
codecs, ``decode_bytes``, ``decoder().feed`` and ``decode(conn)`` all promise the same frames, so a disagreement
between them counts as wrong.

The RESP server (``python -m bench.fuzz --serve resp``) is ``resp_server.RespHandler`` with one keyspace
per connection on a frozen clock, so that replies are a function of the input alone. The exit status is 1 when a
failure was counted; tests/test_faults.py runs a few hundred cases.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib.util
import random
import re
import selectors
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import netloop
from bench._servers import HOST, Server
from bench.http_proto import HttpSession
from bench.soak import example_server, logged_errors
from netloop.codec import (
    DelimiterBasedFrameCodec,
    FixedLengthFrameCodec,
    FrameCodec,
    LengthFieldBasedFrameCodec,
    LineBasedFrameCodec,
)

TARGETS = ("http-python", "http-httptools", "resp", "codec")
FROZEN_MS = 1_700_000_000_000
"""The RESP fuzz server's clock (ms): expiry then depends on the commands alone, not on when they ran."""

KINDS = ("wrong", "hang", "reset")
"""How a single case can fail (see the module's docstring)."""

NOTES = ("chunking",)
"""What a case can show about the protocol code itself, reported but not counted as a failure."""

BYTEWISE_LIMIT = 64 * 1024
"""The longest input also fed to the protocol code one byte at a time when the server's reply is unexpected."""

BYTEWISE_SEND_LIMIT = 16 * 1024
"""The longest input sometimes sent one byte per segment (a send each, so it must stay well within a timeout)."""

# -- the codec frame-echo server --------------------------------------------------------------------------------

MAX_FRAME = 64
CODECS: tuple[FrameCodec, ...] = (
    LineBasedFrameCodec(max_frame_length=MAX_FRAME),
    LineBasedFrameCodec(b"\n", max_frame_length=MAX_FRAME),
    DelimiterBasedFrameCodec(b"||", max_frame_length=MAX_FRAME),
    DelimiterBasedFrameCodec(b"\x00", strip_delimiter=False, max_frame_length=MAX_FRAME),
    FixedLengthFrameCodec(7, max_frame_length=MAX_FRAME),
    LengthFieldBasedFrameCodec(length_field_length=2, max_frame_length=MAX_FRAME),
    LengthFieldBasedFrameCodec(
        length_field_offset=1,
        length_field_length=3,
        length_adjustment=2,
        initial_bytes_to_strip=0,
        byteorder="little",
        max_frame_length=MAX_FRAME,
    ),
    LengthFieldBasedFrameCodec(
        length_field_length=1, length_adjustment=-1, initial_bytes_to_strip=1, max_frame_length=MAX_FRAME
    ),
    LengthFieldBasedFrameCodec(length_field_length=8, max_frame_length=MAX_FRAME),
)
"""The codecs the frame-echo server speaks; a connection's first byte (modulo their number) picks one."""


def codec_of(selector: int) -> FrameCodec:
    return CODECS[selector % len(CODECS)]


def frame_reply(frame: bytes) -> bytes:
    return b"F" + len(frame).to_bytes(4, "big") + frame


class CodecEcho(netloop.EventHandler):
    """Answers each frame with ``b"F"``, its 4-byte length and itself (``decode(conn)``, the server path).

    A codec error is answered ``b"EL"`` (frame too long) or ``b"EC"`` (malformed), then the connection closes.
    """

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        codec = conn.context
        if codec is None:
            codec = conn.context = codec_of(conn.next(1)[0])
        try:
            frames = codec.decode(conn)
        except netloop.FrameTooLongError:
            conn.write(b"EL")
            return netloop.Action.CLOSE
        except netloop.CodecError:
            conn.write(b"EC")
            return netloop.Action.CLOSE
        if frames:
            conn.writev([frame_reply(frame) for frame in frames])
        return None


def isolated_resp() -> netloop.EventHandler:
    """The RESP server's handler with a keyspace of its own per connection, on the frozen clock (imported here: only
    the RESP target needs the resp_server package)."""
    from resp_server import KeyValueStore, RespHandler, RespSession

    class IsolatedResp(RespHandler):
        def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
            conn.context = RespSession(KeyValueStore(clock=lambda: FROZEN_MS))
            return None

    return IsolatedResp()


def serve(kind: str, port: int) -> None:
    """``python -m bench.fuzz --serve resp|codec --port P``: one of the fuzz servers, until SIGTERM."""
    handler: netloop.EventHandler = isolated_resp() if kind == "resp" else CodecEcho()
    host = f"[{HOST}]" if ":" in HOST else HOST
    netloop.run(handler, f"tcp://{host}:{port}", ticker=kind == "resp")


# -- one exchange ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Exchange:
    """What the server did with one input: its reply bytes and how the connection ended."""

    output: bytes
    end: str  # "eof", "hang", or the error's name (ConnectionResetError, BrokenPipeError, ...)
    send_error: str | None = None

    @property
    def reset(self) -> bool:
        resets = ("ConnectionResetError", "BrokenPipeError")
        return self.end in resets or self.send_error in resets


def exchange(target: tuple[str, int], segments: Sequence[bytes], timeout: float) -> Exchange:
    """Send ``segments`` (one send each), half-close, and read until the server closes or ``timeout`` passes.

    Sending and reading interleave in one thread, so a server that answers while the input is still arriving
    never deadlocks against a client that is not reading.
    """
    deadline = time.monotonic() + timeout
    output = bytearray()
    send_error: str | None = None
    with socket.create_connection(target, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one segment per send
        sock.setblocking(False)
        pending = [memoryview(s) for s in segments if s]
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0))
            if not pending:
                sock.shutdown(socket.SHUT_WR)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return Exchange(bytes(output), "hang", send_error)
                for _key, mask in selector.select(left):
                    if mask & selectors.EVENT_WRITE:
                        try:
                            sent = sock.send(pending[0])
                            pending[0] = pending[0][sent:]
                            if not pending[0]:
                                pending.pop(0)
                            if not pending:
                                sock.shutdown(socket.SHUT_WR)
                        except BlockingIOError:
                            pass
                        except OSError as exc:
                            send_error = type(exc).__name__
                            pending.clear()
                        if not pending:
                            selector.modify(sock, selectors.EVENT_READ)
                    if mask & selectors.EVENT_READ:
                        try:
                            chunk = sock.recv(1 << 16)
                        except BlockingIOError:
                            continue
                        except OSError as exc:
                            return Exchange(bytes(output), type(exc).__name__, send_error)
                        if not chunk:
                            return Exchange(bytes(output), "eof", send_error)
                        output += chunk


# -- targets ---------------------------------------------------------------------------------------------------


DATE = re.compile(rb"\r\nDate: [^\r\n]*\r\n")


def undated(responses: bytes) -> bytes:
    """HTTP responses with every Date header's value blanked out (it changes once a second)."""
    return DATE.sub(b"\r\nDate: -\r\n", responses)


class Target:
    """A server to fuzz: how to start it, inputs for it, the reply its protocol code gives, a health check."""

    name = ""
    tokens: tuple[bytes, ...] = ()  # byte strings a mutation may splice in

    def argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def generate(self, rng: random.Random) -> bytes:
        raise NotImplementedError

    def reference(self, segments: Sequence[bytes]) -> bytes:
        """The reply the protocol code gives when the input arrives in these segments."""
        raise NotImplementedError

    def health(self) -> tuple[bytes, bytes]:
        """A request and the exact start of its answer (the connection then stays open)."""
        raise NotImplementedError

    def verdict(self, segments: Sequence[bytes], result: Exchange) -> str | None:
        """None when the server did right with ``segments``, else one of KINDS or NOTES.

        The server's own reads may cut the input anywhere, so a reply that matches the protocol code fed the
        whole input, or fed it in the client's segments, is right. Where those two (or a byte-at-a-time feed)
        disagree, the protocol code itself depends on the cutting: that is noted as ``chunking``, not failed.
        """
        if result.end == "hang":
            return "hang"
        if result.reset:
            return "reset"
        if result.end != "eof":
            return "wrong"
        data = b"".join(segments)
        whole, pieces = self.reference([data]), self.reference(segments)
        if result.output in (whole, pieces):
            return None if whole == pieces else "chunking"
        if whole != pieces:
            return "chunking"
        if len(data) <= BYTEWISE_LIMIT and self.reference([data[i : i + 1] for i in range(len(data))]) != whole:
            return "chunking"
        return "wrong"


class HttpTarget(Target):
    tokens = (
        b"\r\n",
        b"\r\n\r\n",
        b"\n",
        b" ",
        b":",
        b"\x00",
        b"Content-Length: 5\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"0\r\n\r\n",
        b"ffffffffffffffff\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.0",
    )

    def __init__(self, parser: str) -> None:
        self.parser = parser
        self.name = f"http-{parser}"

    def argv(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bench.servers.netloop_http",
            "--host",
            HOST,
            "--port",
            str(port),
            "--parser",
            self.parser,
        ]

    def generate(self, rng: random.Random) -> bytes:
        return b"".join(http_request(rng) for _ in range(rng.choice((1, 1, 1, 2, 3, 5))))

    def reference(self, segments: Sequence[bytes]) -> bytes:
        session = HttpSession(self.parser)
        return undated(b"".join(session.receive(segment)[0] for segment in segments))

    def verdict(self, segments: Sequence[bytes], result: Exchange) -> str | None:
        return super().verdict(segments, dataclasses.replace(result, output=undated(result.output)))

    def health(self) -> tuple[bytes, bytes]:
        return b"GET /health HTTP/1.1\r\nHost: fuzz\r\n\r\n", b"HTTP/1.1 200 OK\r\n"


METHODS = (b"GET", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"BREW", b"get")
PATHS = (b"/", b"/plaintext", b"/a/b?c=d&e", b"*", b"http://example.com/x", b"/%00", b"/" + b"a" * 300, b"")
VERSIONS = (b"HTTP/1.1",) * 6 + (b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/11", b"http/1.1", b"")


def http_request(rng: random.Random) -> bytes:
    """One HTTP/1.x request, usually well-formed, sometimes with odd framing, fields or line ends."""
    eol = b"\r\n" if rng.random() < 0.9 else b"\n"
    method, path, version = rng.choice(METHODS), rng.choice(PATHS), rng.choice(VERSIONS)
    fields: list[bytes] = []
    if rng.random() < 0.9:
        fields.append(b"Host: fuzz")
    body = rng.randbytes(rng.choice((0, 0, 1, 5, 100, 3000)))
    framing = rng.choice(("none", "none", "length", "length", "chunked", "both", "bad-length", "declared-huge"))
    if framing in ("length", "both"):
        fields.append(b"Content-Length: %d" % len(body))
    if framing == "bad-length":
        fields.append(b"Content-Length: " + rng.choice((b"-1", b"abc", b"1 2", b"0x10", b"+5", b"", b"5, 5")))
    if framing == "declared-huge":
        fields.append(b"Content-Length: %d" % rng.choice((1 << 20, (1 << 20) + 1, 1 << 40, 10**30)))
    if framing in ("chunked", "both"):
        fields.append(b"Transfer-Encoding: " + rng.choice((b"chunked", b"chunked", b"gzip, chunked", b"chunked, gzip")))
    for _ in range(rng.choice((0, 0, 1, 2, 4))):
        fields.append(
            rng.choice(
                (
                    b"Connection: " + rng.choice((b"close", b"keep-alive", b"upgrade", b"keep-alive, close", b"")),
                    b"Upgrade: websocket",
                    b"Expect: 100-continue",
                    b"X-Fuzz: " + rng.randbytes(rng.choice((1, 10, 100))).replace(b"\n", b"n"),
                    b"X-Long: " + b"a" * rng.choice((100, 5000, 9000)),
                    b"Content-Length: 0",
                    b"Bad Name: x",
                    b": no name",
                    b"X-Folded: a" + eol + b" b",
                    b"Transfer-Encoding: identity",
                )
            )
        )
    head = method + b" " + path + b" " + version + eol + b"".join(f + eol for f in fields) + eol
    if framing == "chunked" or (framing == "both" and rng.random() < 0.5):
        return head + chunked(body, eol, rng)
    if framing in ("length", "both"):
        return head + body
    return head


def chunked(body: bytes, eol: bytes, rng: random.Random) -> bytes:
    """``body`` in chunked transfer coding, with the odd extension, trailer or oversized final stretch."""
    out = bytearray()
    pos = 0
    while pos < len(body):
        size = rng.randint(1, max(1, len(body) - pos))
        ext = rng.choice((b"", b"", b";a=b", b";" + b"x" * 50))
        size_text = b"%x" % size if rng.random() < 0.95 else b"%X" % size
        out += size_text + ext + eol + body[pos : pos + size] + eol
        pos += size
    if rng.random() < 0.01:
        big = (1 << 20) + 10  # a chunked body over the 1 MiB limit: 413
        out += b"%x" % big + eol + bytes(big) + eol
    out += b"0" + eol
    if rng.random() < 0.2:
        out += b"Trailer-Field: x" + eol
    return bytes(out + eol)


class RespTarget(Target):
    name = "resp"
    tokens = (
        b"\r\n",
        b"*-1\r\n",
        b"$-1\r\n",
        b"*0\r\n",
        b"*99999999999\r\n",
        b"$2147483648\r\n",
        b"$0\r\n\r\n",
        b'"',
        b"'",
        b"\\x4",
        b"\x00",
        b" ",
        b"*1\r\n$4\r\nPING\r\n",
        b"MULTI\r\n",
        b"EXEC\r\n",
    )

    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "bench.fuzz", "--serve", "resp", "--port", str(port)]

    def generate(self, rng: random.Random) -> bytes:
        return b"".join(resp_request(rng) for _ in range(rng.choice((1, 1, 2, 3, 8))))

    def reference(self, segments: Sequence[bytes]) -> bytes:
        from resp_server import KeyValueStore, RespSession

        session = RespSession(KeyValueStore(clock=lambda: FROZEN_MS))
        return b"".join(session.receive(segment)[0] for segment in segments)

    def health(self) -> tuple[bytes, bytes]:
        return b"PING\r\n", b"+PONG\r\n"


RESP_KEYS = (b"k", b"k", b"key:1", b"", b"*", b"a b", b"\x00", b"k?")
RESP_NUMBERS = (
    b"0",
    b"1",
    b"-1",
    b"10",
    b"100000",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"9223372036854775808",
    b"1.5",
    b"abc",
    b"",
    b"+5",
    b" 5",
)


def resp_command(rng: random.Random) -> list[bytes]:
    key, value, number = rng.choice(RESP_KEYS), rng.randbytes(rng.choice((0, 1, 5, 50))), rng.choice(RESP_NUMBERS)
    option = rng.choice((b"EX", b"PX", b"EXAT", b"PXAT", b"NX", b"XX", b"KEEPTTL", b"GET", b"GT", b"LT", b"ASYNC"))
    shapes = (
        [b"PING"],
        [b"PING", value],
        [b"ECHO", value],
        [b"GET", key],
        [b"SET", key, value],
        [b"SET", key, value, option, number],
        [b"SET", key, number, option],
        [b"DEL", key, rng.choice(RESP_KEYS)],
        [b"EXISTS", key, key],
        [b"INCR", key],
        [b"DECR", key],
        [b"INCRBY", key, number],
        [b"DECRBY", key, number],
        [b"MGET", key, rng.choice(RESP_KEYS)],
        [b"MSET", key, value, rng.choice(RESP_KEYS)],
        [b"EXPIRE", key, number],
        [b"PEXPIRE", key, number, option],
        [b"TTL", key],
        [b"PTTL", key],
        [b"KEYS", rng.choice((b"*", b"k*", b"[a-", b"\\", b"?", b"[^k]*", key))],
        [b"DBSIZE"],
        [b"FLUSHDB", option],
        [b"FLUSHALL"],
        [b"SELECT", number],
        [b"CONFIG", rng.choice((b"GET", b"SET", b"RESETSTAT", b"x")), key],
        [b"COMMAND", rng.choice((b"COUNT", b"DOCS", b"INFO", b"x"))],
        [b"HELLO", rng.choice((b"2", b"3", b"x"))],
        [b"MULTI"],
        [b"EXEC"],
        [b"DISCARD"],
        [b"QUIT"] if rng.random() < 0.2 else [b"PING"],
        [b"NOSUCH", value],
        [rng.choice((b"get", b"Set", b"incr")), key, value],
    )
    return rng.choice(shapes)


def resp_request(rng: random.Random) -> bytes:
    """One RESP request: a multibulk array, or now and then an inline command (with the odd quoting)."""
    args = resp_command(rng)
    if rng.random() < 0.85:
        from resp_server import encode_request

        return encode_request(args)
    words = [arg if rng.random() < 0.8 else b'"' + arg.replace(b'"', b'\\"') + b'"' for arg in args]
    return b" ".join(words) + rng.choice((b"\r\n", b"\n"))


class CodecTarget(Target):
    name = "codec"
    tokens = (b"\r\n", b"\n", b"||", b"|", b"\x00", b"\xff\xff", b"\x00\x00\x00\x00\x00\x00\x00\x00", b"\x7f")

    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "bench.fuzz", "--serve", "codec", "--port", str(port)]

    def generate(self, rng: random.Random) -> bytes:
        selector = rng.randrange(len(CODECS))
        codec = codec_of(selector)
        out = bytearray([selector])
        for _ in range(rng.choice((0, 1, 2, 3, 6))):
            payload = rng.randbytes(rng.choice((0, 1, 3, 7, 20, MAX_FRAME - 4, MAX_FRAME + 10)))
            try:
                out += codec.encode(payload)
            except ValueError:
                out += payload  # this framing cannot carry it: send it raw, a malformed stream
        if rng.random() < 0.3:
            out += rng.randbytes(rng.randint(1, 5))  # a partial frame at the end
        return bytes(out)

    def reference(self, segments: Sequence[bytes]) -> bytes:
        frames, error = decode_stream(b"".join(segments))
        return b"".join(frame_reply(f) for f in frames) + (b"E" + error if error else b"")

    def verdict(self, segments: Sequence[bytes], result: Exchange) -> str | None:
        """The server's frames must be the stream decoder's; on an error, a prefix of them, then the same error.

        ``decode(conn)`` drops the frames it found in the call that raised, so fewer may precede the error.
        """
        if result.end == "hang":
            return "hang"
        if result.reset:
            return "reset"
        data = b"".join(segments)
        frames, error = decode_stream(data)
        if not sans_io_agrees(data, frames, error):
            return "wrong"  # the codec's own entry points disagree: every one promises the same frames
        got, got_error = parse_frame_replies(result.output)
        if result.end != "eof" or got is None or got_error != error:
            return "wrong"
        if error is None:
            return None if got == frames else "wrong"
        return None if got == frames[: len(got)] else "wrong"

    def health(self) -> tuple[bytes, bytes]:
        return b"\x00ping\r\n", frame_reply(b"ping")


def decode_stream(data: bytes) -> tuple[list[bytes], bytes | None]:
    """The frames of ``data`` (selector byte first) fed one byte at a time, and the error that ended them."""
    if not data:
        return [], None
    decoder = codec_of(data[0]).decoder()
    frames: list[bytes] = []
    for i in range(1, len(data)):
        try:
            frames += decoder.feed(data[i : i + 1])
        except netloop.FrameTooLongError:
            return frames, b"L"
        except netloop.CodecError:
            return frames, b"C"
    return frames, None


def sans_io_agrees(data: bytes, frames: list[bytes], error: bytes | None) -> bool:
    """Whether ``decode_bytes`` on the whole input agrees with the byte-at-a-time decoder."""
    if not data:
        return True
    codec = codec_of(data[0])
    try:
        whole, consumed = codec.decode_bytes(data[1:])
    except netloop.FrameTooLongError:
        return error == b"L"
    except netloop.CodecError:
        return error == b"C"
    if error is not None:
        return False
    decoder = codec.decoder()
    rest = decoder.feed(data[1:])
    return whole == frames == rest and len(data) - 1 - consumed == decoder.buffered


def parse_frame_replies(output: bytes) -> tuple[list[bytes] | None, bytes | None]:
    """The frames and final error of the frame-echo server's output; (None, None) if it is malformed."""
    frames = []
    pos = 0
    while pos < len(output):
        kind = output[pos : pos + 1]
        if kind == b"E" and pos + 2 == len(output) and output[pos + 1 :] in (b"L", b"C"):
            return frames, output[pos + 1 :]
        if kind != b"F" or pos + 5 > len(output):
            return None, None
        size = int.from_bytes(output[pos + 1 : pos + 5], "big")
        if pos + 5 + size > len(output):
            return None, None
        frames.append(output[pos + 5 : pos + 5 + size])
        pos += 5 + size
    return frames, None


def make_target(name: str) -> Target:
    if name.startswith("http-"):
        return HttpTarget(name[len("http-") :])
    return RespTarget() if name == "resp" else CodecTarget()


def unavailable(name: str) -> str | None:
    """Why target ``name`` cannot run here, or None."""
    if name not in TARGETS:
        return f"unknown target {name!r}; choose from {', '.join(TARGETS)}"
    if name == "http-httptools" and importlib.util.find_spec("httptools") is None:
        return "httptools is not installed"
    return None


# -- inputs ----------------------------------------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random, tokens: Sequence[bytes], other: Callable[[], bytes]) -> bytes:
    """``data`` after one to four random edits: bit flips, inserts, deletions, repeats, tokens, splices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(0, len(out))
        op = rng.randrange(8)
        if op == 0 and out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 2:
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 3:
            end = min(len(out), pos + rng.randint(1, 64))
            out[pos:pos] = out[pos:end] * rng.randint(1, 4)
        elif op == 4:
            out[pos:pos] = rng.choice(tokens)
        elif op == 5:
            out[pos : pos + 1] = rng.choice(tokens)
        elif op == 6:
            del out[pos:]
        else:
            piece = other()
            start = rng.randint(0, len(piece))
            out[pos:pos] = piece[start:]
    return bytes(out)


def case_input(target: Target, seed: int, index: int) -> list[bytes]:
    """Case ``index``: a generated (one in four) or mutated input, cut into the segments it is sent in."""
    rng = random.Random(f"{seed}/{target.name}/{index}")
    data = target.generate(rng)
    if rng.random() < 0.75:
        data = mutate(data, rng, target.tokens, lambda: target.generate(rng))
    cuts = rng.choice((0, 0, 1, 2, 3, 15))
    if cuts and 1 < len(data) <= BYTEWISE_SEND_LIMIT and rng.random() < 0.05:
        cuts = len(data) - 1  # byte by byte
    points = sorted(rng.sample(range(1, len(data)), min(cuts, len(data) - 1))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# -- a run -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TargetReport:
    """One target's run: cases by verdict, loop errors and failed health checks, and a few failing inputs."""

    target: str
    cases: int = 0
    failed: Counter[str] = dataclasses.field(default_factory=Counter)
    noted: Counter[str] = dataclasses.field(default_factory=Counter)
    loop_errors: list[str] = dataclasses.field(default_factory=list)
    unhealthy: list[str] = dataclasses.field(default_factory=list)
    examples: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    @property
    def failures(self) -> int:
        return self.failed.total() + len(self.loop_errors) + len(self.unhealthy)

    def summary(self) -> str:
        if self.skipped:
            return f"{self.target}: skipped ({self.skipped})"
        counts = ", ".join(f"{kind} {self.failed[kind]}" for kind in KINDS)
        counts += "".join(f", {note} {self.noted[note]} (noted)" for note in NOTES)
        rate = self.cases / max(self.seconds, 1e-9)
        return (
            f"{self.target}: {self.cases:,} cases in {self.seconds:.1f} s ({rate:,.0f}/s); {counts}, "
            f"loop errors {len(self.loop_errors)}, failed health checks {len(self.unhealthy)}"
        )


def healthy(target: Target, where: tuple[str, int], timeout: float) -> str | None:
    """None if a well-formed request on a new connection is answered, else what went wrong."""
    request, answer = target.health()
    try:
        with socket.create_connection(where, timeout=timeout) as sock:
            sock.sendall(request)
            got = b""
            while len(got) < len(answer):
                chunk = sock.recv(len(answer) - len(got))
                if not chunk:
                    return f"closed after {got!r}"
                got += chunk
    except OSError as exc:
        return repr(exc)
    return None if got == answer else f"answered {got!r}"


def fuzz_target(
    target: Target, server: Server, cases: int, seed: int, concurrency: int, batch: int, timeout: float
) -> TargetReport:
    """Run ``cases`` inputs against ``server`` (already listening), ``batch`` at a time."""
    report = TargetReport(target.name)
    where = (HOST, server.port)
    began = time.monotonic()

    def run_case(index: int) -> tuple[int, list[bytes], Exchange, str | None]:
        segments = case_input(target, seed, index)
        try:
            result = exchange(where, segments, timeout)
        except OSError as exc:  # the connect itself failed
            result = Exchange(b"", "refused:" + (errno.errorcode.get(exc.errno or 0) or repr(exc)))
        return index, segments, result, target.verdict(segments, result)

    seen_errors = 0
    with ThreadPoolExecutor(concurrency) as pool:
        for first in range(0, cases, batch):
            for index, segments, result, kind in pool.map(run_case, range(first, min(cases, first + batch))):
                report.cases += 1
                if kind is None:
                    continue
                (report.noted if kind in NOTES else report.failed)[kind] += 1
                if len([e for e in report.examples if e.startswith(f"[{kind}]")]) < 3:
                    data = b"".join(segments)
                    report.examples.append(
                        f"[{kind}] case {index} ({len(segments)} segments, ended {result.end}, send error "
                        f"{result.send_error}): input {data[:300]!r}{'...' if len(data) > 300 else ''} "
                        f"-> got {result.output[:300]!r}, expected {target.reference([data])[:300]!r}"
                    )
            problem = healthy(target, where, timeout)
            if problem is not None:
                report.unhealthy.append(f"after case {first + batch}: {problem}")
            errors = logged_errors(server)
            report.loop_errors += errors[seen_errors:]
            seen_errors = len(errors)
    report.seconds = time.monotonic() - began
    return report


def fuzz(
    targets: Sequence[str],
    cases: int,
    seed: int,
    concurrency: int = 8,
    batch: int = 500,
    timeout: float = 3.0,
    server_cpu: int = 0,
    log_dir: Path | None = None,
) -> list[TargetReport]:
    """Fuzz each target with ``cases`` inputs (split evenly) against its own server process."""
    reports = []
    per_target = max(1, cases // max(1, len(targets)))
    with tempfile.TemporaryDirectory(prefix="netloop-fuzz-") as tmp:
        logs = log_dir or Path(tmp)
        for name in targets:
            why = unavailable(name)
            if why is not None:
                reports.append(TargetReport(name, skipped=why))
                continue
            target = make_target(name)
            with example_server(name, target.argv, logs, server_cpu) as server:
                reports.append(fuzz_target(target, server, per_target, seed, concurrency, batch, timeout))
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="inputs in all, split over the targets")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated (default {','.join(TARGETS)})")
    parser.add_argument("--seed", type=int, default=int.from_bytes(random.randbytes(4), "big"))
    parser.add_argument("--concurrency", type=int, default=8, help="connections at once (default 8)")
    parser.add_argument("--batch", type=int, default=500, help="cases between health checks (default 500)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds a case may take (default 3)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to (default 0)")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here")
    parser.add_argument("--serve", choices=("resp", "codec"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = [name for name in targets if name not in TARGETS]
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    print(f"seed {args.seed}", flush=True)
    failures = 0
    for report in fuzz(
        targets, args.cases, args.seed, args.concurrency, args.batch, args.timeout, args.server_cpu, args.log_dir
    ):
        print(report.summary(), flush=True)
        for line in report.examples + report.loop_errors[:10] + report.unhealthy[:10]:
            print("  " + line)
        failures += report.failures
    print("ok" if failures == 0 else f"FAILED: {failures} failures")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
