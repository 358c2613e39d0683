"""``X-Forwarded-For`` and ``X-Forwarded-Proto`` from a trusted proxy: uvicorn's ``--proxy-headers`` rules.

A peer is trusted when its address is one of ``forwarded_allow_ips`` (addresses, networks, or ``*`` for every
peer). From a trusted peer, ``X-Forwarded-Proto`` sets the scope's ``scheme`` and ``X-Forwarded-For`` its
``client``: the first address, walking the list from the right (each proxy appends the peer it heard from), that is
not trusted; when all are, the leftmost. A forwarded address without a port gets port 0.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Sequence
from typing import Any

DEFAULT_ALLOW_IPS = "127.0.0.1,::1"
"""Whom ``forwarded_allow_ips=None`` trusts when ``FORWARDED_ALLOW_IPS`` is not set (uvicorn's default)."""

_SCHEMES = {
    # X-Forwarded-Proto -> the scheme of an http scope, of a websocket scope
    "http": ("http", "ws"),
    "https": ("https", "wss"),
    "ws": ("http", "ws"),
    "wss": ("https", "wss"),
}
_CACHED_HOST = 253  # a longer "address" is no IP address nor DNS name: judged without pinning it in the cache
_FAMILIES = ((socket.AF_INET, 32), (socket.AF_INET6, 128))


class TrustedProxies:
    """The peers whose ``X-Forwarded-*`` headers are believed, from a ``forwarded_allow_ips`` value.

    ``allow``: a comma-separated string or a list of IP addresses (``10.0.0.1``, ``::1``), networks
    (``10.0.0.0/8``) and other literals (compared as text); ``*`` trusts every peer, a Unix socket's included.
    ``None``: the ``FORWARDED_ALLOW_IPS`` environment variable, else ``127.0.0.1,::1``.
    """

    def __init__(self, allow: str | Sequence[str] | None) -> None:
        if allow is None:
            allow = os.environ.get("FORWARDED_ALLOW_IPS", DEFAULT_ALLOW_IPS)
        items = [item.strip() for item in (allow.split(",") if isinstance(allow, str) else allow)]
        self.everyone = "*" in items
        self.addresses: set[tuple[int, int]] = set()  # (bits, value): an IPv6 address however it is written
        self.networks: list[tuple[int, int, int]] = []  # (bits, value, prefix length)
        self.literals: set[str] = set()
        for item in items:
            network = _network(item) if "/" in item else None
            address = _address(item)
            if network is not None:
                self.networks.append(network)
            elif address is not None:
                self.addresses.add(address)
            else:
                self.literals.add(item)
        self._cached = functools.lru_cache(maxsize=4096)(self._judge)

    def __contains__(self, host: str | None) -> bool:
        if self.everyone:
            return True
        if not host:
            return False
        if len(host) > _CACHED_HOST:
            return self._judge(host)
        return self._cached(host)

    def _judge(self, host: str) -> bool:
        address = _address(host)
        if address is None:
            return host in self.literals
        bits, value = address
        return address in self.addresses or any(
            bits == net_bits and value >> (bits - prefix) == net_value >> (bits - prefix)
            for net_bits, net_value, prefix in self.networks
        )

    def trusts(self, client: tuple[str, int] | None) -> bool:
        """Whether a connection from ``client`` (the scope's ``client``; None for a Unix socket) is a trusted proxy."""
        return self.everyone or (client is not None and client[0] in self)

    def forwarded_client(self, forwarded_for: str) -> tuple[str, int] | None:
        """The client an ``X-Forwarded-For`` value names, by uvicorn's rule; None when it names none (empty)."""
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        chosen = hops[0]
        if not self.everyone:
            for hop in reversed(hops):
                if _host_port(hop)[0] not in self:
                    chosen = hop
                    break
        host, port = _host_port(chosen)
        return (host, port) if host else None

    def rewrite(self, scope: dict[str, Any]) -> None:
        """Set ``scope``'s ``scheme`` and ``client`` from its forwarded headers (its peer is trusted)."""
        proto: bytes | None = None
        forwarded_for: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
        if proto is not None:
            schemes = _SCHEMES.get(proto.decode("latin-1").strip())
            if schemes is not None:
                scope["scheme"] = schemes[scope["type"] == "websocket"]
        if forwarded_for:
            client = self.forwarded_client(b", ".join(forwarded_for).decode("latin-1"))
            if client is not None:
                scope["client"] = client


def _address(text: str) -> tuple[int, int] | None:
    """An IPv4 or IPv6 address as (bits, value), or None (``inet_pton``'s forms: what the server needs of
    ``ipaddress``, without loading that module into every worker)."""
    for family, bits in _FAMILIES:
        try:
            return bits, int.from_bytes(socket.inet_pton(family, text), "big")
        except (OSError, ValueError):
            pass
    return None


def _network(text: str) -> tuple[int, int, int] | None:
    """``10.0.0.0/8`` as (bits, value, prefix length), or None: a prefix past the address or host bits set."""
    address, _, length = text.partition("/")
    parsed = _address(address)
    if parsed is None or not (length.isascii() and length.isdigit()) or int(length) > parsed[0]:
        return None
    bits, value = parsed
    prefix = int(length)
    if value & ((1 << (bits - prefix)) - 1):
        return None
    return bits, value, prefix


def _host_port(hop: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80`` split into host and port (0 when none); anything that is
    none of these is the host as it stands, so a malformed value is never trimmed into a trusted one."""
    if hop.startswith("["):
        host, bracket, rest = hop[1:].partition("]")
        if not bracket:
            return hop, 0
        if not rest:
            return host, 0
        if rest[0] != ":":
            return hop, 0
        return host, _port(rest[1:]) or 0
    if hop.count(":") == 1:
        host, _, text = hop.partition(":")
        port = _port(text)
        return (host, port) if port is not None else (hop, 0)
    return hop, 0


def _port(text: str) -> int | None:
    """A port number, or None: only ASCII digits, at most 65535 (a huge one is not turned into an int)."""
    if text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535:
        return int(text)
    return None
