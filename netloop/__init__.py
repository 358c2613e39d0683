"""netloop: a non-blocking, event-loop networking framework for Python (TCP, UDP, Unix sockets).

Everything public is importable from here; the modules behind it are private and may change.
"""

from netloop._client import Client
from netloop._compiled import compiled
from netloop._conn import Conn
from netloop._engine import Engine
from netloop._entry import run, start
from netloop._errors import (
    AddressError,
    CodecError,
    ConnClosedError,
    ConnTimeoutError,
    EngineStoppedError,
    FrameTooLongError,
    InboundLimitError,
    NetloopError,
    OutboundLimitError,
    PoolOverloadError,
    ShortBufferError,
)
from netloop._handler import Action, EventHandler
from netloop._loop_api import EventLoop
from netloop._options import LoadBalancing, Options, WorkerBalancing
from netloop._poller import available_pollers
from netloop._pool import WorkerPool
from netloop._tls import TlsInfo
from netloop.proxy_protocol import ProxyInfo, ProxyProtocolError

# Last: netloop.aio plugs asyncio into the loops (every loop an asyncio loop, async def events).
from netloop import aio  # isort: skip

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AddressError",
    "Client",
    "CodecError",
    "Conn",
    "ConnClosedError",
    "ConnTimeoutError",
    "Engine",
    "EngineStoppedError",
    "EventHandler",
    "EventLoop",
    "FrameTooLongError",
    "InboundLimitError",
    "LoadBalancing",
    "NetloopError",
    "Options",
    "OutboundLimitError",
    "PoolOverloadError",
    "ProxyInfo",
    "ProxyProtocolError",
    "ShortBufferError",
    "TlsInfo",
    "WorkerBalancing",
    "WorkerPool",
    "__version__",
    "aio",
    "available_pollers",
    "compiled",
    "run",
    "start",
]
