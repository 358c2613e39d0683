"""Properties every codec shares: round trips through any chunking, and one behaviour on all three paths."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netloop import FrameTooLongError, ShortBufferError
from netloop.codec import (
    DelimiterBasedFrameCodec,
    FixedLengthFrameCodec,
    FrameCodec,
    LengthFieldBasedFrameCodec,
    LineBasedFrameCodec,
)


class InMemoryInbound:
    """The part of a Conn that codecs read, over a bytearray, with the Conn's short-read rule."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.peeked: list[int] = []

    def inbound_buffered(self) -> int:
        return len(self.data)

    def peek(self, n: int = -1) -> bytes:
        n = len(self.data) if n < 0 else n
        if n > len(self.data):
            raise ShortBufferError(n)
        self.peeked.append(n)
        return bytes(self.data[:n])

    def discard(self, n: int = -1) -> int:
        n = len(self.data) if n < 0 else n
        if n > len(self.data):
            raise ShortBufferError(n)
        del self.data[:n]
        return n


line_codecs = st.builds(LineBasedFrameCodec, st.sampled_from([b"\r\n", b"\n"]))
delimiter_codecs = st.builds(DelimiterBasedFrameCodec, st.binary(min_size=1, max_size=4), strip_delimiter=st.booleans())
fixed_codecs = st.builds(FixedLengthFrameCodec, st.integers(1, 12))


@st.composite
def length_field_codecs(draw: st.DrawFn) -> LengthFieldBasedFrameCodec:
    offset = draw(st.integers(0, 3))
    width = draw(st.sampled_from([1, 2, 3, 4, 8]))
    return LengthFieldBasedFrameCodec(
        length_field_offset=offset,
        length_field_length=width,
        length_adjustment=draw(st.integers(-6, 6)),
        initial_bytes_to_strip=draw(st.integers(0, offset + width)),
        byteorder=draw(st.sampled_from(["big", "little"])),
    )


codecs = st.one_of(line_codecs, delimiter_codecs, fixed_codecs, length_field_codecs())


def payloads_for(codec: FrameCodec) -> st.SearchStrategy[list[bytes]]:
    """Lists of payloads the codec can carry (the rest raise ValueError from encode)."""
    if isinstance(codec, FixedLengthFrameCodec):
        size = codec.frame_length
        return st.lists(st.binary(min_size=size, max_size=size), max_size=12)

    def encodable(payload: bytes) -> bool:
        try:
            codec.encode(payload)
        except ValueError:
            return False
        return True

    return st.lists(st.binary(max_size=40).filter(encodable), max_size=12)


def decoded(codec: FrameCodec, payload: bytes) -> bytes:
    """What decoding ``codec.encode(payload)`` must give."""
    if isinstance(codec, LengthFieldBasedFrameCodec):
        return codec.encode(payload)[codec.initial_bytes_to_strip :]
    if isinstance(codec, DelimiterBasedFrameCodec) and not codec.strip_delimiter:
        return payload + codec.delimiter
    return payload


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(st.data())
def test_feed_in_any_chunks_gives_every_frame_back(data: st.DataObject) -> None:
    codec = data.draw(codecs)
    payloads = data.draw(payloads_for(codec))
    stream = b"".join(codec.encode(p) for p in payloads)
    chunks = split_at(stream, data.draw(st.lists(st.integers(0, 1 << 16), max_size=8)))
    decoder = codec.decoder()
    frames = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    assert frames == [decoded(codec, p) for p in payloads]
    assert decoder.buffered == 0


@given(st.data())
def test_decode_bytes_and_conn_take_whole_frames_and_leave_the_rest(data: st.DataObject) -> None:
    codec = data.draw(codecs)
    payloads = data.draw(payloads_for(codec))
    encoded = [codec.encode(p) for p in payloads]
    stream = b"".join(encoded)
    cut = data.draw(st.integers(0, len(stream)))
    whole = 0
    complete = 0
    for frame in encoded:
        if whole + len(frame) > cut:
            break
        whole += len(frame)
        complete += 1
    expected = [decoded(codec, p) for p in payloads[:complete]]

    assert codec.decode_bytes(stream[:cut]) == (expected, whole)

    inbound = InMemoryInbound(stream[:cut])
    assert codec.decode(inbound) == expected
    assert bytes(inbound.data) == stream[whole:cut]


