"""Differential testing of the RESP server against a real redis-server 7.0: generated command sequences, reply bytes
compared.

    python -m bench.resp_differential [--sequences 20000] [--seed 1] [--show 10]

Each sequence (a few commands from :mod:`bench.resp_generator`'s families, over keys that every type shares, with
argument edge cases, mangled commands, MULTI blocks, WATCH and pub/sub) runs on a fresh keyspace of a redis-server
and of ``python -m resp_server``, both started here, in RESP2 or RESP3 (``HELLO 3``), pipelined over raw sockets.
Replies must be byte-for-byte Redis's, but where Redis's own differ from run to run: the items of a reply whose order
is a hash table's are compared sorted (:data:`NORMALIZE`), a random pick by its shape, an expiry read back within
the two clocks' distance (:data:`NEAR`). A difference that is known and accepted is counted under its reason in
:data:`ALLOWED` or :data:`ALLOWED_REPLIES`; any other is a failure. The exit status is 1 when there was one.
``resp_server/tests/test_differential.py`` runs 100,000 sequences in CI; this runs as many as asked.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from bench.resp_generator import Random, sequence
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

    def send_all(self, commands: Sequence[Sequence[bytes | str]]) -> None:
        """Pipeline ``commands`` in one write."""
        self.sock.sendall(
            b"".join(encode_request([a.encode() if isinstance(a, str) else a for a in c]) for c in commands)
        )

    def read_replies(self, count: int) -> list[bytes]:
        return [self.read_reply() for _ in range(count)]

    def run(self, commands: Sequence[Sequence[bytes | str]]) -> list[bytes]:
        """Pipeline ``commands`` and return each reply's bytes, in order."""
        self.send_all(commands)
        return self.read_replies(len(commands))

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(*options: str) -> Iterator[int]:
    """A fresh redis-server on a free loopback port in a temporary directory, with ``options`` added to its command
    line; yields its port (FileNotFoundError where none is installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (.ci/run installs it)")
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *options]
        process = subprocess.Popen([*argv, "--dir", directory], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        try:
            deadline = time.monotonic() + TIMEOUT
            log = b""
            # It logs "Ready to accept connections" once it has bound and loaded: wait for that line.
            while b"Ready to accept connections" not in log:
                ready, _, _ = select.select([process.stdout], [], [], max(deadline - time.monotonic(), 0))
                chunk = os.read(process.stdout.fileno(), 4096) if ready else b""
                if not chunk:
                    raise RuntimeError("redis-server did not start: " + log.decode(errors="replace"))
                log += chunk
            yield port
        finally:
            process.terminate()
            process.wait(TIMEOUT)
            process.stdout.close()


# -- replies as values, for the comparisons that ignore order or random picks ----------------------------------------


Value = tuple[bytes, object]


def parse_reply(data: bytes, pos: int = 0) -> tuple[Value, int]:
    """The RESP2/RESP3 reply at ``pos`` as nested tuples ``(type byte, payload)``, and where it ends."""
    eol = data.index(b"\r\n", pos)
    kind = data[pos : pos + 1]
    head = data[pos + 1 : eol]
    if data[pos] in _LINE_TYPES:
        return (kind, head), eol + 2
    count = int(head)
    if data[pos] in _BULK_TYPES:
        if count < 0:
            return (kind, None), eol + 2
        return (kind, data[eol + 2 : eol + 2 + count]), eol + 4 + count
    items = []
    per_item = _AGGREGATE_TYPES[data[pos]]
    pos = eol + 2
    for _ in range(max(count, 0) * per_item):
        item, pos = parse_reply(data, pos)
        items.append(item)
    return (kind, tuple(items) if count >= 0 else None), pos


def _sorted(items: tuple[object, ...], pairs: bool) -> list[object]:
    grouped = list(zip(items[::2], items[1::2], strict=True)) if pairs else list(items)
    return sorted(grouped, key=repr)


def unordered(reply: bytes, pairs: bool) -> object:
    """``reply`` with the items of its top-level aggregate sorted (in pairs for a map or a flat field-value array)."""
    return _unordered(parse_reply(reply)[0], pairs)


def _unordered(value: Value, pairs: bool) -> object:
    kind, items = value
    return (kind, _sorted(items, pairs) if isinstance(items, tuple) else items)


def _scanned(value: Value, pairs: bool) -> object:
    """A SCAN-family reply, ``[cursor, items]``, with its items sorted."""
    kind, items = value
    if not isinstance(items, tuple) or len(items) != 2:
        return value
    return (kind, items[0], _unordered(items[1], pairs))


def _without_id(value: Value) -> object:
    """HELLO's reply without its ``id`` (a client id, which counts the connections each server has had)."""
    kind, items = value
    if not isinstance(items, tuple):
        return value
    return (
        kind,
        tuple((b"$", b"id") if i % 2 and items[i - 1] == (b"$", b"id") else item for i, item in enumerate(items)),
    )


