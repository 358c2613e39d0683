"""DelimiterBasedFrameCodec: multi-byte delimiters across chunks, keeping the delimiter, limits."""

from __future__ import annotations

import pytest

from netloop import FrameTooLongError
from netloop.codec import DelimiterBasedFrameCodec


def test_a_delimiter_split_across_chunks_is_found() -> None:
    decoder = DelimiterBasedFrameCodec(b"<END>").decoder()
    assert decoder.feed(b"first<E") == []
    assert decoder.feed(b"N") == []
    assert decoder.feed(b"D>second<END><") == [b"first", b"second"]
    assert decoder.buffered == 1


def test_strip_delimiter_false_keeps_it() -> None:
    codec = DelimiterBasedFrameCodec(b"\x00", strip_delimiter=False)
    assert codec.decode_bytes(b"a\x00\x00b") == ([b"a\x00", b"\x00"], 3)


def test_encode_refuses_a_payload_the_delimiter_would_cut() -> None:
    codec = DelimiterBasedFrameCodec(b"aa")
    assert codec.encode(b"xyz") == b"xyzaa"
    with pytest.raises(ValueError, match="split by the delimiter"):
        codec.encode(b"xaay")
    with pytest.raises(ValueError, match="split by the delimiter"):
        codec.encode(b"xa")  # "xaaa" would end the frame after "x"


@pytest.mark.parametrize("delimiter", [b"", "|"])
def test_the_delimiter_must_be_non_empty_bytes(delimiter: bytes) -> None:
    with pytest.raises(ValueError, match="delimiter"):
        DelimiterBasedFrameCodec(delimiter)


def test_the_limit_excludes_the_delimiter() -> None:
    codec = DelimiterBasedFrameCodec(b"\r\n\r\n", max_frame_length=3)
    assert codec.decode_bytes(b"abc\r\n\r\n") == ([b"abc"], 7)
    decoder = codec.decoder()
    assert decoder.feed(b"abc\r\n\r") == []  # six bytes may still end as "abc" + delimiter
    with pytest.raises(FrameTooLongError, match="at least 4"):
        decoder.feed(b"x")


def test_a_frame_one_byte_over_the_limit_raises() -> None:
    codec = DelimiterBasedFrameCodec(b";", max_frame_length=3)
    with pytest.raises(FrameTooLongError):
        codec.decode_bytes(b"ab;abcd;")
