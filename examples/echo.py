"""Echo server: every byte a client sends comes straight back (TCP, UDP and Unix).

python -m examples.echo --port 9000 [--host 127.0.0.1] [--loops N] [--udp] [--unix PATH] [--reuse-port]
    [--tls-cert FILE --tls-key FILE]   (TLS on TCP and Unix; see python -m examples.certs)
"""

from __future__ import annotations

import argparse
import logging

import netloop
from examples.certs import add_tls_flags, tls_context


class Echo(netloop.EventHandler):
    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.write(conn.next())
        return None


def addresses(host: str, port: int, udp: bool, unix: str | None) -> list[str]:
    """The address list the flags ask for (TCP always, UDP and Unix when asked)."""
    bracketed = f"[{host}]" if ":" in host else host
    addrs = [f"tcp://{bracketed}:{port}"]
    if udp:
        addrs.append(f"udp://{bracketed}:{port}")
    if unix:
        addrs.append(f"unix://{unix}")
    return addrs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--loops", type=int, default=1, help="event loops (threads)")
    parser.add_argument("--udp", action="store_true", help="also serve UDP on the same port")
    parser.add_argument("--unix", metavar="PATH", help="also serve a Unix socket at PATH")
    parser.add_argument("--reuse-port", action="store_true")
    add_tls_flags(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    handler = Echo()
    addrs = addresses(args.host, args.port, args.udp, args.unix)
    logging.info("echo server on %s", ", ".join(addrs))
    tls = tls_context(args)
    netloop.run(handler, *addrs, num_event_loop=args.loops, reuse_port=args.reuse_port, tls=tls)


if __name__ == "__main__":
    main()