def shape(value: Value) -> object:
    """What a random pick's reply must share with Redis's: its types and counts, not which items it picked."""
    kind, payload = value
    if isinstance(payload, tuple):
        return (kind, tuple(shape(item) for item in payload))
    return (kind, payload is None)


# How replies are compared where Redis's own bytes may differ from run to run: by command name, a function of the
# parsed reply whose results must be equal. Order Redis does not define (hash tables) is sorted away (in field-value
# pairs for maps); a random pick is compared by its shape.
_FLAT, _PAIRS = (lambda v: _unordered(v, False)), (lambda v: _unordered(v, True))
NORMALIZE: dict[bytes, Callable[[Value], object]] = {
    **dict.fromkeys((b"SMEMBERS", b"SINTER", b"SUNION", b"SDIFF", b"KEYS", b"HKEYS", b"HVALS", b"SPOP"), _FLAT),
    b"HGETALL": _PAIRS,
    b"CONFIG": _PAIRS,
    b"HELLO": _without_id,
    b"SCAN": lambda v: _scanned(v, False),
    b"SSCAN": lambda v: _scanned(v, False),
    b"HSCAN": lambda v: _scanned(v, True),
    b"ZSCAN": lambda v: _scanned(v, True),
    **dict.fromkeys((b"RANDOMKEY", b"SRANDMEMBER", b"HRANDFIELD", b"ZRANDMEMBER"), shape),
}

# Replies that may be a little apart, by command: how far. Each server reads its own clock, a few milliseconds from
# the other's, to set a relative expiry's deadline and to tell the time left (TTL rounds it to the nearest second).
NEAR = {b"PTTL": 1000, b"PEXPIRETIME": 1000, b"EXPIRETIME": 1, b"TTL": 1}

ALLOWED = {
    b"OBJECT ENCODING": "a string's encoding depends on how it was made (INCRBYFLOAT's embstr, APPEND's and "
    "SETRANGE's raw), which the store does not keep",
    b"OBJECT REFCOUNT": "whether a small integer is Redis's shared object depends on how it was made (INCRBYFLOAT's "
    "result is not), which the store does not keep",
}
"""Known, accepted differences, by command (with its subcommand where it has one): the reason each is not fixed.
Keep each one explained."""


ALLOWED_REPLIES = {
    (b"SORT", b"-ERR One or more scores can't be converted into double\r\n"): "Redis reads SORT's scores with strtod "
    "without clearing errno first, so an ERANGE left by an earlier command (a score of 1e309, say) makes it refuse "
    "numbers it otherwise sorts, until a system call on another connection resets errno",
}
"""Known differences where Redis's reply is one particular reply, by (command, Redis's reply): the reason."""


def allowed(command: Sequence[bytes], want: bytes | None = None) -> str | None:
    """Why ``command``'s reply may differ from Redis's (``want``, where given), or None when it must not."""
    name = command[0].upper()
    if len(command) > 1 and (name + b" " + command[1].upper()) in ALLOWED:
        return ALLOWED[name + b" " + command[1].upper()]
    return ALLOWED.get(name) or ALLOWED_REPLIES.get((name, want or b""))


def _exec_allowed(commands: Sequence[list[bytes]], index: int, want: bytes, have: bytes) -> str | None:
    """Why EXEC's reply may differ: each queued command's reply that differs is allowed to. None otherwise."""
    block = _block(commands, index)
    (_, want_items), _ = parse_reply(want)
    (_, have_items), _ = parse_reply(have)
    if not isinstance(want_items, tuple) or not isinstance(have_items, tuple):
        return next((r for r in map(allowed, block) if r is not None), None)
    if len(want_items) != len(have_items) or len(block) != len(want_items):
        return None
    reasons = [
        allowed(c, _encode(w)) for c, w, h in zip(block, want_items, have_items, strict=True) if not _same(c, w, h)
    ]
    return None if not reasons or None in reasons else reasons[0]


