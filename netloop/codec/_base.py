"""The contract every framing codec follows, and the stateful decoder shared by all of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, TypeAlias

from netloop._errors import CodecError, FrameTooLongError

#: A decoder's limit when none is given: 1 MiB.
DEFAULT_MAX_FRAME_LENGTH = 1 << 20

#: Bytes a decoder can search and slice without copying them first.
Buffer: TypeAlias = bytes | bytearray

#: What ``FrameCodec._frame_at`` returns for a complete frame:
#: (payload start, payload end, frame end), all absolute offsets into the buffer.
FrameSpan: TypeAlias = tuple[int, int, int]


class InboundBuffer(Protocol):
    """The part of a ``netloop.Conn`` a codec reads from; any object with these methods will do."""

    def inbound_buffered(self) -> int: ...

    def peek(self, n: int, /) -> bytes | bytearray | memoryview: ...

    def discard(self, n: int, /) -> object: ...


def check_positive(name: str, value: int) -> int:
    """Return ``value``, or raise ``ValueError`` naming ``name`` if it is not a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def frame_too_long(length: int, limit: int, *, at_least: bool = False) -> FrameTooLongError:
    """The one wording of a too-long frame, so that every codec reports it alike."""
    qualifier = "at least " if at_least else ""
    return FrameTooLongError(f"frame length {qualifier}{length} exceeds max_frame_length {limit}")


class FrameCodec(ABC):
    """Splits a byte stream into frames and turns payloads into frames, without doing any I/O.

    Every decoding entry point shares one implementation and one set of guarantees:

    - all complete frames are returned, in order, as ``bytes`` that the caller owns;
    - a trailing partial frame is left for later (in the connection, or inside a ``FrameDecoder``);
    - ``FrameTooLongError`` is raised as soon as a frame is known to exceed ``max_frame_length``
      (from a declared length, or after scanning that many bytes without finding a delimiter),
      so buffered memory never grows with a length the peer declares;
    - ``CodecError`` is raised for a malformed header;
    - when an error is raised nothing is consumed, and frames found earlier in the same call are not
      returned: treat the stream as broken and close it.

    Codecs hold configuration only, so one instance may serve any number of connections and threads.
    """

    __slots__ = ("max_frame_length",)

    def __init__(self, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        self.max_frame_length = check_positive("max_frame_length", max_frame_length)

    @abstractmethod
    def encode(self, payload: bytes) -> bytes:
        """Return ``payload`` framed for the wire; decoding the result yields the payload back.

        Raises ``ValueError`` for a payload this framing cannot carry.
        """

    @abstractmethod
    def _frame_at(self, data: Buffer, pos: int, resume: int) -> FrameSpan | int:
        """Find the frame starting at ``data[pos]``.

        Return its ``FrameSpan`` if it is complete; otherwise the offset from which a delimiter search
        may resume once more bytes are appended (``resume`` is the offset such an earlier call returned,
        or ``pos``). Raise ``FrameTooLongError`` or ``CodecError`` as described on the class.
        """

    def _first_frame_ready(self, conn: InboundBuffer, buffered: int) -> bool:
        """Cheap test, before copying the inbound buffer, of whether a whole frame may be there."""
        return buffered > 0

    def _split(self, data: Buffer, resume: int) -> tuple[list[bytes], int, int]:
        """Cut every complete frame from ``data``: (frames, bytes consumed, resume offset in ``data``)."""
        frames: list[bytes] = []
        pos = 0
        frame_at = self._frame_at
        with memoryview(data) as view:
            while True:
                span = frame_at(data, pos, resume)
                if isinstance(span, int):
                    return frames, pos, span
                start, end, pos = span
                frames.append(view[start:end].tobytes())
                resume = pos

    def decode(self, conn: InboundBuffer) -> list[bytes]:
        """Consume and return every complete frame buffered in ``conn`` (a ``netloop.Conn``).

        Call it from ``on_traffic``; a partial frame stays in the connection's inbound buffer until the
        next call. A partial frame is looked at again on each call, so for delimiter framing with very
        long frames arriving in many small reads, a per-connection ``FrameDecoder`` is cheaper.
        """
        buffered = conn.inbound_buffered()
        if not self._first_frame_ready(conn, buffered):
            return []
        data = conn.peek(buffered)
        if isinstance(data, memoryview):
            data = data.tobytes()
        frames, consumed, _ = self._split(data, 0)
        if consumed:
            conn.discard(consumed)
        return frames

    def decode_bytes(self, data: Buffer) -> tuple[list[bytes], int]:
        """Return the complete frames at the start of ``data`` and how many bytes they took.

        Stateless: bytes after the last complete frame (``data[consumed:]``) are the caller's to keep.
        """
        frames, consumed, _ = self._split(data, 0)
        return frames, consumed

    def decoder(self) -> FrameDecoder:
        """Return a new stateful decoder for one byte stream (see ``FrameDecoder``)."""
        return FrameDecoder(self)


class FrameDecoder:
    """A decoder for one byte stream: ``feed`` it chunks as they arrive, get whole frames back.

    It keeps only the trailing partial frame between calls (bounded by the codec's
    ``max_frame_length``) and resumes a delimiter search where the last one stopped, so a long frame
    arriving in many chunks is scanned once. After it has raised, every later ``feed`` raises the
    same error: the stream cannot be resynchronised.
    """

    __slots__ = ("_buffer", "_codec", "_error", "_resume")

    def __init__(self, codec: FrameCodec) -> None:
        self._codec = codec
        self._buffer = bytearray()
        self._resume = 0
        self._error: FrameTooLongError | CodecError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back as the start of a frame not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Append ``data`` to the stream and return every frame it completes."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        try:
            if not buffer and not isinstance(data, memoryview):
                # Nothing held back: split the caller's bytes directly and keep only their tail.
                frames, consumed, resume = self._codec._split(data, 0)
                buffer += memoryview(data)[consumed:]
            else:
                buffer += data
                frames, consumed, resume = self._codec._split(buffer, self._resume)
                del buffer[:consumed]
        except (FrameTooLongError, CodecError) as exc:
            self._error = exc
            raise
        self._resume = resume - consumed
        return frames
