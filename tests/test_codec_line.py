"""LineBasedFrameCodec: both line ends, the length limit at its edges, what encode refuses."""

from __future__ import annotations

import pytest

from netloop import FrameTooLongError
from netloop.codec import LineBasedFrameCodec


def test_both_line_ends_are_stripped_and_a_lone_cr_is_kept() -> None:
    codec = LineBasedFrameCodec()
    assert codec.decode_bytes(b"a\r\nb\n\nc\rd\r\n\r\ntail") == ([b"a", b"b", b"", b"c\rd", b""], 13)


@pytest.mark.parametrize(("eol", "wire"), [(b"\r\n", b"ping\r\n"), (b"\n", b"ping\n")])
def test_encode_appends_the_chosen_line_end(eol: bytes, wire: bytes) -> None:
    codec = LineBasedFrameCodec(eol)
    assert codec.encode(b"ping") == wire
    assert codec.decode_bytes(wire) == ([b"ping"], len(wire))


def test_encode_refuses_what_would_not_decode_back() -> None:
    with pytest.raises(ValueError, match="cannot contain"):
        LineBasedFrameCodec().encode(b"a\nb")
    with pytest.raises(ValueError, match="ending in"):
        LineBasedFrameCodec(b"\n").encode(b"a\r")
    assert LineBasedFrameCodec(b"\r\n").encode(b"a\r") == b"a\r\r\n"
    with pytest.raises(ValueError, match="eol"):
        LineBasedFrameCodec(b"\r")


def test_a_line_of_exactly_the_limit_is_accepted() -> None:
    codec = LineBasedFrameCodec(max_frame_length=4)
    assert codec.decode_bytes(b"abcd\r\nabcd\n") == ([b"abcd", b"abcd"], 11)
    decoder = codec.decoder()
    assert decoder.feed(b"abcd") == []
    assert decoder.feed(b"\r") == []  # may still become "abcd\r\n"
    assert decoder.feed(b"\n") == [b"abcd"]


@pytest.mark.parametrize("wire", [b"abcde\n", b"abcde\r\n", b"abcd\r\r\n", b"abcdef"])
def test_one_byte_over_the_limit_raises(wire: bytes) -> None:
    codec = LineBasedFrameCodec(max_frame_length=4)
    with pytest.raises(FrameTooLongError):
        codec.decode_bytes(wire)


def test_an_endless_line_raises_once_the_limit_is_scanned() -> None:
    decoder = LineBasedFrameCodec(max_frame_length=1000).decoder()
    for _ in range(10):
        assert decoder.feed(b"x" * 100) == []
    with pytest.raises(FrameTooLongError, match="at least 1001"):
        decoder.feed(b"x")


def test_the_search_stops_at_the_limit() -> None:
    # A line break far beyond the limit is not looked for: the error comes from the limit alone.
    codec = LineBasedFrameCodec(max_frame_length=8)
    with pytest.raises(FrameTooLongError, match="at least 10"):
        codec.decode_bytes(b"x" * 10)
    with pytest.raises(FrameTooLongError, match="frame length 9 exceeds"):
        codec.decode_bytes(b"x" * 9 + b"\n")


def test_a_long_line_fed_byte_by_byte_decodes() -> None:
    decoder = LineBasedFrameCodec().decoder()
    line = bytes(range(10)) * 500
    frames = [frame for byte in line + b"\r\n" for frame in decoder.feed(bytes([byte]))]
    assert frames == [line]
