"""Exceptions raised by netloop; all are importable from ``netloop``."""

from __future__ import annotations


class NetloopError(Exception):
    """Base class of every error netloop raises on its own account."""


class AddressError(NetloopError, ValueError):
    """An address string could not be parsed or is not supported (the message names it)."""


class ShortBufferError(NetloopError):
    """More bytes were asked of a connection's inbound buffer than it holds; nothing was consumed."""


class FrameTooLongError(NetloopError):
    """A frame (declared or accumulated) exceeds the codec's ``max_frame_length``."""


class CodecError(NetloopError):
    """Inbound bytes do not form a valid frame for the codec (e.g. a negative adjusted length)."""


class PoolOverloadError(NetloopError):
    """A non-blocking ``WorkerPool`` is full; the job was not accepted."""


class ConnClosedError(NetloopError, ConnectionError):
    """An operation was attempted on a connection that is already closed."""


class EngineStoppedError(NetloopError):
    """The engine or event loop is stopped and takes no more work."""


class ConnTimeoutError(NetloopError, TimeoutError):
    """A connection was closed by a timeout; ``kind`` names which (``idle_timeout``, ``read_timeout``,
    ``deadline``, ``read_deadline``, ``write_deadline``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class OutboundLimitError(NetloopError):
    """A connection's outbound bytes would pass ``write_buffer_limit``: the connection is closed with this error."""


class InboundLimitError(NetloopError):
    """A connection's unconsumed inbound bytes would pass ``inbound_limit``: the connection is closed with this
    error (at once: the handler is not shown the bytes past the limit)."""
