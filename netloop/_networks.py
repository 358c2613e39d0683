"""Who may send a PROXY header: ``proxy_protocol_from`` parsed into networks, and the check of a peer against them.

Pure functions over the standard library's ``ipaddress``: the options check a value with them, and the loops
decide with them, without either importing the other.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str | Iterable[str]) -> tuple[Network, ...] | None:
    """``proxy_protocol_from`` as networks; None for ``"*"`` (any source). Raises ``ValueError`` naming a bad one."""
    items = [spec] if isinstance(spec, str) else list(spec)
    if "*" in items:
        return None
    networks = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"proxy_protocol_from takes network strings, got {item!r}")
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"proxy_protocol_from: {item!r} is not a network: {exc}") from None
    return tuple(networks)


def allowed(remote: Any, networks: tuple[Network, ...] | None) -> bool:
    """Whether a peer at ``remote`` may send a PROXY header (a Unix socket's peer always may: it is local)."""
    if networks is None or not isinstance(remote, tuple):
        return True
    try:
        address = ipaddress.ip_address(remote[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
