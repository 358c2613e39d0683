"""Frames of one fixed length."""

from __future__ import annotations

from netloop.codec._base import (
    DEFAULT_MAX_FRAME_LENGTH,
    Buffer,
    FrameCodec,
    FrameSpan,
    InboundBuffer,
    check_positive,
)


class FixedLengthFrameCodec(FrameCodec):
    """Every frame is exactly ``frame_length`` bytes.

    ``frame_length`` may not exceed ``max_frame_length`` (``ValueError``); a decoder then never holds
    more than one partial frame. ``encode`` only checks the length: the payload is the frame.
    """

    __slots__ = ("frame_length",)

    def __init__(self, frame_length: int, *, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        super().__init__(max_frame_length)
        self.frame_length = check_positive("frame_length", frame_length)
        if frame_length > max_frame_length:
            raise ValueError(f"frame_length {frame_length} exceeds max_frame_length {max_frame_length}")

    def encode(self, payload: bytes) -> bytes:
        """Return ``payload`` as bytes; raises ``ValueError`` unless it is exactly ``frame_length`` long."""
        if len(payload) != self.frame_length:
            raise ValueError(f"payload is {len(payload)} bytes, frames are {self.frame_length}")
        return bytes(payload)

    def _frame_at(self, data: Buffer, pos: int, resume: int) -> FrameSpan | int:
        stop = pos + self.frame_length
        if len(data) < stop:
            return pos
        return pos, stop, stop

    def _first_frame_ready(self, conn: InboundBuffer, buffered: int) -> bool:
        return buffered >= self.frame_length
