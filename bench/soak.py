"""Soak runs against the example servers: byte-exact streams and connection churn, sized on the command line.

    python -m bench.soak [--only stream,proxy,churn,leaks] [--clients 8] [--stream-mib 128] [--churn 200000]

``stream``: several clients each send random bytes in random segment sizes, with random short pauses, through
``python -m examples.echo`` and read them back; the SHA-256 of what a client sent must equal that of what it read.
``proxy``: the same through ``python -m examples.proxy`` in front of the echo server. ``churn``: connect, echo 64
bytes, close, with ``--in-flight`` connections at a time; the server's descriptor count must come back to where
it started and its resident memory to within ``--rss-slack-mib`` of it. ``leaks``: against ``python -m
bench._responder`` (a tiny HTTP-like server with its cyclic collector off), over TLS and in plaintext, rounds of
downloads dropped at random points, short-lived requests and (TLS) handshake floods; after each round, once its
connections are gone, no ``Conn`` may be alive and its Python objects and RSS must be back near the baseline taken
after a warm-up round, without a collection. The exit status is 1 when a check fails. tests/test_soak.py runs the
same functions at CI sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import random
import selectors
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from bench._leaks import dropped_downloads, handshake_flood, responder_stats, short_requests
from bench._proc import rss_bytes
from bench._servers import HOST, Server
from bench._tls import TlsFiles

Address = tuple[str, int]

STREAM_TIMEOUT_S = 30.0
"""How long one send or receive of a stream client may block before the stream counts as hung."""

CHURN_TIMEOUT_S = 10.0
"""How long one churn connection may take from connect to its echo before it counts as hung."""

SETTLE_TIMEOUT_S = 10.0
"""How long the server may take to close what the clients closed, before its descriptors count as leaked."""


# -- servers ---------------------------------------------------------------------------------------------------


def example_server(name: str, argv: Callable[[int], list[str]], log_dir: Path, cpu: int = 0) -> Server:
    """A bench ``Server`` (pinned to ``cpu``, ready once its port answers, stopped with SIGTERM) running
    ``argv(port)``, an example's command line for the free port it is given, instead of a contender."""
    server = Server("netloop", "echo", cpu, log_dir)
    server.proto = name
    server.argv = argv(server.port)
    server.log_path = log_dir / f"{name}-{server.port}.log"
    return server


def echo_argv(port: int) -> list[str]:
    """``python -m examples.echo`` on HOST:port."""
    return [sys.executable, "-m", "examples.echo", "--host", HOST, "--port", str(port)]


def proxy_argv(upstream: Address) -> Callable[[int], list[str]]:
    """``python -m examples.proxy`` on HOST:port, piping to ``upstream``."""

    def argv(port: int) -> list[str]:
        listen, target = f"tcp://{HOST}:{port}", f"tcp://{upstream[0]}:{upstream[1]}"
        return [sys.executable, "-m", "examples.proxy", "--listen", listen, "--upstream", target]

    return argv


def address(server: Server) -> Address:
    return HOST, server.port


def descriptors(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- byte-exact streams ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class StreamResult:
    """One stream client: what it sent and read back, and why it stopped early if it did."""

    client: int
    size: int
    sent: int = 0
    received: int = 0
    sent_digest: str = ""
    received_digest: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None and self.sent == self.received == self.size and self.sent_digest == self.received_digest
        )

    def describe(self) -> str:
        verdict = "ok" if self.ok else f"FAILED ({self.error or 'digest mismatch'})"
        return f"client {self.client}: sent {self.sent:,} received {self.received:,} bytes: {verdict}"


def segment_size(rng: random.Random, largest: int) -> int:
    """A log-uniform size in [1, largest]: as many tiny segments as large ones, most bytes in the large."""
    return min(largest, int(2 ** rng.uniform(0, math.log2(largest))))


def pause(rng: random.Random, probability: float, longest: float) -> None:
    """Sometimes stop for up to ``longest`` seconds: the stalls are the behaviour under test, not a sync."""
    if longest > 0 and rng.random() < probability:
        time.sleep(rng.uniform(0, longest))


