"""User-space instructions per request, counted by valgrind's callgrind: the same on a busy or a quiet machine.

    python -m bench.instructions                          # echo 1 KiB, HTTP depth 1 and 16; every contender
    python -m bench.instructions --only http-p1 --servers netloop,uvloop --functions 15
    python -m bench.instructions --only peek-p1,next-p1,nothing-p1 --servers netloop,uvloop --functions 15
    python -m bench.instructions --netloop-path ../other-checkout   # measure another tree's netloop
    python -m bench.instructions --quick                  # smoke run: one workload, short runs
    python -m bench.instructions --only nothing-p1,peek-p1,echo-1k --servers netloop,gnet --gnet-binary /tmp/gnet-bench
    python -m bench.instructions --only tls-echo-1k,tls-http-p1,tls-handshake --servers netloop,uvloop,aiofastnet
    python -m bench.instructions --only echo-1k --servers aio-protocol-netloop,aio-protocol-uvloop   # asyncio styles

Each server runs under ``valgrind --tool=callgrind``, started fresh for each run, and a deterministic client on the
other CPU sends a fixed number of requests over 16 connections, in turn, one request (HTTP p16: sixteen pipelined)
at a time and waiting for the whole answer before the next, so every run does the same work in the same order. Each
server is measured twice, with ``--short`` and ``--long`` requests (2,000 and 12,000 by default): the difference of
the two instruction counts divided by the difference of the request counts is the cost of one request, with
start-up, imports and shutdown cancelled out. The servers are the contenders of ``python -m bench`` (the netloop
examples on the compiled core and, as ``netloop-pure``, on the pure-Python one; the same sans-I/O sessions on
asyncio, uvloop and aiofastnet), so only the transport differs. The responder workloads (``peek-p1``, ``next-p1``,
``nothing-p1``: ``bench.servers.responder``) answer HTTP requests with a canned answer and no session, so they show
the framework's own share: a ``peek``/``discard`` handler, a ``next`` one, and one that does nothing but ``next()``
and one fixed ``write``; asyncio and uvloop serve the same counting on a Protocol.

``gnet`` is the Go contender: ``bench/gnet`` (our own few lines on gnet v2's public API, built outside the
repository: bench/README.md) serves the ``nothing`` and ``peek`` responders and the echo with one event loop, run
with GOMAXPROCS=1 and ``--gnet-binary PATH``; without that option its rows are skipped. The ``tls-`` workloads are
echo and HTTP over TLS 1.3 (one throw-away P-256 certificate per run, the same client context for every server), and
``tls-handshake``: one connection at a time, a full handshake (no session offered), one 64-byte echo, a close with
RST; it runs a tenth of the requests of the others (handshakes cost far more than requests).

The per-function view (``--functions K``) takes callgrind's self cost of each C function the same way (long run minus
short run, per request): the interpreter's eval loop, frame and object management, the socket calls' argument
parsing, the poller. It is what a change to the hot path should be judged by.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench._errors import BenchError
from bench._servers import HOST, free_port, server_argv, server_env, unavailable
from bench._tls import TlsFiles, make_certificate

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 16
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 120.0
WORKLOADS = {
    "echo-1k": ("echo", 1),
    "http-p1": ("http", 1),
    "http-p16": ("http", 16),
    "peek-p1": ("peek", 1),
    "next-p1": ("next", 1),
    "nothing-p1": ("nothing", 1),
    "tls-echo-1k": ("echo", 1),
    "tls-http-p1": ("http", 1),
    "tls-http-p16": ("http", 16),
    "tls-handshake": ("handshake", 1),
}
HANDSHAKE_SHARE = 10
"""``tls-handshake`` runs one connection per this many requests of the other workloads."""
RESPONDERS = ("peek", "next", "nothing")
"""The workloads served by ``bench.servers.responder`` (one ``--style`` each; HTTP requests, canned answers)."""
SERVERS = ("netloop", "netloop-pure", "uvloop", "asyncio", "aiofastnet", "gnet")
GNET_PROTOS = ("echo", "peek", "nothing")
"""What ``bench/gnet`` serves (its ``-style``)."""
# asyncio on netloop (docs/asyncio.md): bench.servers.aio_styles's styles, each a contender named only with --servers.
AIO_STYLES = {
    "aio-protocol-netloop": ("protocol-netloop", ("echo", "http")),
    "aio-protocol-uvloop": ("protocol-uvloop", ("echo", "http")),
    "aio-streams-netloop": ("streams-netloop", ("echo",)),
    "aio-streams-uvloop": ("streams-uvloop", ("echo",)),
    "aio-async-handler": ("async-handler", ("http",)),
    "aio-callback-handler": ("callback-handler", ("http",)),
}
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
ECHO_MESSAGE = bytes(range(256)) * 4
HANDSHAKE_MESSAGE = bytes(range(64))


@dataclass
class Count:
    """One server's instruction counts for one workload."""

    server: str
    workload: str
    short: int
    long: int
    requests: tuple[int, int]
    functions: dict[str, float] = field(default_factory=dict)

    @property
    def per_request(self) -> float:
        return (self.long - self.short) / (self.requests[1] - self.requests[0])


