"""The load generators: echo_load (built here from C, plaintext and TLS), wrk and redis-benchmark, each pinned to one
CPU."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from bench._errors import BenchError
from bench._parse import LoadResult, WrkReport, parse_ready, parse_redis_benchmark, parse_result, parse_wrk
from bench._proc import pinned
from bench._servers import HOST
from bench._tls import TlsFiles

BENCH_DIR = Path(__file__).resolve().parent
BUILD_DIR = BENCH_DIR / "build"
ECHO_LOAD_SOURCE = BENCH_DIR / "echo_load.c"
PIPELINE_LUA = BENCH_DIR / "pipeline.lua"
CFLAGS = ("-O2", "-Wall", "-Wextra")
TLS_FLAGS = ("-DWITH_TLS",)
TLS_LIBS = ("-lssl", "-lcrypto")


def build_echo_load(cc: str = "cc", tls: bool = False) -> Path:
    """The echo_load binary, compiled into bench/build/ unless one newer than its source is there.

    With ``tls``, ``echo_load_tls``: the same source linked with OpenSSL (Debian: libssl-dev), whose ``-t`` speaks
    TLS; the plain build needs no OpenSSL, so the plaintext workloads run without it.
    """
    name = "echo_load_tls" if tls else "echo_load"
    target = BUILD_DIR / name
    if target.exists() and target.stat().st_mtime >= ECHO_LOAD_SOURCE.stat().st_mtime:
        return target
    compiler = shutil.which(cc)
    if compiler is None:
        raise BenchError(f"no C compiler {cc!r} to build {name}")
    BUILD_DIR.mkdir(exist_ok=True)
    # compile beside the target and rename, so a concurrent run never executes a half-written file
    partial = target.with_name(f"{name}.{os.getpid()}.partial")
    flags, libs = (TLS_FLAGS, TLS_LIBS) if tls else ((), ())
    built = subprocess.run(
        [compiler, *CFLAGS, *flags, "-o", str(partial), str(ECHO_LOAD_SOURCE), *libs], capture_output=True, text=True
    )
    if built.returncode != 0:
        partial.unlink(missing_ok=True)
        hint = " (it needs OpenSSL's headers: apt-get install libssl-dev)" if tls else ""
        raise BenchError(f"compiling echo_load.c into {name} failed{hint}:\n{built.stderr}")
    os.replace(partial, target)
    return target


def _tail(text: str | bytes, limit: int = 1500) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-limit:].strip()


class EchoLoad:
    """A running echo_load, stepped through its handshake inside a ``with`` block.

    ``ready()`` waits for the setup to finish, ``go()`` starts the measured phase, ``result()`` waits for its
    numbers; leaving the block lets the program close its connections and exit.
    """

    def __init__(self, binary: Path, args: Sequence[str], cpu: int) -> None:
        self._process = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=pinned(cpu),
        )
        self._pending = b""

    @property
    def pid(self) -> int:
        """The load generator's process id."""
        return self._process.pid

    def __enter__(self) -> EchoLoad:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def ready(self, timeout: float) -> int:
        """Waits for the setup to finish; the number of connections set up."""
        return parse_ready(self._read_line(timeout))

    def go(self) -> None:
        """Starts the measured phase."""
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(b"go\n")
            stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"echo_load exited early: {self._error_text()}") from None

    def result(self, timeout: float) -> LoadResult:
        """Waits for the measured phase to end; its units, elapsed time and bytes echoed."""
        return parse_result(self._read_line(timeout))

    def close(self) -> None:
        """Lets the program exit (end of its input; killed if it lingers) and releases its pipes."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(5.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()

    def _read_line(self, timeout: float) -> str:
        stdout = self._process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"echo_load gave no answer within {timeout:.0f} s: {self._error_text()}")
            readable, _, _ = select.select([stdout], [], [], remaining)
            if readable:
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    self._process.wait()
                    raise BenchError(f"echo_load exited early: {self._error_text()}")
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def _error_text(self) -> str:
        # only called once something went wrong: stop the program so its stderr has an end
        if self._process.poll() is None:
            self._process.kill()
        status = self._process.wait()
        stderr = self._process.stderr
        text = stderr.read() if stderr is not None and not stderr.closed else b""
        return _tail(text) or f"exit status {status}"


def run_client(argv: Sequence[str], cpu: int, timeout: float) -> str:
    """Runs a load generator pinned to ``cpu`` and returns its stdout; BenchError if it fails or overruns."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, preexec_fn=pinned(cpu))
    except subprocess.TimeoutExpired as expired:
        raise BenchError(f"{argv[0]} ran past {timeout:.0f} s: {_tail(expired.stdout or '')}") from None
    if done.returncode != 0:
        raise BenchError(f"{argv[0]} failed with status {done.returncode}: {_tail(done.stderr + done.stdout)}")
    return done.stdout


def wrk(url: str, connections: int, seconds: int, depth: int, cpu: int) -> WrkReport:
    """Runs wrk (one thread) against ``url`` (``https://`` for TLS) for ``seconds``, ``depth`` pipelined requests
    per write."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    if depth > 1:
        argv += ["-s", str(PIPELINE_LUA), url, "--", str(depth)]
    else:
        argv.append(url)
    return parse_wrk(run_client(argv, cpu, timeout=seconds + 30))


def redis_benchmark(
    port: int,
    connections: int,
    requests: int,
    pipeline: int,
    tests: str,
    cpu: int,
    timeout: float,
    tls: TlsFiles | None = None,
    keyspace: int | None = None,
) -> dict[str, float]:
    """Runs redis-benchmark against HOST:port (over TLS, trusting ``tls``'s certificate, when it is given);
    requests per second by test, in run order.

    With ``keyspace`` (redis-benchmark's ``-r``) keys, fields, members and ZADD's scores are random integers
    below it, so hashes, sets and sorted sets grow instead of overwriting one entry.
    """
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-c", str(connections)]
    argv += ["-n", str(requests), "-P", str(pipeline), "-t", tests, "--csv"]
    if keyspace:
        argv += ["-r", str(keyspace)]
    if tls:
        argv += ["--tls", "--cacert", str(tls.cert)]
    return parse_redis_benchmark(run_client(argv, cpu, timeout))
