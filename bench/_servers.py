"""The contenders' server processes: what each runs (plaintext or TLS), pinned to one CPU, stopped gracefully."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench._aio import AIO_CONTENDERS, aio_server_argv, aio_unavailable
from bench._asgi import ASGI_CONTENDERS, asgi_server_argv, asgi_unavailable
from bench._errors import BenchError
from bench._proc import executable, pinned
from bench._tls import TlsFiles, negotiated

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0

CONTENDERS = ("netloop", "netloop-pure", "asyncio", "uvloop", "aiofastnet", "redis", *ASGI_CONTENDERS, *AIO_CONTENDERS)
"""Every contender, in the order the reports list them. ``netloop`` is the compiled core (when it is built),
``netloop-pure`` the same example servers on the pure-Python core (``NETLOOP_PURE=1``); ``aio-*`` are the asyncio
styles of ``bench._aio``."""

_NETLOOPS = ("netloop", "netloop-pure")

_AIO_LOOPS = ("asyncio", "uvloop", "aiofastnet")
"""The contenders ``bench.servers.aio`` serves, each with its ``--loop``."""

_NETLOOP_SERVERS = {"echo": "examples.echo", "http": "bench.servers.netloop_http", "resp": "resp_server"}
_SESSIONS = {
    "echo": (),
    "http": ("bench.http_proto",),
    "resp": ("resp_server.session", "resp_server.commands", "resp_server.store"),
}


def _module_file(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__main__.py" if path.is_dir() else path.with_suffix(".py")


def server_argv(contender: str, proto: str, port: int, tls: TlsFiles | None = None) -> list[str]:
    """The command line of ``contender``'s server for ``proto`` (echo, http or resp) on HOST:port, over TLS
    with the certificate ``tls`` when it is given."""
    python, where = sys.executable, ["--port", str(port)]
    secure = tls.server_flags() if tls else []
    if contender in ASGI_CONTENDERS:
        return asgi_server_argv(contender, proto, HOST, port)
    if contender in AIO_CONTENDERS:
        return aio_server_argv(contender, proto, HOST, port)
    if contender in _NETLOOPS:
        return [python, "-m", _NETLOOP_SERVERS[proto], "--host", HOST, *where, "--loops", "1", *secure]
    if contender in _AIO_LOOPS:
        aio = [python, "-m", "bench.servers.aio", "--loop", contender, "--proto", proto, "--host", HOST]
        return [*aio, *where, *secure]
    if contender == "redis" and proto == "resp":
        redis = shutil.which("redis-server") or "redis-server"
        if tls:
            where = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
            where += ["--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key)]
        return [redis, "--save", "", "--appendonly", "no", "--bind", HOST, *where]
    raise ValueError(f"{contender} has no {proto} server")


def unavailable(contender: str, proto: str, tls: bool = False) -> str | None:
    """Why ``contender`` cannot serve ``proto`` (over TLS, if ``tls``) on this machine, or None when it can."""
    needed: tuple[str, ...] = ("examples.certs",) if tls and contender != "redis" else ()
    if contender in ASGI_CONTENDERS:
        return "no TLS workload for the ASGI servers" if tls else asgi_unavailable(contender, proto)
    if contender in AIO_CONTENDERS:
        return "no TLS workload for the asyncio styles" if tls else aio_unavailable(contender, proto)
    if contender in _NETLOOPS:
        needed += (_NETLOOP_SERVERS[proto],)
    elif contender in _AIO_LOOPS:
        needed += _SESSIONS[proto]
        if contender != "asyncio" and importlib.util.find_spec(contender) is None:
            return f"{contender} is not installed (pip install {contender})"
    elif contender == "redis":
        if proto != "resp":
            return f"redis-server does not speak {proto}"
        if shutil.which("redis-server") is None:
            return "redis-server is not installed"
    else:
        return f"unknown contender {contender!r}"
    missing = [m for m in needed if not _module_file(m).exists()]
    return f"{', '.join(missing)} not found" if missing else None


def server_env(contender: str) -> dict[str, str]:
    """The environment ``contender``'s server runs with: the netloop contenders pick their core (the asyncio
    styles the compiled one)."""
    env = dict(os.environ)
    if contender in _NETLOOPS or contender == "netloop-asgi" or contender in AIO_CONTENDERS:
        env["NETLOOP_PURE"] = "1" if contender == "netloop-pure" else "0"
    return env


def free_port() -> int:
    """A TCP port on HOST that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """A contender's server process, pinned to one CPU and listening on HOST:port inside a ``with`` block.

    ``pid`` is the server program itself (checked on start), so /proc/PID is the process doing the work. With
    ``tls`` it serves TLS with that certificate; the start checks it with one handshake, and ``negotiated`` says
    what the server chose (version and cipher).
    """

    def __init__(self, contender: str, proto: str, cpu: int, log_dir: Path, tls: TlsFiles | None = None) -> None:
        self.contender = contender
        self.proto = proto
        self.cpu = cpu
        self.tls = tls
        self.negotiated: str | None = None
        self.port = free_port()
        self.argv = server_argv(contender, proto, self.port, tls)
        self.log_path = log_dir / f"{contender}-{proto}{'-tls' * bool(tls)}-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._process is None:
            raise BenchError(f"{self.contender} {self.proto} server is not running")
        return self._process.pid

    def __enter__(self) -> Server:
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=server_env(self.contender),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pinned(self.cpu),
            )
        try:
            self._wait_listening()
            self._check_identity()
            if self.tls:
                self._check_tls(self.tls)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Asks the server to stop (SIGTERM), killing it if it has not exited within STOP_TIMEOUT_S."""
        if self._process is not None:
            stop_process(self._process)

    def log_tail(self, limit: int = 1500) -> str:
        """The last ``limit`` characters the server printed."""
        try:
            return self.log_path.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self._process is not None
            status = self._process.poll()
            if status is not None:
                raise BenchError(
                    f"{self.contender} {self.proto} server exited with status {status}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=1.0):
                    return
            except OSError as error:
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.contender} {self.proto} server is not listening: {error}") from None
            # polling the port is the only readiness signal every contender shares
            time.sleep(0.02)

    def _check_tls(self, tls: TlsFiles) -> None:
        try:
            self.negotiated = negotiated(HOST, self.port, tls, START_TIMEOUT_S)
        except OSError as error:
            raise BenchError(f"{self.contender} {self.proto} server: no TLS handshake: {error}") from None

    def _check_identity(self) -> None:
        program = executable(self.pid)
        if program != os.path.realpath(self.argv[0]):
            raise BenchError(f"pid {self.pid} runs {program}, not {self.argv[0]}")
        affinity = os.sched_getaffinity(self.pid)
        if affinity != {self.cpu}:
            raise BenchError(f"pid {self.pid} may run on CPUs {sorted(affinity)}, not only on CPU {self.cpu}")


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM ``process`` (a graceful stop, as an operator would), killing it if it outlives STOP_TIMEOUT_S."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