def stream_one(
    target: Address,
    client: int,
    size: int,
    seed: int,
    max_segment: int = 256 * 1024,
    max_pause: float = 0.002,
    pause_probability: float = 0.05,
) -> StreamResult:
    """Send ``size`` random bytes to an echo path and read them back, both hashed as they go.

    A thread sends while this one reads (neither waits for the other), each with its own random segment sizes
    and pauses; the connection is closed only after every byte came back.
    """
    result = StreamResult(client, size)
    try:
        sock = socket.create_connection(target, timeout=STREAM_TIMEOUT_S)
    except OSError as exc:
        result.error = f"connect: {exc!r}"
        return result
    send_errors: list[str] = []
    sent_hash = hashlib.sha256()

    def send() -> None:
        rng = random.Random(f"send {seed} {client}")
        try:
            while result.sent < size:
                chunk = rng.randbytes(min(size - result.sent, segment_size(rng, max_segment)))
                sock.sendall(chunk)
                sent_hash.update(chunk)
                result.sent += len(chunk)
                pause(rng, pause_probability, max_pause)
        except OSError as exc:
            send_errors.append(f"send after {result.sent:,} bytes: {exc!r}")

    sender = threading.Thread(target=send, name=f"stream-send-{client}", daemon=True)
    received_hash = hashlib.sha256()
    rng = random.Random(f"receive {seed} {client}")
    with sock:
        sender.start()
        try:
            while result.received < size:
                chunk = sock.recv(segment_size(rng, max_segment))
                if not chunk:
                    result.error = f"closed by the server after {result.received:,} bytes"
                    break
                received_hash.update(chunk)
                result.received += len(chunk)
                pause(rng, pause_probability, max_pause)
        except OSError as exc:
            result.error = f"receive after {result.received:,} bytes: {exc!r}"
        sender.join(STREAM_TIMEOUT_S)
        if sender.is_alive():
            result.error = result.error or "the sender hung"
        elif send_errors:
            result.error = result.error or send_errors[0]
    result.sent_digest = sent_hash.hexdigest()
    result.received_digest = received_hash.hexdigest()
    return result