def _encode(value: Value) -> bytes | None:
    """A line reply (an error, say) back to its bytes; None for the other types."""
    kind, payload = value
    return kind + payload + b"\r\n" if isinstance(payload, bytes) and kind in (b"-", b"+", b":") else None


def _same(command: Sequence[bytes], want: Value, have: Value) -> bool:
    if want == have:
        return True
    name = command[0].upper()
    if name in NEAR and want[0] == have[0] == b":" and isinstance(want[1], bytes) and isinstance(have[1], bytes):
        return abs(int(want[1]) - int(have[1])) <= NEAR[name] and (int(want[1]) < 0) == (int(have[1]) < 0)
    normalize = NORMALIZE.get(name)
    return normalize is not None and want[0] == have[0] and normalize(want) == normalize(have)


@dataclasses.dataclass
class Report:
    """What a differential run found."""

    sequences: int = 0
    commands: int = 0
    same: int = 0
    allowed: Counter[str] = dataclasses.field(default_factory=Counter)
    names: Counter[bytes] = dataclasses.field(default_factory=Counter)
    failures: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        allowed = ", ".join(f"{name}: {count}" for name, count in sorted(self.allowed.items())) or "none"
        return (
            f"{self.sequences} sequences, {self.commands} commands ({len(self.names)} names): {self.same} replies "
            f"identical, {sum(self.allowed.values())} allowed differences ({allowed}), {len(self.failures)} failures"
        )


def _in_multi(commands: Sequence[list[bytes]]) -> list[bool]:
    """Whether each command is queued inside a MULTI block (its reply is +QUEUED; EXEC answers for it)."""
    flags, inside = [], False
    for command in commands:
        name = command[0].upper()
        flags.append(inside and name not in (b"EXEC", b"DISCARD"))
        inside = (inside or name == b"MULTI") and name not in (b"EXEC", b"DISCARD")
    return flags


def compare(commands: list[list[bytes]], expected: list[bytes], got: list[bytes], report: Report) -> None:
    """Count the replies to ``commands`` that match Redis's (``expected``), are allowed to differ, or fail."""
    report.sequences += 1
    report.commands += len(commands)
    queued = _in_multi(commands)
    for index, (command, want, have) in enumerate(zip(commands, expected, got, strict=True)):
        name = command[0].upper()
        report.names[name] += 1
        if want == have or (not queued[index] and _same(command, parse_reply(want)[0], parse_reply(have)[0])):
            report.same += 1
            continue
        if name == b"EXEC" and want[:1] == have[:1] == b"*" and _exec_same(commands, index, want, have):
            report.same += 1
            continue
        if name == b"EXEC" and want[:1] == b"*":
            reason = _exec_allowed(commands, index, want, have)
        elif name == b"EXEC":  # EXECABORT, or nil after WATCH: a command of the block is allowed to differ
            reason = next((r for r in map(allowed, _block(commands, index)) if r is not None), None)
        else:
            reason = allowed(command, want)
        if reason is not None:
            report.allowed[name.decode(errors="replace")] += 1
            continue
        report.failures.append(
            f"{command!r}: redis {want!r}, this server {have!r} (sequence {[b' '.join(c) for c in commands]!r})"
        )


def _block(commands: Sequence[list[bytes]], exec_index: int) -> list[list[bytes]]:
    """The commands the MULTI before ``exec_index`` queued: a nested MULTI and a WATCH are refused, not queued."""
    queued = _in_multi(commands)
    start = exec_index
    while start > 0 and queued[start - 1]:
        start -= 1
    return [c for c in commands[start:exec_index] if c[0].upper() not in (b"MULTI", b"WATCH")]


