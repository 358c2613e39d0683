"""Worker processes (``workers=N``)."""

from __future__ import annotations

from netloop._address import Address
from netloop._engine import Engine
from netloop._handler import EventHandler
from netloop._options import Options


def start_workers(handler: EventHandler, addresses: list[Address], options: Options) -> Engine:
    raise NotImplementedError("workers=N is not available yet")