def streams(target: Address, clients: int, size: int, seed: int, **options: float) -> list[StreamResult]:
    """``clients`` concurrent ``stream_one`` runs of ``size`` bytes each; one result per client, in order."""
    results: list[StreamResult | None] = [None] * clients

    def run(client: int) -> None:
        results[client] = stream_one(target, client, size, seed, **options)  # type: ignore[arg-type]

    threads = [threading.Thread(target=run, args=(i,), name=f"stream-{i}", daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STREAM_TIMEOUT_S * 4 + size / 1e6)  # a stalled stream fails by its own socket timeouts first
    return [r if r is not None else StreamResult(i, size, error="did not finish") for i, r in enumerate(results)]


# -- churn -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ChurnResult:
    """A churn run: cycles completed, failures by kind, and the time taken."""

    completed: int = 0
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    seconds: float = 0.0


class _Cycle:
    """One connection of a churn run: connecting, then echoing, then closed."""

    __slots__ = ("deadline", "got", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.got = b""


def churn(target: Address, cycles: int, in_flight: int, payload: bytes = b"x" * 64) -> ChurnResult:
    """Connect, send ``payload``, read it back, close: ``cycles`` times, ``in_flight`` at once (one thread).

    A connection that fails or does not finish within CHURN_TIMEOUT_S counts in ``errors`` by kind.
    """
    result = ChurnResult()
    selector = selectors.DefaultSelector()
    started = 0
    open_cycles: set[_Cycle] = set()
    begin = time.monotonic()

    def start() -> None:
        nonlocal started
        started += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        cycle = _Cycle(sock, time.monotonic() + CHURN_TIMEOUT_S)
        err = sock.connect_ex(target)
        if err not in (0, 115):  # EINPROGRESS
            finish(cycle, f"connect: {os.strerror(err)}", registered=False)
            return
        open_cycles.add(cycle)
        selector.register(sock, selectors.EVENT_WRITE, cycle)

    def finish(cycle: _Cycle, error: str | None, registered: bool = True) -> None:
        if registered:
            selector.unregister(cycle.sock)
            open_cycles.discard(cycle)
        cycle.sock.close()
        if error is None:
            result.completed += 1
        else:
            result.errors[error] += 1

    with selector:
        while started < min(in_flight, cycles):
            start()
        while open_cycles:
            for key, mask in selector.select(0.5):
                cycle = key.data
                sock = cycle.sock
                try:
                    if mask & selectors.EVENT_WRITE:
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            finish(cycle, f"connect: {os.strerror(err)}")
                            continue
                        sock.send(payload)  # 64 bytes into an empty socket buffer: all of it goes
                        selector.modify(sock, selectors.EVENT_READ, cycle)
                        continue
                    chunk = sock.recv(len(payload))
                except OSError as exc:
                    finish(cycle, type(exc).__name__)
                else:
                    if not chunk:
                        finish(cycle, "closed by the server")
                        continue
                    cycle.got += chunk
                    if len(cycle.got) < len(payload):
                        continue
                    finish(cycle, None if cycle.got == payload else "wrong echo")
                if started < cycles:
                    start()
            now = time.monotonic()
            for cycle in [c for c in open_cycles if c.deadline < now]:
                finish(cycle, "hung")
                if started < cycles:
                    start()
    result.seconds = time.monotonic() - begin
    return result


@dataclasses.dataclass
class ChurnSoak:
    """A churn soak against one server process: the churn itself and the server's descriptors and memory."""

    churn: ChurnResult
    fds_before: int
    fds_after: int
    rss_baseline: int
    rss_after: int
    samples: list[tuple[int, int, int]]  # (cycles so far, descriptors, RSS bytes) after each round

    def leaks(self, rss_slack: int) -> list[str]:
        """What did not come back: descriptors, memory beyond ``rss_slack`` bytes, failed cycles."""
        problems = []
        if self.fds_after > self.fds_before:
            problems.append(f"server descriptors {self.fds_before} before, {self.fds_after} after")
        if self.rss_after > self.rss_baseline + rss_slack:
            growth = (self.rss_after - self.rss_baseline) / 2**20
            problems.append(f"server RSS grew {growth:.1f} MiB (slack {rss_slack / 2**20:.1f} MiB)")
        if self.churn.errors:
            problems.append(f"failed cycles: {dict(self.churn.errors)}")
        return problems


def settle(pid: int, fds: int, timeout: float = SETTLE_TIMEOUT_S) -> int:
    """Wait until process ``pid`` is back to ``fds`` descriptors or fewer (it closes its ends after the clients);
    returns the count it ends at.

    Fewer counts as settled: the count taken before may include a connection that was still closing then (the
    readiness probe's), and a leak shows as more, never as fewer.
    """
    deadline = time.monotonic() + timeout
    pace = threading.Event()
    count = descriptors(pid)
    while count > fds and time.monotonic() < deadline:
        pace.wait(0.01)
        count = descriptors(pid)
    return count


def churn_soak(target: Address, pid: int, cycles: int, in_flight: int, rounds: int = 10) -> ChurnSoak:
    """``churn`` against the server process ``pid`` in ``rounds`` rounds after a warm-up of one round.

    Descriptors are compared with the count before any connection; memory with the count after the warm-up,
    which has grown the server's tables to their size for ``in_flight`` connections.
    """
    fds_before = descriptors(pid)
    per_round = max(1, cycles // rounds)
    warm_up = churn(target, min(per_round, 1000), in_flight)
    total = ChurnResult(errors=warm_up.errors)  # the warm-up's cycles are not counted; its errors are
    settle(pid, fds_before)
    rss_baseline = rss_bytes(pid)
    samples = []
    done = 0
    while done < cycles:
        step = churn(target, min(per_round, cycles - done), in_flight)
        done += step.completed + step.errors.total()
        total.completed += step.completed
        total.errors.update(step.errors)
        total.seconds += step.seconds
        samples.append((done, settle(pid, fds_before), rss_bytes(pid)))
    fds_after = settle(pid, fds_before)
    return ChurnSoak(total, fds_before, fds_after, rss_baseline, rss_bytes(pid), samples)


# -- leaks: connections dropped mid-response, short-lived requests, handshake floods ------------------------------


def responder_server(tls: TlsFiles | None, log_dir: Path, collector: bool = False, cpu: int = 0) -> Server:
    """A bench ``Server`` running ``python -m bench._responder`` (over TLS with ``tls``, checked with one handshake
    at start), with the cyclic collector off unless ``collector``: a connection that only a collection would free
    then stays alive and is counted. It runs the pure-Python core when ``NETLOOP_PURE=1`` is set here."""

    def argv(port: int) -> list[str]:
        command = [sys.executable, "-m", "bench._responder", "--host", HOST, "--port", str(port)]
        return command + (tls.server_flags() if tls else []) + ([] if collector else ["--no-gc"])

    server = example_server("responder", argv, log_dir, cpu)
    server.tls = tls
    server.contender = "netloop-pure" if os.environ.get("NETLOOP_PURE") == "1" else "netloop"
    return server


@dataclasses.dataclass
class LeakSoak:
    """Samples of the responder's ``/stats`` (connections gone) after a warm-up round and after each round."""

    baseline: dict[str, int]
    samples: list[dict[str, int]]

    def leaks(self, rss_slack: int, objects_slack: int) -> list[str]:
        """What did not come back: connections still open or alive, Python objects, resident memory."""
        problems = []
        base = self.baseline
        for i, sample in enumerate(self.samples, 1):
            if sample["open"] or sample["live"]:
                problems.append(f"round {i}: {sample['open']} connections open, {sample['live']} Conn objects alive")
            if sample["objects"] > base["objects"] + objects_slack:
                problems.append(f"round {i}: {sample['objects'] - base['objects']:+,} Python objects")
            if sample["rss"] > base["rss"] + rss_slack:
                problems.append(f"round {i}: RSS {(sample['rss'] - base['rss']) / 2**20:+.1f} MiB")
        return problems


TRIM_WAIT_S = 1.5
"""Longer than netloop waits between two trims of the C heap (one a second): freed memory is given back by then."""


def settled_stats(
    target: Address, ctx: ssl.SSLContext | None, rss_limit: int | None = None, timeout: float = SETTLE_TIMEOUT_S
) -> dict[str, int]:
    """The responder's stats once it holds no connection but the asking one (it closes its ends after ours) and,
    with ``rss_limit``, its RSS is at most that (a trim may come up to a second after the memory was freed), or the
    timeout passed."""
    deadline = time.monotonic() + timeout
    pace = threading.Event()
    while True:
        stats = responder_stats(target, ctx)
        settled = not stats["open"] and (rss_limit is None or stats["rss"] <= rss_limit)
        if settled or time.monotonic() > deadline:
            return stats
        pace.wait(0.01)  # nothing to wait on for either: poll, bounded


def leak_soak(
    target: Address,
    ctx: ssl.SSLContext | None,
    rounds: int,
    dropped: int,
    size: int,
    short: int,
    flood: int,
    seed: int,
    rss_slack: int,
) -> LeakSoak:
    """Each round: ``dropped`` downloads of ``size`` bytes dropped at random points, ``short`` short-lived
    connections, and on TLS a flood of ``flood`` handshakes at once. A first round warms up; the baseline is taken
    after it (RSS: the lowest over ``TRIM_WAIT_S``), and a sample after each later round once its connections are
    gone and its RSS is back within ``rss_slack`` of the baseline or ``SETTLE_TIMEOUT_S`` passed."""
    rng = random.Random(seed)

    def one_round() -> None:
        dropped_downloads(target, ctx, dropped, size, rng)
        short_requests(target, ctx, short, rng)
        if ctx is not None and flood:
            handshake_flood(target, ctx, flood, rng)

    one_round()
    baseline = settled_stats(target, ctx)
    pace = threading.Event()
    until = time.monotonic() + TRIM_WAIT_S
    while time.monotonic() < until:
        pace.wait(0.05)
        baseline["rss"] = min(baseline["rss"], responder_stats(target, ctx)["rss"])
    samples = []
    for _ in range(rounds):
        one_round()
        samples.append(settled_stats(target, ctx, baseline["rss"] + rss_slack))
    return LeakSoak(baseline, samples)


# -- the command line ------------------------------------------------------------------------------------------


def logged_errors(server: Server) -> list[str]:
    """The lines of the server's log that tell of an error: tracebacks, internal errors, raising handlers."""
    try:
        text = server.log_path.read_text(errors="replace")
    except OSError:
        return []
    markers = ("Traceback", "internal error", " raised", "ERROR")
    return [line for line in text.splitlines() if any(marker in line for marker in markers)]


def _report_streams(label: str, results: Sequence[StreamResult], seconds: float) -> bool:
    total = sum(r.received for r in results)
    print(
        f"{label}: {len(results)} clients, {total / 2**20:,.0f} MiB echoed in {seconds:.1f} s "
        f"({total / 2**20 / max(seconds, 1e-9):,.0f} MiB/s)"
    )
    for r in results:
        if not r.ok:
            print("  " + r.describe())
    return all(r.ok for r in results)


def _run_leaks(args: argparse.Namespace, logs: Path, servers: list[Server]) -> bool:
    """The leak soak over TLS, then in plaintext, each against a responder of its own; True when nothing leaked."""
    from bench._tls import make_certificate

    files = make_certificate(logs)
    ok = True
    for tls in (files, None):
        server = responder_server(tls, logs, cpu=args.server_cpu)
        servers.append(server)
        ctx = ssl.create_default_context(cafile=str(tls.cert)) if tls else None
        flood = args.leak_flood if tls else 0
        size = args.leak_download_mib * 2**20
        rss_slack = int(args.leak_rss_slack_mib * 2**20)
        began = time.monotonic()
        with server:
            soak = leak_soak(
                address(server),
                ctx,
                args.leak_rounds,
                args.leak_dropped,
                size,
                args.leak_short,
                flood,
                args.seed,
                rss_slack,
            )
        label = "TLS" if tls else "plaintext"
        print(
            f"leaks via bench._responder ({label}): {args.leak_rounds} rounds of {args.leak_dropped} downloads of "
            f"{args.leak_download_mib} MiB dropped, {args.leak_short} short-lived connections"
            + (f", {flood} handshakes at once" if flood else "")
            + f" in {time.monotonic() - began:.1f} s"
        )
        base = soak.baseline
        print(f"  baseline: {base['objects']:,} objects, RSS {base['rss'] / 2**20:.1f} MiB")
        for i, sample in enumerate(soak.samples, 1):
            print(
                f"  after round {i:>3}: {sample['live']} Conn alive, {sample['objects']:,} objects, "
                f"RSS {sample['rss'] / 2**20:.1f} MiB, {sample['full_collections']} full collections"
            )
        problems = soak.leaks(rss_slack, args.leak_objects_slack)
        for problem in problems:
            print("  FAILED: " + problem)
        ok &= not problems
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="stream,proxy,churn,leaks", help="comma-separated: stream, proxy, churn, leaks"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent stream clients (default 8)")
    parser.add_argument("--stream-mib", type=int, default=128, help="MiB each stream client sends (default 128)")
    parser.add_argument("--max-segment", type=int, default=256 * 1024, help="largest send/recv in bytes")
    parser.add_argument("--max-pause-ms", type=float, default=2.0, help="longest random pause (default 2 ms)")
    parser.add_argument("--churn", type=int, default=200_000, help="churn cycles (default 200,000)")
    parser.add_argument("--in-flight", type=int, default=100, help="churn connections at once (default 100)")
    parser.add_argument("--rss-slack-mib", type=float, default=4.0, help="RSS growth allowed after churn")
    parser.add_argument("--leak-rounds", type=int, default=20, help="leak rounds after the warm-up (default 20)")
    parser.add_argument("--leak-dropped", type=int, default=50, help="downloads dropped per round (default 50)")
    parser.add_argument("--leak-download-mib", type=int, default=16, help="size of each download (default 16 MiB)")
    parser.add_argument("--leak-short", type=int, default=200, help="short-lived connections per round (default 200)")
    parser.add_argument("--leak-flood", type=int, default=1000, help="handshakes at once per round (default 1000)")
    parser.add_argument("--leak-rss-slack-mib", type=float, default=8.0, help="RSS growth allowed (default 8)")
    parser.add_argument("--leak-objects-slack", type=int, default=2000, help="object growth allowed (default 2000)")
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to (default 0)")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - {"stream", "proxy", "churn", "leaks"}
    if unknown:
        parser.error(f"unknown soak {', '.join(sorted(unknown))}")
    print(f"seed {args.seed}", flush=True)
    size = args.stream_mib * 2**20
    options = {"max_segment": args.max_segment, "max_pause": args.max_pause_ms / 1000}
    ok = True
    with tempfile.TemporaryDirectory(prefix="netloop-soak-") as tmp:
        logs = Path(tmp)
        servers = [example_server("echo", echo_argv, logs, args.server_cpu)]
        with servers[0] as echo:
            if "stream" in only:
                began = time.monotonic()
                results = streams(address(echo), args.clients, size, args.seed, **options)
                ok &= _report_streams("stream via examples.echo", results, time.monotonic() - began)
            if "proxy" in only:
                servers.append(example_server("proxy", proxy_argv(address(echo)), logs, args.server_cpu))
                with servers[-1] as proxy:
                    began = time.monotonic()
                    results = streams(address(proxy), args.clients, size, args.seed, **options)
                    ok &= _report_streams("stream via examples.proxy", results, time.monotonic() - began)
            if "churn" in only:
                soak = churn_soak(address(echo), echo.pid, args.churn, args.in_flight)
                rate = soak.churn.completed / max(soak.churn.seconds, 1e-9)
                print(
                    f"churn via examples.echo: {soak.churn.completed:,} cycles, {args.in_flight} in flight, "
                    f"{rate:,.0f}/s; descriptors {soak.fds_before} -> {soak.fds_after}; "
                    f"RSS {soak.rss_baseline / 2**20:.1f} -> {soak.rss_after / 2**20:.1f} MiB"
                )
                for done, fds, rss in soak.samples:
                    print(f"  after {done:>9,} cycles: {fds} descriptors, RSS {rss / 2**20:.1f} MiB")
                problems = soak.leaks(int(args.rss_slack_mib * 2**20))
                for problem in problems:
                    print("  FAILED: " + problem)
                ok &= not problems
        if "leaks" in only:
            ok &= _run_leaks(args, logs, servers)
        for server in servers:
            errors = logged_errors(server)
            if errors:
                print(f"FAILED: the {server.proto} server logged errors:\n" + "\n".join(errors[:20]))
                ok = False
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
