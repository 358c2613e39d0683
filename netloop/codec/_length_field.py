"""Frames announced by a length field in their header (netty's ``LengthFieldBasedFrameDecoder``)."""

from __future__ import annotations

from typing import Literal

from netloop._errors import CodecError
from netloop.codec._base import (
    DEFAULT_MAX_FRAME_LENGTH,
    Buffer,
    FrameCodec,
    FrameSpan,
    InboundBuffer,
    frame_too_long,
)

_WIDTHS = (1, 2, 3, 4, 8)


class LengthFieldBasedFrameCodec(FrameCodec):
    """Frames whose header holds an unsigned integer that gives the frame's length.

    The header is ``length_field_offset`` arbitrary bytes, then the length field: ``length_field_length``
    bytes (1, 2, 3, 4 or 8), ``byteorder`` ``"big"`` or ``"little"``. As in netty, the whole frame on the
    wire is ``length_field_offset + length_field_length + value + length_adjustment`` bytes, so
    ``length_adjustment`` accounts for bytes the value does not count (positive) or counts besides the
    payload (negative). A decoded frame is the wire frame without its first ``initial_bytes_to_strip``
    bytes; the default strips the header up to the end of the length field, so that decoding an
    encoded payload gives the payload back (pass 0 to keep the header, as netty's default does).

    ``max_frame_length`` bounds the whole wire frame, header included: a larger declared length raises
    ``FrameTooLongError`` as soon as the length field has arrived. A length that, adjusted, is shorter
    than the header, or shorter than ``initial_bytes_to_strip``, raises ``CodecError``.
    """

    __slots__ = (
        "_header_length",
        "_zero_prefix",
        "byteorder",
        "initial_bytes_to_strip",
        "length_adjustment",
        "length_field_length",
        "length_field_offset",
    )

    def __init__(
        self,
        *,
        length_field_offset: int = 0,
        length_field_length: int = 4,
        length_adjustment: int = 0,
        initial_bytes_to_strip: int | None = None,
        byteorder: Literal["big", "little"] = "big",
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        super().__init__(max_frame_length)
        if length_field_length not in _WIDTHS:
            raise ValueError(f"length_field_length must be one of {_WIDTHS}, got {length_field_length!r}")
        if length_field_offset < 0:
            raise ValueError(f"length_field_offset must be >= 0, got {length_field_offset}")
        if byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', got {byteorder!r}")
        header_length = length_field_offset + length_field_length
        if initial_bytes_to_strip is None:
            initial_bytes_to_strip = header_length
        elif initial_bytes_to_strip < 0:
            raise ValueError(f"initial_bytes_to_strip must be >= 0, got {initial_bytes_to_strip}")
        if max_frame_length < header_length:
            raise ValueError(f"max_frame_length {max_frame_length} is shorter than the {header_length}-byte header")
        self.length_field_offset = length_field_offset
        self.length_field_length = length_field_length
        self.length_adjustment = length_adjustment
        self.initial_bytes_to_strip = initial_bytes_to_strip
        self.byteorder: Literal["big", "little"] = byteorder
        self._header_length = header_length
        self._zero_prefix = bytes(length_field_offset)

    def encode(self, payload: bytes, prefix: bytes | None = None) -> bytes:
        """Return ``prefix + length field + payload``, the field set so the frame ends with the payload.

        ``prefix`` fills the ``length_field_offset`` bytes before the length field (zeros when None).
        Raises ``ValueError`` if ``prefix`` has another length, or if the length to write is negative
        or too large for the field. ``max_frame_length`` is not checked: it bounds what is accepted.
        """
        if prefix is None:
            prefix = self._zero_prefix
        elif len(prefix) != self.length_field_offset:
            raise ValueError(f"prefix is {len(prefix)} bytes, length_field_offset is {self.length_field_offset}")
        value = len(payload) - self.length_adjustment
        try:
            field = value.to_bytes(self.length_field_length, self.byteorder)
        except OverflowError:
            raise ValueError(
                f"a {len(payload)}-byte payload needs length value {value}, which a "
                f"{self.length_field_length}-byte unsigned field cannot hold"
            ) from None
        return b"".join((prefix, field, payload))

    def _frame_length(self, data: Buffer | memoryview, pos: int) -> int:
        """Validated wire length of the frame whose header starts at ``data[pos]``."""
        at = pos + self.length_field_offset
        value = int.from_bytes(data[at : at + self.length_field_length], self.byteorder)
        length = value + self.length_adjustment + self._header_length
        if length < self._header_length:
            raise CodecError(
                f"length field {value} adjusted by {self.length_adjustment} gives a {length}-byte frame, "
                f"shorter than its {self._header_length}-byte header"
            )
        if length > self.max_frame_length:
            raise frame_too_long(length, self.max_frame_length)
        if length < self.initial_bytes_to_strip:
            raise CodecError(
                f"{length}-byte frame is shorter than initial_bytes_to_strip {self.initial_bytes_to_strip}"
            )
        return length

    def _frame_at(self, data: Buffer, pos: int, resume: int) -> FrameSpan | int:
        if len(data) - pos < self._header_length:
            return pos
        stop = pos + self._frame_length(data, pos)
        if len(data) < stop:
            return pos
        return pos + self.initial_bytes_to_strip, stop, stop

    def _first_frame_ready(self, conn: InboundBuffer, buffered: int) -> bool:
        # Peek only the header: a large frame still arriving is not copied on every read.
        if buffered < self._header_length:
            return False
        return buffered >= self._frame_length(conn.peek(self._header_length), 0)
