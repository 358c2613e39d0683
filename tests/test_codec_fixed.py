"""FixedLengthFrameCodec: exact-size frames and its configuration rules."""

from __future__ import annotations

import pytest

from netloop.codec import FixedLengthFrameCodec


def test_frames_are_cut_every_frame_length_bytes() -> None:
    codec = FixedLengthFrameCodec(3)
    assert codec.decode_bytes(b"abcdefgh") == ([b"abc", b"def"], 6)
    decoder = codec.decoder()
    assert decoder.feed(b"ab") == []
    assert decoder.feed(b"cdefg") == [b"abc", b"def"]
    assert decoder.buffered == 1


def test_encode_takes_only_exact_lengths() -> None:
    codec = FixedLengthFrameCodec(2)
    assert codec.encode(b"ok") == b"ok"
    with pytest.raises(ValueError, match="payload is 3 bytes"):
        codec.encode(b"abc")


def test_frame_length_is_bounded_by_max_frame_length() -> None:
    with pytest.raises(ValueError, match="exceeds max_frame_length"):
        FixedLengthFrameCodec(10, max_frame_length=9)
    with pytest.raises(ValueError, match="frame_length"):
        FixedLengthFrameCodec(0)
