"""System calls per request of a netloop server, counted by ``strace -c -f``: the same on a busy or a quiet machine.

    python -m bench.uring.syscalls                              # this tree: echo-1k, http-p1, http-p16, nothing-p1
    python -m bench.uring.syscalls --netloop-path /tmp/uring    # a tree made by ``python -m bench.uring.build``
    python -m bench.uring.syscalls --only tls-echo-1k,tls-http-p1 --servers netloop,uvloop,aiofastnet

The servers and the deterministic client are ``bench.instructions``'s (16 connections, one request, or sixteen
pipelined, at a time); each server runs twice under strace, with ``--short`` and ``--long`` requests, and the
difference of the two counts over the difference of the requests is one request's system calls, by name. The
``tls-`` workloads (and ``--servers`` other than netloop) are ``bench.instructions``'s too: one throw-away
certificate per run, the same TLS 1.3 client context for every server.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._errors import BenchError
from bench._servers import free_port, server_argv, server_env, unavailable
from bench._tls import TlsFiles, make_certificate
from bench.instructions import RESPONDERS, ROOT, STOP_TIMEOUT_S, WORKLOADS, client_context, drive, responder_argv


def _server_pid(pidfile: Path) -> int:
    """The server's process id, which the shell that becomes it wrote before its ``exec``."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        text = pidfile.read_text() if pidfile.exists() else ""
        if text.endswith("\n"):
            return int(text)
        time.sleep(0.01)
    raise BenchError("the server did not start under strace")


def counts(
    workload: str,
    requests: int,
    netloop_path: str | None,
    out: Path,
    server: str = "netloop",
    tls: TlsFiles | None = None,
) -> dict[str, int]:
    """``server``'s system calls by name over a run of ``requests`` requests of ``workload`` (a ``tls-`` one with
    the certificate ``tls``)."""
    proto, depth = WORKLOADS[workload]
    port = free_port()
    secure = tls if workload.startswith("tls-") else None
    if proto in RESPONDERS:
        argv = responder_argv(server, proto, port)
    else:
        argv = server_argv(server, "echo" if proto == "handshake" else proto, port, secure)
    env = server_env(server)
    paths = [netloop_path, str(ROOT)] if netloop_path else [str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    strace = shutil.which("strace")
    if strace is None:
        raise BenchError("strace is not installed (Debian's strace package)")
    pidfile = out.with_suffix(".pid")
    # The shell execs the server: the pid it writes is the server's, whatever the server starts itself.
    shell = ["sh", "-c", f'echo $$ > {shlex.quote(str(pidfile))}; exec "$@"', "sh", *argv]
    command = [strace, "-c", "-f", "-o", str(out), *shell]
    process = subprocess.Popen(command, env=env, cwd=netloop_path or ROOT, stdout=subprocess.DEVNULL)
    try:
        server = _server_pid(pidfile)
        drive(port, proto, depth, requests, client_context(secure) if secure else None)
        os.kill(server, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    table: dict[str, int] = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        # "% time seconds usecs/call calls [errors] syscall"
        if len(fields) >= 5 and fields[0].replace(".", "").isdigit() and fields[-1] != "total":
            table[fields[-1]] = int(fields[3])
    return table


def per_request(
    workload: str,
    short: int,
    long: int,
    netloop_path: str | None,
    server: str = "netloop",
    tls: TlsFiles | None = None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        few = counts(workload, short, netloop_path, Path(scratch) / "short", server, tls)
        many = counts(workload, long, netloop_path, Path(scratch) / "long", server, tls)
    span = long - short
    diff = {name: (many.get(name, 0) - few.get(name, 0)) / span for name in set(few) | set(many)}
    return {name: value for name, value in sorted(diff.items(), key=lambda kv: -kv[1]) if abs(value) >= 0.005}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="echo-1k,http-p1,http-p16,nothing-p1", help="workloads, comma-separated")
    parser.add_argument("--short", type=int, default=1_600, help="requests in the short run")
    parser.add_argument("--long", type=int, default=8_000, help="requests in the long run")
    parser.add_argument("--netloop-path", default=None, help="another tree (e.g. one bench.uring.build made)")
    parser.add_argument("--servers", default="netloop", help="servers, comma-separated (netloop, uvloop, ...)")
    args = parser.parse_args(argv)
    workloads = [w for w in args.only.split(",") if w]
    for workload in workloads:
        if workload not in WORKLOADS:
            parser.error(f"unknown workload {workload!r}")
    with tempfile.TemporaryDirectory() as scratch:
        tls = make_certificate(Path(scratch)) if any(w.startswith("tls-") for w in workloads) else None
        for workload in workloads:
            proto, _ = WORKLOADS[workload]
            for server in filter(None, args.servers.split(",")):
                why = unavailable(server, "echo" if proto == "handshake" else proto, workload.startswith("tls-"))
                if why:
                    print(f"{workload} {server}: skipped ({why})", flush=True)
                    continue
                calls = per_request(workload, args.short, args.long, args.netloop_path, server, tls)
                listed = ", ".join(f"{name} {value:.2f}" for name, value in calls.items())
                total = sum(calls.values())
                print(f"{workload} {server}: {total:.2f} system calls per request ({listed})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
