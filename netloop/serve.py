"""Run a netloop server from the command line: no code change for timeouts, limits, PROXY protocol, TLS, workers.

    python -m netloop.serve myapp.server:Handler --bind tcp://0.0.0.0:8080 --workers 4 --idle-timeout 30

The target is ``module:attribute``: an ``EventHandler`` subclass, an instance, or a callable that returns one. With
``--workers`` the parent never imports it: each worker does, after the fork, so a restart loads the code on disk.

Signals: SIGTERM and SIGINT stop gracefully (stop accepting, ``on_shutdown``, ``--drain-timeout``, flush and close
within ``--graceful-timeout``). SIGHUP, with ``--workers``, restarts the workers: new workers start, and once they all
serve, the old ones drain (``--restart-drain-timeout``) and exit; a new version that fails to boot leaves the old one
serving. With ``--worker-balancing parent`` no request or connection is dropped; with reuse-port (the default) each
old worker closes a listener of its own, and a connection can be reset on the way (use parent where none may be).
Exit status: 0 after a stop, 2 for a bad command line or target, 1 when the server fails to start.
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from typing import Any

from netloop._address import parse_address
from netloop._entry import run
from netloop._errors import NetloopError
from netloop._handler_loader import load_handler
from netloop._options import Options, WorkerBalancing

_LEVELS = ("debug", "info", "warning", "error", "critical")


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive seconds, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m netloop.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", help="the handler, as module:attribute (a class, an instance, or a factory)")
    add = parser.add_argument
    add("-b", "--bind", action="append", metavar="ADDRESS",
        help="an address to serve, repeatable: tcp://HOST:PORT, tcp6://[::1]:PORT, udp://..., unix:///PATH, fd://N,"
             " systemd:// or systemd://NAME (default: tcp://127.0.0.1:8000)")  # fmt: skip
    add("-w", "--workers", type=_count, default=None,
        help="worker processes (0: one per CPU); without it, this process serves")  # fmt: skip
    add("--worker-balancing", choices=[b.value for b in WorkerBalancing], default=WorkerBalancing.REUSE_PORT.value,
        help="how workers share an address: own SO_REUSEPORT listeners, or the parent hands them out")  # fmt: skip
    add("--loops", type=_count, default=1, help="event loops per process (0: one per CPU)")
    add("--reuse-port", action="store_true", help="one SO_REUSEPORT listener per loop")
    add("--backlog", type=int, default=Options.backlog, help="listen() backlog")
    add("--idle-timeout", type=_seconds, help="close a connection with no byte either way for this long")
    add("--read-timeout", type=_seconds, help="close a connection whose partial message stalls this long")
    add("--max-connections", type=_count, default=0, help="open connections per process; past it, accept and close")
    add("--max-connections-per-source", type=_count, default=0, metavar="N",
        help="open connections per client address (a PROXY header's) per process; past it, refuse")  # fmt: skip
    add("--proxy-protocol", choices=("off", "v1", "v2", "auto"), default="off",
        help="expect a PROXY protocol header on every connection")  # fmt: skip
    add("--proxy-allow-from", default=None, metavar="NETWORKS",
        help="comma-separated networks allowed to send it, or '*' (default: loopback)")  # fmt: skip
    add("--proxy-header-timeout", type=_seconds, default=Options.proxy_header_timeout)
    add("--tls-cert", metavar="FILE", help="serve TLS on every stream address with this certificate chain (PEM)")
    add("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    add("--timeout", type=_seconds, default=Options.heartbeat_timeout,
        help="workers: kill and replace a worker silent this long (heartbeat)")  # fmt: skip
    add("--graceful-timeout", type=_seconds, default=Options.shutdown_timeout,
        help="how long a stop may take to flush and close connections")  # fmt: skip
    add("--drain-timeout", type=float, default=0.0,
        help="a stop serves on this long after on_shutdown, so handlers end connections at a boundary")  # fmt: skip
    add("--restart-drain-timeout", type=float, default=Options.restart_drain_timeout,
        help="workers: a SIGHUP restart's old workers serve on this long after on_shutdown (at least"
             " --drain-timeout), so no request is cut")  # fmt: skip
    add("--ticker", action="store_true", help="call the handler's on_tick (e.g. the HTTP example's Date refresh)")
    add("--log-level", choices=_LEVELS, default="info")
    return parser


def check_target(target: str) -> None:
    """Raise ``NetloopError`` unless ``target`` has the ``module:attribute`` form (nothing is imported)."""
    module, sep, attr = target.partition(":")
    if not (sep and module and attr):
        raise NetloopError(f"handler {target!r}: expected 'module:attribute', e.g. 'myapp.server:Handler'")


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    """The ``netloop.run`` keyword options the parsed command line asks for."""
    options: dict[str, Any] = {
        "num_event_loop": args.loops,
        "multicore": args.loops == 0,
        "reuse_port": args.reuse_port,
        "backlog": args.backlog,
        "idle_timeout": args.idle_timeout,
        "read_timeout": args.read_timeout,
        "max_connections": args.max_connections,
        "max_connections_per_source": args.max_connections_per_source,
        "proxy_protocol": args.proxy_protocol,
        "proxy_header_timeout": args.proxy_header_timeout,
        "heartbeat_timeout": args.timeout,
        "shutdown_timeout": args.graceful_timeout,
        "drain_timeout": args.drain_timeout,
        "restart_drain_timeout": args.restart_drain_timeout,
        "ticker": args.ticker,
    }
    if args.proxy_allow_from is not None:
        networks = tuple(n.strip() for n in args.proxy_allow_from.split(",") if n.strip())
        options["proxy_protocol_from"] = networks
    if args.workers is not None:
        options["workers"] = args.workers
        options["worker_balancing"] = args.worker_balancing
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise NetloopError("--tls-cert and --tls-key go together")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        options["tls"] = ctx
    return options


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(process)d %(levelname)s %(message)s"
    )
    binds = args.bind or ["tcp://127.0.0.1:8000"]
    try:
        for text in binds:
            # A bad --bind is a bad command line (status 2), not a failed start. systemd:// is checked by the start:
            # reading what systemd passed takes its variables from the environment.
            if text.partition("://")[0].lower() != "systemd":
                parse_address(text)
        options = options_from(args)
        # Without workers the handler is imported here; with them, only the workers import it (after the fork), and
        # a target they cannot load fails the start with their error.
        handler = args.target if args.workers is not None else load_handler(args.target)
        if args.workers is not None:
            check_target(args.target)
    except (NetloopError, OSError, ValueError, TypeError) as exc:
        parser.error(str(exc))
    try:
        run(handler, *binds, **options)
    except (NetloopError, OSError, ValueError, TypeError) as exc:
        logging.getLogger("netloop").error("netloop.serve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