# -- the client: deterministic, outside valgrind -----------------------------------------------------------------


def _connect(port: int, deadline: float, tls: ssl.SSLContext | None = None) -> socket.socket:
    while True:
        try:
            sock = socket.create_connection((HOST, port), timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"the server on port {port} did not start listening") from None
            time.sleep(0.05)  # polling the port is the readiness signal every contender shares
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return tls.wrap_socket(sock, server_hostname=HOST) if tls else sock


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """The one client context every TLS server is driven with: TLS 1.3 only, the run's certificate trusted."""
    ctx = ssl.create_default_context(cafile=str(files.cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def _handshakes(port: int, tls: ssl.SSLContext, count: int) -> None:
    """``count`` full handshakes in turn: connect, handshake, one 64-byte echo, close with RST."""
    deadline = time.monotonic() + START_TIMEOUT_S
    for _ in range(count):
        sock = _connect(port, deadline, tls)
        try:
            sock.sendall(HANDSHAKE_MESSAGE)
            got = 0
            while got < len(HANDSHAKE_MESSAGE):
                chunk = sock.recv(4096)
                if not chunk:
                    raise BenchError("the TLS echo server closed a connection")
                got += len(chunk)
            # RST, no close_notify: every server sees the same end, and no TIME_WAIT piles up
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()


def _exchange(sock: socket.socket, proto: str, depth: int) -> None:
    if proto == "echo":
        sock.sendall(ECHO_MESSAGE)
        got = 0
        while got < len(ECHO_MESSAGE):
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError("the echo server closed a connection")
            got += len(chunk)
        return
    sock.sendall(HTTP_REQUEST * depth)
    data = b""
    answers = 0
    while answers < depth:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("the HTTP server closed a connection")
        data += chunk
        # The examples' answer is "Hello, World!" with a Content-Length: count complete answers by their bodies.
        answers = data.count(b"Hello, World!")


def drive(port: int, proto: str, depth: int, requests: int, tls: ssl.SSLContext | None = None) -> None:
    """Open CONNECTIONS connections (over TLS with ``tls``) and send ``requests`` requests (in batches of ``depth``)
    round robin; for ``handshake``, ``requests`` connections one after another."""
    if proto == "handshake":
        assert tls is not None
        _handshakes(port, tls, requests)
        return
    deadline = time.monotonic() + START_TIMEOUT_S
    conns = [_connect(port, deadline, tls) for _ in range(CONNECTIONS)]
    try:
        for i in range(requests // depth):
            _exchange(conns[i % CONNECTIONS], proto, depth)
    finally:
        for sock in conns:
            sock.close()


def style_argv(server: str, proto: str, port: int) -> list[str]:
    style, _ = AIO_STYLES[server]
    module = [sys.executable, "-m", "bench.servers.aio_styles", "--style", style, "--proto", proto]
    return [*module, "--host", HOST, "--port", str(port)]


def style_unavailable(server: str, proto: str) -> str | None:
    style, protos = AIO_STYLES[server]
    if proto not in protos:
        return f"{server} serves {', '.join(protos)} only"
    if style.endswith("uvloop") and importlib.util.find_spec("uvloop") is None:
        return "uvloop is not installed (pip install uvloop)"
    return None


# -- one measured run ----------------------------------------------------------------------------------------------


def _valgrind() -> str:
    path = shutil.which("valgrind")
    if path is None:
        raise BenchError("valgrind is not installed (Debian's valgrind package)")
    return path


def responder_argv(server: str, style: str, port: int) -> list[str]:
    """The command line of ``bench.servers.responder`` for ``server`` (a netloop core, asyncio or uvloop)."""
    loop = "netloop" if server in ("netloop", "netloop-pure") else server
    argv = [sys.executable, "-m", "bench.servers.responder", "--style", style, "--loop", loop]
    return [*argv, "--host", HOST, "--port", str(port)]


def responder_unavailable(server: str) -> str | None:
    """Why ``server`` cannot run the responder workloads, or None."""
    if server not in ("netloop", "netloop-pure", "asyncio", "uvloop"):
        return f"{server} has no responder server"
    return unavailable(server, "echo")


def gnet_unavailable(proto: str, binary: str | None) -> str | None:
    """Why the gnet contender cannot serve ``proto``, or None."""
    if proto not in GNET_PROTOS:
        return f"bench/gnet serves {', '.join(GNET_PROTOS)} only"
    if binary is None:
        return "no --gnet-binary given (bench/README.md says how to build bench/gnet)"
    if not os.access(binary, os.X_OK):
        return f"{binary} is not an executable"
    return None


def measure(
    server: str,
    proto: str,
    depth: int,
    requests: int,
    out: Path,
    netloop_path: str | None,
    gnet_binary: str | None = None,
    tls: TlsFiles | None = None,
) -> int:
    """Run ``server`` under callgrind for ``requests`` requests (over TLS with the certificate ``tls``); its total
    instruction count (callgrind's Ir)."""
    port = free_port()
    if server == "gnet":
        assert gnet_binary is not None
        argv = [gnet_binary, "-style", proto, "-host", HOST, "-port", str(port), "-exit-on-eof"]
        # One OS thread runs Go code, as one netloop loop runs Python: the count is one core's work.
        # Go's asynchronous preemption signals trip an assertion in callgrind's signal handling.
        env = dict(os.environ, GOMAXPROCS="1", GODEBUG="asyncpreemptoff=1")
        return counted_run(server, argv, env, ROOT, port, proto, depth, requests, out, stop_by_eof=True)
    if server in AIO_STYLES:
        argv = style_argv(server, proto, port)
    elif proto in RESPONDERS:
        argv = responder_argv(server, proto, port)
    else:
        argv = server_argv(server, "echo" if proto == "handshake" else proto, port, tls)
    env = server_env("netloop" if server in AIO_STYLES else server)
    # Fixed string hashing: with a random seed each run lays its dicts out differently, and lookups that collide
    # more or less move the count by a few percent between runs of the same code.
    env["PYTHONHASHSEED"] = "0"
    paths = [str(ROOT)] + ([netloop_path] if netloop_path else [])
    if netloop_path:
        paths = [netloop_path, str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # ``python -m`` puts the working directory first on sys.path: run in the other tree to import its netloop.
    client = client_context(tls) if tls else None
    return counted_run(server, argv, env, netloop_path or ROOT, port, proto, depth, requests, out, client)


def counted_run(
    server: str,
    argv: list[str],
    env: dict[str, str],
    cwd: str | Path,
    port: int,
    proto: str,
    depth: int,
    requests: int,
    out: Path,
    tls: ssl.SSLContext | None = None,
    stop_by_eof: bool = False,
    client: Callable[[int, int], None] | None = None,
) -> int:
    """Run ``argv`` under callgrind in ``cwd``, drive ``requests`` requests at ``port`` (over TLS with the client
    context ``tls``), stop it with SIGTERM (``stop_by_eof``: by closing its standard input); its total instruction
    count (callgrind's Ir).

    ``client(port, requests)``, when given, sends the requests instead of ``drive`` (which sends ``proto``'s).
    """
    command = [_valgrind(), "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no", *argv]
    stdin = subprocess.PIPE if stop_by_eof else None
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        if client is None:
            drive(port, proto, depth, requests, tls)
        else:
            client(port, requests)
    except BenchError as error:
        process.kill()
        _, err = process.communicate()
        raise BenchError(f"{server}: {error}; it printed: {err.decode(errors='replace')[-800:]}") from None
    except BaseException:
        process.kill()
        process.wait()
        raise
    if not stop_by_eof:
        process.send_signal(signal.SIGTERM)
    try:  # communicate() closes the standard input
        _, err = process.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise BenchError(f"{server} did not stop under valgrind") from None
    if not out.exists():
        raise BenchError(f"{server}: callgrind wrote nothing: {err.decode(errors='replace')[-800:]}")
    return total_instructions(out)


def total_instructions(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise BenchError(f"no total in {path}")


def function_costs(path: Path) -> dict[str, int]:
    """Self cost (Ir) by function, from callgrind_annotate."""
    annotate = shutil.which("callgrind_annotate")
    if annotate is None:
        return {}
    done = subprocess.run(
        [annotate, "--inclusive=no", "--auto=no", "--threshold=100", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    costs: dict[str, int] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if match and ":" in match.group(2):
            name = match.group(2).split(" [", 1)[0].strip()
            source, _, function = name.rpartition(":")
            name = f"{os.path.basename(source)}:{function}"  # the file's name, not where it was built
            costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
    return costs


def count(
    server: str,
    workload: str,
    short: int,
    long: int,
    netloop_path: str | None,
    functions: int,
    gnet_binary: str | None = None,
    tls: TlsFiles | None = None,
) -> Count:
    """``server``'s counts for ``workload`` (a ``tls-`` one with the certificate ``tls``), short and long runs."""
    proto, depth = WORKLOADS[workload]
    if proto == "handshake":
        short, long = short // HANDSHAKE_SHARE, long // HANDSHAKE_SHARE
    secure = tls if workload.startswith("tls-") else None
    with tempfile.TemporaryDirectory() as scratch:
        runs = []
        for n in (short, long):
            out = Path(scratch) / f"{server}-{workload}-{n}.out"
            runs.append((measure(server, proto, depth, n, out, netloop_path, gnet_binary, secure), out))
        result = Count(server, workload, runs[0][0], runs[1][0], (short, long))
        if functions:
            before, after = function_costs(runs[0][1]), function_costs(runs[1][1])
            span = long - short
            diff = {name: (after.get(name, 0) - before.get(name, 0)) / span for name in set(before) | set(after)}
            result.functions = dict(sorted(diff.items(), key=lambda kv: -kv[1])[:functions])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"workloads, comma-separated: {', '.join(WORKLOADS)}"
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="contenders, comma-separated")
    parser.add_argument("--short", type=int, default=2_000, help="requests in the short run")
    parser.add_argument("--long", type=int, default=12_000, help="requests in the long run")
    parser.add_argument("--functions", type=int, default=0, metavar="K", help="show the K costliest functions")
    parser.add_argument(
        "--netloop-path", default=None, help="another checkout (a whole tree): its servers and its netloop are measured"
    )
    parser.add_argument("--gnet-binary", default=None, help="bench/gnet built (bench/README.md): adds the gnet rows")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    parser.add_argument("--quick", action="store_true", help="netloop only, echo-1k, 208 and 608 requests")
    args = parser.parse_args(argv)
    if args.quick:
        args.only, args.servers, args.short, args.long = "echo-1k", "netloop", 208, 608
    workloads = [w for w in args.only.split(",") if w]
    servers = [s for s in args.servers.split(",") if s]
    for name in workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}")
    if args.long <= args.short or args.short % 16:
        parser.error("--long must exceed --short, and both must be multiples of 16")
    results: list[Count] = []
    with tempfile.TemporaryDirectory() as scratch:
        tls = make_certificate(Path(scratch)) if any(w.startswith("tls-") for w in workloads) else None
        for workload in workloads:
            for server in servers:
                why = why_skipped(server, workload, args.gnet_binary)
                if why:
                    print(f"{workload}: {server} skipped: {why}", file=sys.stderr)
                    continue
                result = count(
                    server, workload, args.short, args.long, args.netloop_path, args.functions, args.gnet_binary, tls
                )
                print(f"{workload}: {server}: {result.per_request:,.0f} instructions/request", file=sys.stderr)
                results.append(result)
    report(results, workloads)
    if args.json:
        args.json.write_text(json.dumps([vars(r) | {"per_request": r.per_request} for r in results], indent=2))
    return 0


def why_skipped(server: str, workload: str, gnet_binary: str | None) -> str | None:
    """Why ``server`` cannot run ``workload`` here, or None."""
    proto, _ = WORKLOADS[workload]
    if server == "gnet":
        return "bench/gnet serves no TLS" if workload.startswith("tls-") else gnet_unavailable(proto, gnet_binary)
    if server in AIO_STYLES:
        return (
            "the asyncio styles serve no TLS here" if workload.startswith("tls-") else style_unavailable(server, proto)
        )
    if proto in RESPONDERS:
        return responder_unavailable(server)
    return unavailable(server, "echo" if proto == "handshake" else proto, tls=workload.startswith("tls-"))


def report(results: list[Count], workloads: list[str]) -> None:
    for workload in workloads:
        rows = [r for r in results if r.workload == workload]
        if not rows:
            continue
        base = next((r.per_request for r in rows if r.server == "uvloop"), None)
        base = base or next((r.per_request for r in rows if r.server.endswith("uvloop")), None)
        go = next((r.per_request for r in rows if r.server == "gnet"), None)
        print(f"\n### {workload}\n")
        print("| server | instructions / request | vs uvloop |" + (" vs gnet |" if go else ""))
        print("|---|---:|---:|" + ("---:|" if go else ""))
        for r in sorted(rows, key=lambda r: r.per_request):
            ratio = f"{r.per_request / base:.2f}x" if base else "-"
            versus_go = f" {r.per_request / go:.2f}x |" if go else ""
            print(f"| {r.server} | {r.per_request:,.0f} | {ratio} |{versus_go}")
        for r in rows:
            if r.functions:
                print(f"\n{r.server}, {workload}: self instructions per request by function\n")
                print("| function | per request |")
                print("|---|---:|")
                for name, cost in r.functions.items():
                    print(f"| `{name}` | {cost:,.0f} |")


if __name__ == "__main__":
    sys.exit(main())
