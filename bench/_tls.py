"""TLS for the benchmark: the throw-away certificate every TLS server gets, and the harness's own TLS checks.

The certificate is made at the start of a run (``openssl req``, by the examples' own ``write_self_signed``: a
P-256 key, self-signed for 127.0.0.1) in the run's temporary directory, and is gone when the run ends.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench._errors import BenchError


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate and its private key, as PEM files."""

    cert: Path
    key: Path

    def server_flags(self) -> list[str]:
        """The ``--tls-cert``/``--tls-key`` options every netloop example and ``bench.servers.aio`` take."""
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]


def make_certificate(directory: Path) -> TlsFiles:
    """A new self-signed certificate and key in ``directory``; BenchError if openssl cannot make one."""
    try:
        from examples.certs import write_self_signed
    except ImportError as error:
        raise BenchError(f"examples.certs is not available: {error}") from None
    try:
        cert, key = write_self_signed(directory, days=1)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        raise BenchError(f"cannot make a TLS certificate: {error}") from None
    return TlsFiles(cert, key)


def negotiated(host: str, port: int, files: TlsFiles, timeout: float) -> str:
    """Shakes hands with the server at host:port, checking its certificate; what it chose, e.g.
    ``TLSv1.3 TLS_AES_256_GCM_SHA384``. OSError (ssl.SSLError included) if it cannot.
    """
    context = ssl.create_default_context(cafile=str(files.cert))
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        cipher = tls.cipher()
        return f"{tls.version()} {cipher[0] if cipher else '?'}"


def redis_benchmark_lacks_tls() -> str | None:
    """Why redis-benchmark cannot run the TLS workloads (a build without TLS), or None when it can."""
    try:
        done = subprocess.run(["redis-benchmark", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"redis-benchmark --help failed: {error}"
    if "--tls" not in done.stdout + done.stderr:
        return "this redis-benchmark was built without TLS (no --tls in redis-benchmark --help)"
    return None
