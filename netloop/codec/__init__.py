"""Sans-I/O framing codecs: split a byte stream into frames, and frame payloads for the wire.

Each codec decodes from a ``netloop.Conn`` (``decode``), from bytes (``decode_bytes``), or from a
stream of chunks (``decoder().feed``), with one implementation behind all three.
"""

from netloop.codec._base import DEFAULT_MAX_FRAME_LENGTH, FrameCodec, FrameDecoder, InboundBuffer
from netloop.codec._delimiter import DelimiterBasedFrameCodec
from netloop.codec._fixed import FixedLengthFrameCodec
from netloop.codec._length_field import LengthFieldBasedFrameCodec
from netloop.codec._line import LineBasedFrameCodec

__all__ = [
    "DEFAULT_MAX_FRAME_LENGTH",
    "DelimiterBasedFrameCodec",
    "FixedLengthFrameCodec",
    "FrameCodec",
    "FrameDecoder",
    "InboundBuffer",
    "LengthFieldBasedFrameCodec",
    "LineBasedFrameCodec",
]
