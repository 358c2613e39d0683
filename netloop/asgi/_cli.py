"""The command line of ``python -m netloop.asgi``: ``netloop.serve``'s flags, and uvicorn's names for the ASGI ones.

Signals: SIGTERM and SIGINT stop gracefully (stop accepting; requests in flight get ``--graceful-timeout`` to end,
then the app's lifespan shutdown; then the connections close). SIGHUP, with ``--workers``, restarts the workers: with
``--worker-balancing parent`` no request is dropped (the default ``reuse-port`` can reset a connection queued on a
retiring worker). Exit status: 0 after a stop, 2 for a bad command line, 3 when the app's startup
fails, 1 when the server fails to start otherwise.
"""

from __future__ import annotations

import argparse
import logging

from netloop._address import parse_address
from netloop._errors import NetloopError
from netloop.asgi._config import Config, load_app
from netloop.asgi._lifespan import StartupFailed
from netloop.asgi._serve import serve
from netloop.serve import build_parser as serve_parser
from netloop.serve import check_target, options_from


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _size(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = serve_parser()
    parser.prog = "python -m netloop.asgi"
    parser.description = __doc__
    for action in parser._actions:
        if action.dest == "target":
            action.help = "the ASGI application, as module:attribute (e.g. myapp.main:app)"
    add = parser.add_argument
    add("--host", default=None, help="bind this host (with --port; default 127.0.0.1); --bind wins")
    add("--port", type=int, default=None, help="bind this port (default 8000)")
    add("--uds", metavar="PATH", default=None, help="bind a Unix socket at PATH")
    add("--factory", action="store_true", help="the target is a callable that returns the app")
    add("--root-path", default="", help="the ASGI root_path: the prefix the app is mounted under behind a proxy")
    add("--timeout-keep-alive", type=_positive, default=Config.timeout_keep_alive,
        help="close a kept-alive connection idle this many seconds")  # fmt: skip
    add("--timeout-request", type=_positive, default=None,
        help="a request line and headers must arrive within this many seconds of their first byte")  # fmt: skip
    add("--limit-concurrency", type=_size, default=None,
        help="most running requests (and open connections) per process; past it: 503")  # fmt: skip
    add("--limit-request-head", type=_size, default=Config.limit_request_head,
        help="most bytes of a request line and headers; past it: 431")  # fmt: skip
    add("--limit-request-fields", type=_size, default=Config.limit_request_fields,
        help="most header fields of a request; past it: 431")  # fmt: skip
    add("--limit-request-body", type=_size, default=None, help="most bytes of a request body; past it: 413")
    add("--proxy-headers", dest="proxy_headers", action="store_true", default=True,
        help="from a peer in --forwarded-allow-ips, X-Forwarded-Proto and X-Forwarded-For set the scheme and client"
        " (default)")  # fmt: skip
    add("--no-proxy-headers", dest="proxy_headers", action="store_false", help="ignore X-Forwarded-* headers")
    add("--forwarded-allow-ips", metavar="IPS", default=None,
        help="comma-separated IP addresses and networks whose X-Forwarded-* headers are believed, * for all"
        " (default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1)")  # fmt: skip
    add("--lifespan", choices=("auto", "on", "off"), default="auto", help="the ASGI lifespan protocol")
    add("--access-log", dest="access_log", action="store_true", default=True, help="log each response (default)")
    add("--no-access-log", dest="access_log", action="store_false", help="do not log each response")
    add("--ws", choices=("auto", "wsproto", "none"), default="auto", help="WebSocket support (none: answer as HTTP)")
    add("--ws-max-size", type=_size, default=Config.ws_max_size, help="most bytes of one WebSocket message")
    add("--ws-ping-interval", type=float, default=Config.ws_ping_interval, help="seconds between pings (0: none)")
    add("--ws-ping-timeout", type=float, default=Config.ws_ping_timeout, help="seconds a pong may take (0: none)")
    return parser


def config_from(args: argparse.Namespace) -> Config:
    return Config(
        root_path=args.root_path,
        timeout_keep_alive=args.timeout_keep_alive,
        limit_concurrency=args.limit_concurrency,
        limit_request_head=args.limit_request_head,
        limit_request_fields=args.limit_request_fields,
        limit_request_body=args.limit_request_body,
        lifespan=args.lifespan,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        access_log=args.access_log,
        ws=args.ws != "none",
        ws_max_size=args.ws_max_size,
        ws_ping_interval=args.ws_ping_interval or None,
        ws_ping_timeout=args.ws_ping_timeout or None,
        scheme="https" if args.tls_cert else "http",
    )


def binds_from(args: argparse.Namespace) -> list[str]:
    binds: list[str] = list(args.bind or [])
    if args.uds:
        binds.append(f"unix://{args.uds}")
    if not binds or args.host is not None or args.port is not None:
        host = args.host if args.host is not None else "127.0.0.1"
        port = args.port if args.port is not None else 8000
        binds.append(f"tcp6://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}")
    return binds


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(process)d %(levelname)s %(message)s"
    )
    binds = binds_from(args)
    try:
        for text in binds:
            if text.partition("://")[0].lower() != "systemd":
                parse_address(text)
        options = options_from(args)
        # Requests in flight get --graceful-timeout to end (and the app's lifespan shutdown runs in that time).
        options["drain_timeout"] = max(options["drain_timeout"], args.graceful_timeout)
        if args.timeout_request is not None:
            options["read_timeout"] = args.timeout_request
        config = config_from(args)
        if args.workers is None:
            app = load_app(args.target, args.factory)
        else:
            check_target(args.target)
    except (NetloopError, OSError, ValueError, TypeError) as exc:
        parser.error(str(exc))
    try:
        serve(app if args.workers is None else args.target, *binds, config=config, factory=args.factory, **options)
    except StartupFailed as exc:
        logging.getLogger("netloop.asgi").error("%s", exc)
        return 3
    except (NetloopError, OSError, ValueError, TypeError) as exc:
        logging.getLogger("netloop.asgi").error("netloop.asgi: %s", exc)
        return 1
    return 0
