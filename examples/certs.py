"""Not an example: the TLS support every example server shares, and a throw-away certificate to try it with.

    python -m examples.certs --out DIR [--days 30]
    python -m examples.http_server --port 8443 --tls-cert DIR/cert.pem --tls-key DIR/key.pem
    curl --cacert DIR/cert.pem https://localhost:8443/

:func:`add_tls_flags` gives a server's command line ``--tls-cert FILE --tls-key FILE``; :func:`tls_context` turns
them into the ``ssl.SSLContext`` that netloop's ``tls`` option takes (or None: plaintext). One copy of those few
lines, so that no example imports another for them.

``python -m examples.certs`` runs the ``openssl`` command (``openssl req -x509``) and writes ``DIR/cert.pem`` and
``DIR/key.pem`` (mode 0600): self-signed, for localhost, 127.0.0.1 and ::1, its own CA, so clients trust it with
``--cacert DIR/cert.pem`` (curl, redis-cli) or ``cafile=`` (Python). Never use it for anything but trying things out.
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import subprocess
from pathlib import Path

HOSTS = "DNS:localhost,IP:127.0.0.1,IP:::1"


def write_self_signed(out: Path, days: int = 30) -> tuple[Path, Path]:
    """Write ``out/cert.pem`` and ``out/key.pem`` (a new P-256 key); returns their paths."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed (Debian: apt-get install openssl)")
    out.mkdir(parents=True, exist_ok=True)
    cert, key = out / "cert.pem", out / "key.pem"
    key.unlink(missing_ok=True)
    key.touch(mode=0o600)  # the key is never readable by others, not even while openssl writes it
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    command += ["-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", "/CN=localhost"]
    for extension in (
        f"subjectAltName={HOSTS}",
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,digitalSignature,keyCertSign",
        "extendedKeyUsage=serverAuth",
    ):
        command += ["-addext", extension]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


def add_tls_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls-cert`` and ``--tls-key`` to an example's command line."""
    parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server context ``--tls-cert``/``--tls-key`` ask for, or None (plaintext) when neither is given."""
    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise SystemExit("--tls-cert and --tls-key go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    return ctx


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="directory to write cert.pem and key.pem to")
    parser.add_argument("--days", type=int, default=30, help="days the certificate stays valid")
    args = parser.parse_args(argv)
    cert, key = write_self_signed(args.out, args.days)
    print(f"certificate: {cert}\nprivate key: {key}")


if __name__ == "__main__":
    main()
