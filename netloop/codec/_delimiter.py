"""Frames that end with an arbitrary delimiter."""

from __future__ import annotations

from netloop.codec._base import DEFAULT_MAX_FRAME_LENGTH, Buffer, FrameCodec, FrameSpan, frame_too_long


class DelimiterBasedFrameCodec(FrameCodec):
    """One frame per occurrence of ``delimiter`` (a non-empty byte string) in the stream.

    The delimiter is removed from decoded frames unless ``strip_delimiter`` is false. ``encode``
    appends it. ``max_frame_length`` bounds a frame without its delimiter; a longer one raises
    ``FrameTooLongError`` once that many bytes (plus a delimiter) have arrived without a delimiter.
    """

    __slots__ = ("delimiter", "strip_delimiter")

    def __init__(
        self,
        delimiter: bytes,
        *,
        strip_delimiter: bool = True,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        super().__init__(max_frame_length)
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(f"delimiter must be non-empty bytes, got {delimiter!r}")
        self.delimiter = delimiter
        self.strip_delimiter = strip_delimiter

    def encode(self, payload: bytes) -> bytes:
        """Return ``payload + delimiter``; raises ``ValueError`` if the delimiter would then be found
        earlier than at the end (the payload holds it, or ends with a prefix of it that overlaps)."""
        frame = payload + self.delimiter
        if frame.find(self.delimiter) != len(payload):
            raise ValueError(f"payload would be split by the delimiter {self.delimiter!r}")
        return frame

    def _frame_at(self, data: Buffer, pos: int, resume: int) -> FrameSpan | int:
        delimiter = self.delimiter
        size = len(delimiter)
        limit = self.max_frame_length
        # Look no further than the longest allowed frame plus its delimiter: memory stays bounded.
        found = data.find(delimiter, resume, pos + limit + size)
        if found < 0:
            pending = len(data) - pos
            # The last size-1 bytes may still be the start of a delimiter.
            if pending >= limit + size:
                raise frame_too_long(pending - size + 1, limit, at_least=True)
            return max(pos, len(data) - size + 1)
        stop = found + size
        return pos, found if self.strip_delimiter else stop, stop