@given(st.data())
def test_feed_raises_as_soon_as_a_frame_is_too_long(data: st.DataObject) -> None:
    limit = data.draw(st.integers(1, 16))
    codec = data.draw(
        st.one_of(
            st.builds(LineBasedFrameCodec, max_frame_length=st.just(limit)),
            st.builds(DelimiterBasedFrameCodec, st.binary(min_size=1, max_size=3), max_frame_length=st.just(limit)),
        )
    )
    marker = b"\n" if isinstance(codec, LineBasedFrameCodec) else codec.delimiter
    garbage = data.draw(st.binary(min_size=1, max_size=3 * limit))
    garbage = garbage.replace(marker[:1], b"") or (b"y" if marker[:1] == b"x" else b"x")  # never a marker's start
    decoder = codec.decoder()
    fed = 0
    for chunk in split_at(garbage, data.draw(st.lists(st.integers(0, 64), max_size=6))):
        fed += len(chunk)
        # The shortest frame these bytes can still become: a delimiter might start in the last bytes, and for
        # lines a trailing "\r" may be the start of a stripped "\r\n".
        if isinstance(codec, LineBasedFrameCodec):
            shortest = fed - 1 if garbage[fed - 1 : fed] == b"\r" else fed
        else:
            shortest = fed - len(marker) + 1
        if shortest > limit:
            with pytest.raises(FrameTooLongError):
                decoder.feed(chunk)
            with pytest.raises(FrameTooLongError):
                decoder.feed(b"")
            return
        assert decoder.feed(chunk) == []
        assert decoder.buffered == fed


def test_conn_decode_peeks_only_the_header_while_a_large_frame_arrives() -> None:
    codec = LengthFieldBasedFrameCodec()
    frame = codec.encode(bytes(100_000))
    inbound = InMemoryInbound(frame[:50_000])
    assert codec.decode(inbound) == []
    assert inbound.peeked == [4]
    inbound.data += frame[50_000:]
    assert codec.decode(inbound) == [bytes(100_000)]
    assert inbound.data == b""


def test_conn_decode_of_an_empty_buffer_peeks_nothing() -> None:
    for codec in (LineBasedFrameCodec(), FixedLengthFrameCodec(3), LengthFieldBasedFrameCodec()):
        inbound = InMemoryInbound()
        assert codec.decode(inbound) == []
        assert inbound.peeked == []


def test_an_error_consumes_nothing_from_the_conn() -> None:
    codec = LineBasedFrameCodec(max_frame_length=4)
    inbound = InMemoryInbound(b"ok\nfar too long")
    with pytest.raises(FrameTooLongError):
        codec.decode(inbound)
    assert inbound.data == b"ok\nfar too long"


def test_a_decoder_keeps_raising_after_an_error() -> None:
    decoder = FixedLengthFrameCodec(2).decoder()
    assert decoder.feed(b"abc") == [b"ab"]
    line = LineBasedFrameCodec(max_frame_length=2).decoder()
    with pytest.raises(FrameTooLongError) as first:
        line.feed(b"abcd")
    with pytest.raises(FrameTooLongError) as again:
        line.feed(b"\n")
    assert again.value is first.value


def test_feed_accepts_memoryview_and_bytearray_without_keeping_them() -> None:
    codec = LineBasedFrameCodec()
    decoder = codec.decoder()
    source = bytearray(b"one\r\ntw")
    assert decoder.feed(source) == [b"one"]
    source[:] = b"XXXXXXX"  # the caller may reuse its buffer
    assert decoder.feed(memoryview(b"o\r\nthree\n")) == [b"two", b"three"]


@pytest.mark.parametrize(
    "codec",
    [
        LineBasedFrameCodec(),
        DelimiterBasedFrameCodec(b"|"),
        FixedLengthFrameCodec(2),
        LengthFieldBasedFrameCodec(),
    ],
    ids=lambda codec: type(codec).__name__,
)
def test_frames_are_bytes_the_caller_owns(codec: FrameCodec) -> None:
    stream = bytearray(codec.encode(b"ab") * 2)
    frames, _ = codec.decode_bytes(stream)
    stream[:] = bytes(len(stream))
    assert frames == [b"ab", b"ab"]
    assert all(type(frame) is bytes for frame in frames)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_max_frame_length_must_be_a_positive_int(limit: int) -> None:
    with pytest.raises(ValueError, match="max_frame_length"):
        LineBasedFrameCodec(max_frame_length=limit)
