"""Load balancers: pick the event loop for a new connection."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from netloop._options import LoadBalancing

L = TypeVar("L")


def source_key(remote: Any) -> bytes:
    """The part of a peer address that source-address hashing uses: the host (the whole path for Unix)."""
    host = remote[0] if isinstance(remote, tuple) else remote
    return host.encode() if isinstance(host, str) else bytes(host or b"")


def new_balancer(kind: LoadBalancing, targets: Sequence[L], load: Callable[[L], int]) -> Callable[[Any], L]:
    """A function ``pick(remote_addr) -> target``. ``load`` tells a target's current connection count."""
    if not targets:
        raise ValueError("a balancer needs at least one target")
    if len(targets) == 1:
        only = targets[0]
        return lambda remote: only
    if kind is LoadBalancing.ROUND_ROBIN:
        cycle = itertools.cycle(targets)
        return lambda remote: next(cycle)
    if kind is LoadBalancing.LEAST_CONNECTIONS:
        return lambda remote: min(targets, key=load)
    if kind is LoadBalancing.SOURCE_ADDR_HASH:
        n = len(targets)
        return lambda remote: targets[zlib.crc32(source_key(remote)) % n]
    raise ValueError(f"unknown load balancing {kind!r}")
