"""Frames that end with a line break, ``\\n`` or ``\\r\\n``."""

from __future__ import annotations

from netloop.codec._base import DEFAULT_MAX_FRAME_LENGTH, Buffer, FrameCodec, FrameSpan, frame_too_long

_LF = 0x0A
_CR = 0x0D


class LineBasedFrameCodec(FrameCodec):
    """One frame per line; a line ends with ``\\n`` or ``\\r\\n``, which is stripped from the frame.

    ``encode`` appends ``eol`` (``b"\\r\\n"`` or ``b"\\n"``). ``max_frame_length`` bounds a line without
    its line break; a longer line raises ``FrameTooLongError`` once that many bytes have arrived
    without a line break.
    """

    __slots__ = ("eol",)

    def __init__(self, eol: bytes = b"\r\n", *, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        super().__init__(max_frame_length)
        if eol not in (b"\r\n", b"\n"):
            raise ValueError(f"eol must be b'\\r\\n' or b'\\n', got {eol!r}")
        self.eol = eol

    def encode(self, payload: bytes) -> bytes:
        """Return ``payload + eol``; a payload holding ``\\n``, or ending in ``\\r`` when ``eol`` is
        ``\\n``, raises ``ValueError`` because it would not decode back to itself."""
        if payload.find(b"\n") != -1:  # not ``in``: CPython's bytes ``in`` raises and clears a TypeError first
            raise ValueError("a line-based frame cannot contain b'\\n'")
        if self.eol == b"\n" and payload.endswith(b"\r"):
            raise ValueError("a frame ending in b'\\r' would lose it before an b'\\n' line end")
        return payload + self.eol

    def _frame_at(self, data: Buffer, pos: int, resume: int) -> FrameSpan | int:
        limit = self.max_frame_length
        # Look no further than the longest allowed line plus "\r\n": memory and scan time stay bounded.
        lf = data.find(_LF, resume, pos + limit + 2)
        if lf < 0:
            pending = len(data) - pos
            if pending > limit:
                # A trailing "\r" may still be the start of a "\r\n".
                shortest = pending - 1 if data[-1] == _CR else pending
                if shortest > limit:
                    raise frame_too_long(shortest, limit, at_least=True)
            return len(data)
        end = lf - 1 if lf > pos and data[lf - 1] == _CR else lf
        if end - pos > limit:
            raise frame_too_long(end - pos, limit)
        return pos, end, lf + 1
