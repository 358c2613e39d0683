"""LengthFieldBasedFrameCodec: netty's documented examples, every field width and byte order, errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netloop import CodecError, FrameTooLongError
from netloop.codec import LengthFieldBasedFrameCodec

HELLO = b"HELLO, WORLD"


# The seven examples of netty's LengthFieldBasedFrameDecoder documentation: (options, wire, decoded).
NETTY_EXAMPLES = [
    ({"length_field_length": 2, "initial_bytes_to_strip": 0}, b"\x00\x0c" + HELLO, b"\x00\x0c" + HELLO),
    ({"length_field_length": 2, "initial_bytes_to_strip": 2}, b"\x00\x0c" + HELLO, HELLO),
    (
        {"length_field_length": 2, "length_adjustment": -2, "initial_bytes_to_strip": 0},
        b"\x00\x0e" + HELLO,
        b"\x00\x0e" + HELLO,
    ),
    (
        {"length_field_offset": 2, "length_field_length": 3, "initial_bytes_to_strip": 0},
        b"\xca\xfe\x00\x00\x0c" + HELLO,
        b"\xca\xfe\x00\x00\x0c" + HELLO,
    ),
    (
        {"length_field_length": 3, "length_adjustment": 2, "initial_bytes_to_strip": 0},
        b"\x00\x00\x0c\xca\xfe" + HELLO,
        b"\x00\x00\x0c\xca\xfe" + HELLO,
    ),
    (
        {
            "length_field_offset": 1,
            "length_field_length": 2,
            "length_adjustment": 1,
            "initial_bytes_to_strip": 3,
        },
        b"\xca\x00\x0c\xfe" + HELLO,
        b"\xfe" + HELLO,
    ),
    (
        {
            "length_field_offset": 1,
            "length_field_length": 2,
            "length_adjustment": -3,
            "initial_bytes_to_strip": 3,
        },
        b"\xca\x00\x10\xfe" + HELLO,
        b"\xfe" + HELLO,
    ),
]


@pytest.mark.parametrize(("options", "wire", "frame"), NETTY_EXAMPLES)
def test_netty_documented_examples(options: dict[str, int], wire: bytes, frame: bytes) -> None:
    codec = LengthFieldBasedFrameCodec(**options)  # type: ignore[arg-type]
    assert codec.decode_bytes(wire + wire[:3]) == ([frame], len(wire))
    assert codec.decoder().feed(wire * 2) == [frame, frame]


@pytest.mark.parametrize(("options", "wire", "frame"), NETTY_EXAMPLES)
def test_encode_writes_netty_examples_wire_form(options: dict[str, int], wire: bytes, frame: bytes) -> None:
    codec = LengthFieldBasedFrameCodec(**options)  # type: ignore[arg-type]
    offset = codec.length_field_offset
    body = wire[offset + codec.length_field_length :]
    assert codec.encode(body, wire[:offset]) == wire


@pytest.mark.parametrize("width", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("byteorder", ["big", "little"])
def test_every_width_and_byte_order(width: int, byteorder: str) -> None:
    codec = LengthFieldBasedFrameCodec(length_field_length=width, byteorder=byteorder)  # type: ignore[arg-type]
    payload = bytes(range(200))
    wire = codec.encode(payload)
    assert wire[:width] == (200).to_bytes(width, byteorder)  # type: ignore[arg-type]
    assert wire[width:] == payload
    assert codec.decode_bytes(wire) == ([payload], len(wire))


@given(
    width=st.sampled_from([1, 2, 3, 4, 8]),
    byteorder=st.sampled_from(["big", "little"]),
    value=st.integers(0, 1 << 64),
)
def test_declared_length_is_read_as_unsigned_in_the_given_order(width: int, byteorder: str, value: int) -> None:
    value %= 1 << (8 * width)
    codec = LengthFieldBasedFrameCodec(
        length_field_length=width,
        byteorder=byteorder,  # type: ignore[arg-type]
        max_frame_length=1 << 70,
    )
    header = value.to_bytes(width, byteorder)  # type: ignore[arg-type]
    body = bytes(min(value, 300))
    decoder = codec.decoder()
    frames = decoder.feed(header + body)
    if value <= 300:
        assert (frames, decoder.buffered) == ([body], 0)
    else:
        assert (frames, decoder.buffered) == ([], width + 300)


def test_declared_too_long_raises_before_the_body_arrives() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_length=8, max_frame_length=1024)
    header = (1 << 40).to_bytes(8, "big")
    with pytest.raises(FrameTooLongError, match="1099511627784 exceeds max_frame_length 1024"):
        codec.decode_bytes(header)
    decoder = codec.decoder()
    assert decoder.feed(header[:7]) == []
    with pytest.raises(FrameTooLongError):
        decoder.feed(header[7:])


def test_max_frame_length_counts_the_whole_wire_frame() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_length=2, max_frame_length=10)
    assert codec.decode_bytes(codec.encode(bytes(8))) == ([bytes(8)], 10)
    with pytest.raises(FrameTooLongError, match="11 exceeds"):
        codec.decode_bytes(codec.encode(bytes(9))[:2])


def test_adjusted_length_shorter_than_the_header_is_malformed() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_length=2, length_adjustment=-2)
    assert codec.decode_bytes(b"\x00\x02") == ([b""], 2)
    with pytest.raises(CodecError, match="shorter than its 2-byte header"):
        codec.decode_bytes(b"\x00\x01")
    with pytest.raises(CodecError):
        codec.decoder().feed(b"\x00\x00rest")


def test_frame_shorter_than_the_bytes_to_strip_is_malformed() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_length=1, initial_bytes_to_strip=4)
    assert codec.decode_bytes(b"\x03abc") == ([b""], 4)
    with pytest.raises(CodecError, match="initial_bytes_to_strip 4"):
        codec.decode_bytes(b"\x02ab")


def test_an_error_wins_over_frames_before_it_in_the_same_data() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_length=1, max_frame_length=8)
    assert codec.decode_bytes(b"\x01a\x07") == ([b"a"], 2)
    with pytest.raises(FrameTooLongError, match="frame length 256"):
        codec.decode_bytes(b"\x01a\xff")


def test_default_strips_the_header_and_round_trips() -> None:
    codec = LengthFieldBasedFrameCodec(length_field_offset=2)
    assert codec.initial_bytes_to_strip == 6
    wire = codec.encode(b"body", b"\x01\x02")
    assert wire == b"\x01\x02\x00\x00\x00\x04body"
    assert codec.encode(b"body") == b"\x00\x00\x00\x00\x00\x04body"
    assert codec.decode_bytes(wire) == ([b"body"], 10)


def test_encode_rejects_what_the_field_cannot_hold() -> None:
    with pytest.raises(ValueError, match="1-byte unsigned field"):
        LengthFieldBasedFrameCodec(length_field_length=1).encode(bytes(256))
    with pytest.raises(ValueError, match="needs length value -2"):
        LengthFieldBasedFrameCodec(length_adjustment=3).encode(b"a")
    with pytest.raises(ValueError, match="prefix is 1 bytes"):
        LengthFieldBasedFrameCodec(length_field_offset=2).encode(b"a", b"x")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"length_field_length": 5}, "length_field_length"),
        ({"length_field_offset": -1}, "length_field_offset"),
        ({"byteorder": "native"}, "byteorder"),
        ({"initial_bytes_to_strip": -1}, "initial_bytes_to_strip"),
        ({"length_field_offset": 4, "max_frame_length": 7}, "8-byte header"),
    ],
)
def test_bad_configuration_is_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LengthFieldBasedFrameCodec(**options)  # type: ignore[arg-type]
