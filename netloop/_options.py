"""Engine options: the ``Options`` dataclass and the keyword arguments of ``run``/``start``/``Client``."""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import ssl
from typing import Any

from netloop._networks import parse_networks


class LoadBalancing(enum.Enum):
    """How a new connection picks its event loop."""

    ROUND_ROBIN = "round-robin"
    LEAST_CONNECTIONS = "least-connections"
    SOURCE_ADDR_HASH = "source-addr-hash"


class WorkerBalancing(enum.Enum):
    """How ``workers=N`` shares a listening address between worker processes."""

    REUSE_PORT = "reuse-port"  # each worker binds its own SO_REUSEPORT listener; the kernel balances
    PARENT = "parent"  # the parent accepts and passes descriptors to workers by ``load_balancing``


@dataclasses.dataclass
class Options:
    """Every engine option, with its default. Unknown keyword options raise ``TypeError``."""

    multicore: bool = False  # one event loop per CPU
    num_event_loop: int = 0  # explicit number of loops (overrides multicore when > 0)
    load_balancing: LoadBalancing = LoadBalancing.ROUND_ROBIN
    reuse_port: bool = False  # every loop owns its own SO_REUSEPORT listener
    reuse_addr: bool = True
    ticker: bool = False  # call on_tick
    tcp_nodelay: bool = True
    tcp_keepalive: float | None = None  # idle seconds before keep-alive probes; None: off
    read_buffer_cap: int = 256 * 1024  # the most one read takes
    write_buffer_cap: int = 1024 * 1024  # outbound high-water mark: reading pauses at it, resumes at half
    write_buffer_limit: int = 64 * 1024 * 1024  # hard outbound limit: passing it closes the connection; 0: none
    # Pause reading a connection while its own outbound bytes are above write_buffer_cap. False: the handler does
    # its flow control across connections (a proxy); on_drain still fires at half the cap.
    backpressure_pause: bool = True
    # Inbound counterparts of write_buffer_cap/_limit, on bytes the handler leaves unconsumed. inbound_cap: reading
    # pauses once that many are held and resumes when the handler consumes to half of it; 0 (the default): off,
    # since a handler that waits for a whole message larger than the cap would then wait for ever.
    inbound_cap: int = 0
    inbound_limit: int = 64 * 1024 * 1024  # hard: holding more closes the connection (InboundLimitError); 0: none
    socket_recv_buffer: int | None = None  # SO_RCVBUF
    socket_send_buffer: int | None = None  # SO_SNDBUF
    edge_triggered: bool = False
    backlog: int = 1024
    logger: logging.Logger | None = None
    pre_write: bool = False  # call on_pre_write before each write
    workers: int | str | None = None  # worker processes: N, 0 or "auto" for one per CPU; None: this process only
    worker_balancing: WorkerBalancing = WorkerBalancing.REUSE_PORT
    multicast_interface: str | None = None  # interface address (or name) for joining UDP multicast groups
    bind_to_device: str | None = None  # SO_BINDTODEVICE interface name (Linux)
    poller: str | None = None  # force "epoll", "kqueue" or "poll"
    shutdown_timeout: float = 5.0  # how long a graceful stop waits for outbound bytes to flush
    idle_timeout: float | None = None  # no byte either way for this long: the connection is closed
    read_timeout: float | None = None  # a partial message (bytes left unconsumed) gets no more bytes for this long
    max_connections: int = 0  # open connections per engine (per worker with workers=N); 0: no limit
    # open stream connections from one client address (the PROXY header's when one is given), per engine like
    # max_connections; 0: no limit
    max_connections_per_source: int = 0
    tls: ssl.SSLContext | dict[str, ssl.SSLContext | None] | None = None  # see tls_for
    tls_handshake_timeout: float = 10.0  # a TLS handshake not done by then is dropped
    linger_timeout: float = 5.0  # a closing connection's deadline to make write progress, then for the peer's EOF
    proxy_protocol: str = "off"  # PROXY protocol header on every connection: "off", "v1", "v2" or "auto"
    proxy_protocol_from: str | tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # who may send it; "*": anyone
    proxy_header_timeout: float = 5.0  # a PROXY header not complete by then closes the connection
    drain_timeout: float = 0.0  # a graceful stop serves on this long after on_shutdown, for handlers to close
    # workers: a restart's old workers serve on this long (or drain_timeout, if longer) after their on_shutdown, so
    # that handlers end each connection at a message boundary and no request is cut; 0: as a stop does
    restart_drain_timeout: float = 2.0
    heartbeat_timeout: float | None = 30.0  # workers: one whose loop misses its heartbeat this long is replaced
    debug: bool = False  # misuse logged or raised, slow callbacks reported (docs/asyncio.md); also NETLOOP_DEBUG=1

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` for a bad value, naming the option.

        Checks only: no I/O, and the ``tls`` contexts are left as they are (the engine prepares them when it starts).
        """
        _check_int("num_event_loop", self.num_event_loop, 0)
        _check_int("read_buffer_cap", self.read_buffer_cap, 1024)
        _check_int("write_buffer_cap", self.write_buffer_cap, 1)
        _check_int("write_buffer_limit", self.write_buffer_limit, 0)
        _check_int("max_connections", self.max_connections, 0)
        _check_int("inbound_cap", self.inbound_cap, 0)
        _check_int("inbound_limit", self.inbound_limit, 0)
        if self.inbound_limit and self.inbound_limit < self.inbound_cap:
            raise ValueError(
                f"inbound_limit ({self.inbound_limit}) must be 0 or at least inbound_cap ({self.inbound_cap})"
            )
        _check_int("max_connections_per_source", self.max_connections_per_source, 0)
        if self.write_buffer_limit and self.write_buffer_limit < self.write_buffer_cap:
            raise ValueError(
                f"write_buffer_limit ({self.write_buffer_limit}) must be 0 or at least"
                f" write_buffer_cap ({self.write_buffer_cap})"
            )
        _check_int("backlog", self.backlog, 1)
        for name in ("socket_recv_buffer", "socket_send_buffer"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 1)
        if not isinstance(self.load_balancing, LoadBalancing):
            self.load_balancing = LoadBalancing(self.load_balancing)
        if not isinstance(self.worker_balancing, WorkerBalancing):
            self.worker_balancing = WorkerBalancing(self.worker_balancing)
        if self.tcp_keepalive is not None and self.tcp_keepalive <= 0:
            raise ValueError(f"tcp_keepalive must be positive seconds or None, got {self.tcp_keepalive!r}")
        if self.shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must be >= 0, got {self.shutdown_timeout!r}")
        self._validate_tls()
        for name in ("idle_timeout", "read_timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"{name} must be positive seconds or None, got {value!r}")
        if self.tls_handshake_timeout <= 0:
            raise ValueError(f"tls_handshake_timeout must be > 0 seconds, got {self.tls_handshake_timeout!r}")
        if self.linger_timeout <= 0:
            raise ValueError(f"linger_timeout must be > 0 seconds, got {self.linger_timeout!r}")
        if self.proxy_protocol not in ("off", "v1", "v2", "auto"):
            raise ValueError(f"proxy_protocol must be 'off', 'v1', 'v2' or 'auto', got {self.proxy_protocol!r}")
        parse_networks(self.proxy_protocol_from)
        for name in ("proxy_header_timeout", "heartbeat_timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"{name} must be positive seconds, got {value!r}")
        for name in ("drain_timeout", "restart_drain_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
        if self.workers is not None and self.workers != "auto":
            _check_int("workers", self.workers, 0)
        if self.logger is not None and not isinstance(self.logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger, got {type(self.logger).__name__}")

    def tls_for(self, text: str, network: str) -> ssl.SSLContext | None:
        """The TLS context of the stream address ``text`` as it was given: ``tls`` itself when it is one context
        (every stream listener is TLS), else ``tls[text]`` (addresses not in the mapping are plaintext)."""
        tls = self.tls
        if tls is None or network == "udp":
            return None
        if isinstance(tls, ssl.SSLContext):
            return tls
        return tls.get(text)

    def loop_count(self) -> int:
        """How many event loops these options ask for."""
        if self.num_event_loop > 0:
            return self.num_event_loop
        return (os.cpu_count() or 1) if self.multicore else 1

    def _validate_tls(self) -> None:
        tls = self.tls
        if tls is None:
            return
        contexts = [tls] if isinstance(tls, ssl.SSLContext) else list(tls.values()) if isinstance(tls, dict) else None
        if contexts is None:
            raise TypeError(
                f"tls must be an ssl.SSLContext or a dict of address -> SSLContext, got {type(tls).__name__}"
            )
        for ctx in contexts:
            if ctx is not None and not isinstance(ctx, ssl.SSLContext):
                raise TypeError(f"tls contexts must be ssl.SSLContext, got {type(ctx).__name__}")
        if isinstance(tls, dict) and self.workers is not None and self.worker_balancing is WorkerBalancing.PARENT:
            raise ValueError(
                "a tls mapping per address needs worker_balancing=REUSE_PORT: with PARENT a worker cannot tell which"
                " listener a connection came from; give one SSLContext for every stream listener instead"
            )

    def tls_contexts(self) -> list[ssl.SSLContext]:
        """Every TLS context ``tls`` gives (once each)."""
        tls = self.tls
        if isinstance(tls, ssl.SSLContext):
            return [tls]
        if isinstance(tls, dict):
            return list({id(ctx): ctx for ctx in tls.values() if ctx is not None}.values())
        return []

    def restart_drain(self) -> float:
        """How long a restart's old workers serve on after ``on_shutdown``."""
        return max(self.drain_timeout, self.restart_drain_timeout)

    def worker_count(self) -> int:
        """How many worker processes ``workers`` asks for (0 when not using workers)."""
        if self.workers is None:
            return 0
        if self.workers == "auto" or self.workers == 0:
            return os.cpu_count() or 1
        return int(self.workers)

    def get_logger(self) -> logging.Logger:
        return self.logger or logging.getLogger("netloop")


_FIELDS = frozenset(f.name for f in dataclasses.fields(Options))


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"option {name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"option {name} must be >= {low}, got {value}")


def make_options(options: Options | None, overrides: dict[str, Any]) -> Options:
    """Merge ``options`` (or the defaults) with keyword ``overrides``; unknown names raise ``TypeError``."""
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    base = options if options is not None else Options()
    if not isinstance(base, Options):
        raise TypeError(f"options must be a netloop.Options, got {type(base).__name__}")
    merged = dataclasses.replace(base, **overrides)
    merged.validate()
    return merged