def _exec_same(commands: Sequence[list[bytes]], index: int, want: bytes, have: bytes) -> bool:
    """EXEC's replies match, each compared as its command's reply would be."""
    (_, want_items), _ = parse_reply(want)
    (_, have_items), _ = parse_reply(have)
    block = _block(commands, index)
    if not isinstance(want_items, tuple) or not isinstance(have_items, tuple) or len(want_items) != len(have_items):
        return False
    if len(block) != len(want_items):
        return False
    return all(_same(c, w, h) for c, w, h in zip(block, want_items, have_items, strict=True))


# Sequences sent in one write: enough to keep both servers busy, few enough that neither side's socket buffers fill
# while the other is still writing.
BATCH = 64


def _batch(rng: Random, size: int) -> list[list[list[bytes]]]:
    return [sequence(rng) for _ in range(size)]


def run(reference_port: int, subject_port: int, sequences: int, seed: int, protocols: Sequence[int] = (2, 3)) -> Report:
    """Compare ``sequences`` generated sequences, shared equally among ``protocols``, on the two servers."""
    rng = Random(seed)
    report = Report()
    for turn, proto in enumerate(protocols):
        share = sequences // len(protocols) + (1 if turn < sequences % len(protocols) else 0)
        reference, subject = RawClient(reference_port), RawClient(subject_port)
        try:
            if proto == 3:
                assert reference.call(b"HELLO", b"3")[:1] == subject.call(b"HELLO", b"3")[:1] == b"%"
            batch = _batch(rng, min(BATCH, share))
            switched = False
            while batch:
                share -= len(batch)
                # Each sequence starts on an empty keyspace, in the run's protocol: a HELLO that succeeded in the
                # sequence before may have switched it.
                prefixes = []
                for commands in batch:
                    prefixes.append([[b"FLUSHALL"], *([[b"HELLO", b"%d" % proto]] if switched else [])])
                    switched = any(c[0].upper() == b"HELLO" for c in commands)
                sent = [c for prefix, commands in zip(prefixes, batch, strict=True) for c in [*prefix, *commands]]
                reference.send_all(sent)
                subject.send_all(sent)
                # The next batch is made while the servers answer this one.
                following = _batch(rng, min(BATCH, share))
                expected, got = reference.read_replies(len(sent)), subject.read_replies(len(sent))
                at = 0
                for prefix, commands in zip(prefixes, batch, strict=True):
                    head = slice(at, at + len(prefix))
                    for command, want, have in zip(prefix, expected[head], got[head], strict=True):
                        if not _same(command, parse_reply(want)[0], parse_reply(have)[0]):
                            raise RuntimeError(f"{command!r}: redis {want!r}, this server {have!r}")
                    at += len(prefix)
                    end = at + len(commands)
                    compare(commands, expected[at:end], got[at:end], report)
                    at = end
                batch = following
        finally:
            reference.close()
            subject.close()
    return report


REFERENCE_OPTIONS = ("--databases", "1")
"""The reference's configuration where it differs from Redis's defaults: this server has one database."""


@contextlib.contextmanager
def subject_server() -> Iterator[int]:
    """This package's server in a process of its own (``python -m resp_server``, the core the environment picks), so
    that it and this client do not take turns on one interpreter lock; yields its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "resp_server", "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    try:
        deadline = time.monotonic() + TIMEOUT
        log = b""
        while b"listening on tcp://" not in log or not log.endswith(b"\n"):
            ready, _, _ = select.select([process.stderr], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(process.stderr.fileno(), 4096) if ready else b""
            if not chunk:
                raise RuntimeError("resp_server did not start: " + log.decode(errors="replace"))
            log += chunk
        yield int(log.split(b"listening on tcp://", 1)[1].split(b"\n", 1)[0].rsplit(b":", 1)[1])
    finally:
        process.terminate()
        process.wait(TIMEOUT)
        process.stderr.close()


def differential(sequences: int, seed: int, protocols: Sequence[int] = (2, 3)) -> Report:
    """:func:`run` on a fresh redis-server and a fresh server of this package, both started here."""
    with redis_server(*REFERENCE_OPTIONS) as reference_port, subject_server() as subject_port:
        return run(reference_port, subject_port, sequences, seed, protocols)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--show", type=int, default=10, help="failures to print")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = differential(args.sequences, args.seed)
    print(f"{report.summary()} in {time.monotonic() - started:.1f} s")
    for failure in report.failures[: args.show]:
        print("  " + failure)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
