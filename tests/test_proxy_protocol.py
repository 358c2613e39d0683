"""PROXY protocol v1/v2: spec vectors, every malformation, chunking, fuzzing, CRC32C, encode -> parse round trips."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netloop import NetloopError
from netloop.proxy_protocol import (
    CLIENT_CERT_CONN,
    CLIENT_CERT_SESS,
    CLIENT_SSL,
    SSL_CN,
    TLV_ALPN,
    TLV_AUTHORITY,
    TLV_CRC32C,
    TLV_NETNS,
    TLV_NOOP,
    TLV_SSL,
    TLV_UNIQUE_ID,
    HeaderComplete,
    HeaderIncomplete,
    ParseResult,
    ProxyHeaderParser,
    ProxyInfo,
    ProxyProtocolError,
    crc32c,
    encode_ssl_tlv,
    encode_v1,
    encode_v2,
    parse_header,
    parse_v2_datagram,
)

# A per-example deadline flakes on a loaded machine; a generous one still catches a parser that hangs.
PROPERTY = settings(deadline=2000, suppress_health_check=[HealthCheck.too_slow])

# Spelled out from the spec's text, not taken from the module under test.
SIG = bytes.fromhex("0D0A0D0A000D0A515549540A")


def crc32c_bitwise(data: bytes) -> int:
    """A second, table-free CRC-32C to check the table-driven one against."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    return SIG + bytes([ver_cmd, fam]) + (len(body) if length is None else length).to_bytes(2, "big") + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def with_crc(header: bytes) -> bytes:
    """``header`` whose last 4 bytes are a zeroed CRC32C value, with the value filled in (by the reference CRC)."""
    return header[:-4] + crc32c_bitwise(header).to_bytes(4, "big")


def done(data: bytes, mode: str = "auto", max_size: int = 4096) -> HeaderComplete:
    result = parse_header(data, mode, max_size)  # type: ignore[arg-type]
    assert isinstance(result, HeaderComplete), result
    return result


def outcome(data: bytes, mode: str = "auto", max_size: int = 4096) -> ParseResult | str:
    try:
        return parse_header(data, mode, max_size)  # type: ignore[arg-type]
    except ProxyProtocolError as exc:
        return f"error: {exc}"


def fed(chunks: list[bytes], mode: str = "auto", max_size: int = 4096) -> ParseResult | str:
    parser = ProxyHeaderParser(mode, max_size)  # type: ignore[arg-type]
    result: ParseResult = HeaderIncomplete(parser.bytes_needed)
    try:
        for index, chunk in enumerate(chunks):
            result = parser.feed(chunk)
            if isinstance(result, HeaderComplete):
                # What the chunks held after the header comes back as trailing: add the chunks not yet fed.
                rest = b"".join(chunks[index + 1 :])
                return HeaderComplete(result.info, result.consumed, result.trailing + rest)
    except ProxyProtocolError as exc:
        return f"error: {exc}"
    return result


# --- CRC32C ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_known_answers(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c_bitwise(data) == expected


@PROPERTY
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc32c_matches_the_bitwise_reference_and_continues(a: bytes, b: bytes) -> None:
    assert crc32c(a + b) == crc32c_bitwise(a + b) == crc32c(b, crc32c(a))
    assert crc32c(bytearray(a)) == crc32c(memoryview(a)) == crc32c(a)


# --- version 1: the spec's examples and limits ---------------------------------------------------------------

V1_IPV6_MAX = b"PROXY TCP6 " + b":".join([b"ffff"] * 8) + b" " + b":".join([b"ffff"] * 8) + b" 65535 65535\r\n"
V1_UNKNOWN_MAX = b"PROXY UNKNOWN " + b":".join([b"ffff"] * 8) + b" " + b":".join([b"ffff"] * 8) + b" 65535 65535\r\n"


def test_the_spec_example_before_an_http_request() -> None:
    wire = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
    result = done(wire)
    assert result.info == ProxyInfo(1, "PROXY", "TCP", ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert result.consumed == 47
    assert result.trailing == b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"


@pytest.mark.parametrize(
    ("line", "length", "source", "destination"),
    [
        (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", 56, ("255.255.255.255", 65535), None),
        (V1_IPV6_MAX, 104, ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), None),
        (b"PROXY UNKNOWN\r\n", 15, None, None),
        (V1_UNKNOWN_MAX, 107, None, None),
        (b"PROXY UNKNOWN anything at all \x00\xff goes\r\n", 39, None, None),
        (b"PROXY TCP4 0.0.0.0 10.0.0.1 0 1\r\n", 33, ("0.0.0.0", 0), ("10.0.0.1", 1)),
        (b"PROXY TCP6 ::1 2001:DB8::A 1 2\r\n", 32, ("::1", 1), ("2001:db8::a", 2)),
        (b"PROXY TCP6 ::ffff:1.2.3.4 :: 1 2\r\n", 34, (str(ipaddress.IPv6Address("::ffff:1.2.3.4")), 1), ("::", 2)),
    ],
)
def test_v1_lines_the_spec_allows(
    line: bytes, length: int, source: tuple[str, int] | None, destination: tuple[str, int] | None
) -> None:
    assert len(line) == length
    info = done(line + b"tail").info
    assert done(line + b"tail").consumed == length
    assert info.version == 1 and info.command == "PROXY" and info.tlvs == {}
    assert info.transport == (None if source is None else "TCP")
    assert info.source == source
    if destination is not None:
        assert info.destination == destination


@pytest.mark.parametrize(
    ("wire", "message", "offset"),
    [
        (b"proxy TCP4", "first byte b'p'", 0),
        (b"PROXX", "starts with 'PROXY '", 4),
        (b"PROXY  TCP4", "got b' '", 6),
        (b"PROXY tcp4 ", "got b't'", 6),
        (b"PROXY TCP5 ", "got b'TCP5'", 9),
        (b"PROXY TCP4\r\n", "got b'TCP4\\\\r'", 10),
        (b"PROXY UNKNOWN\n", "got b'UNKNOWN\\\\n'", 13),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "single spaces", 11),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "single spaces", 11),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "single spaces", 11),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "single spaces", 11),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "source address b'01.2.3.4'", 11),
        (b"PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n", "destination address b'5.6.7.256'", 19),
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "not a valid IPv4", 11),
        (b"PROXY TCP4 ::1 ", "b':' cannot appear in a TCP4 line", 11),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not a valid IPv6", 11),
        (b"PROXY TCP6 fe80::1%eth0 ", "b'%' cannot appear in a TCP6 line", 18),
        (b"PROXY TCP6 ::1 ::g", "b'g' cannot appear", 17),
        (b"PROXY TCP6 ::1:: ::1 1 2\r\n", "not a valid IPv6", 11),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "source port b'080'", 27),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "destination port b'65536'", 29),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", "leading zeros", 27),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1", "b'-' cannot appear", 27),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF", 30),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR not followed by LF", 30),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r", "bare LF", 30),
        (b"PROXY UNKNOWN \r\r\n", "CR not followed by LF", 14),
        (b"PROXY TCP4 \xc3\xa9", "cannot appear in a TCP4 line", 11),
        (V1_UNKNOWN_MAX[:-2] + b"f\r\n", "no CRLF within the first 107 bytes", None),
        (V1_UNKNOWN_MAX[:-2] + b"x\r", "no CRLF within the first 107 bytes", None),
        (b"PROXY UNKNOWN " + b"x" * 200, "no CRLF within the first 107 bytes", None),
    ],
)
def test_v1_malformations_are_named(wire: bytes, message: str, offset: int | None) -> None:
    with pytest.raises(ProxyProtocolError, match=message) as caught:
        parse_header(wire, "auto")
    assert caught.value.offset == offset
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, NetloopError)
    with pytest.raises(ProxyProtocolError, match=message):
        parse_header(wire, "v1")


def test_v1_errors_come_as_soon_as_the_offending_byte_arrives() -> None:
    # The bad byte is the last one given: nothing more is waited for.
    for wire in [b"X", b"PROXY_", b"PROXY TCPX", b"PROXY TCP4 1.2.3.4 x", b"PROXY TCP4 1\n", b"PROXY UNKNOWN\rx"]:
        with pytest.raises(ProxyProtocolError):
            parse_header(wire, "auto")
        assert isinstance(parse_header(wire[:-1], "auto"), HeaderIncomplete) or wire == b"X"


def test_a_v1_line_of_107_bytes_without_its_lf_still_waits_and_108_fails() -> None:
    assert parse_header(V1_UNKNOWN_MAX[:-1], "v1") == HeaderIncomplete(1)
    with pytest.raises(ProxyProtocolError, match="107"):
        parse_header(V1_UNKNOWN_MAX[:-2] + b"x\r\n", "v1")


def test_v1_bytes_needed_is_a_lower_bound_from_the_shortest_line() -> None:
    assert parse_header(b"", "v1") == HeaderIncomplete(15)
    assert parse_header(b"PROXY ", "v1") == HeaderIncomplete(9)
    assert parse_header(b"PROXY TCP4 ", "v1") == HeaderIncomplete(21)  # "PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"
    assert parse_header(b"PROXY TCP6 ", "v1") == HeaderIncomplete(11)  # "PROXY TCP6 :: :: 0 0\r\n"
    assert parse_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", "v1") == HeaderIncomplete(1)


# --- version 2: hand-written headers ---------------------------------------------------------------------------

TCP4_BLOCK = bytes([192, 168, 0, 1, 192, 168, 0, 11]) + (56324).to_bytes(2, "big") + (443).to_bytes(2, "big")
IP6_SRC = ipaddress.IPv6Address("2001:db8::1").packed
IP6_DST = ipaddress.IPv6Address("2001:db8::2").packed


def unix_field(path: bytes) -> bytes:
    return path + bytes(108 - len(path))


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (v2(0x21, 0x11, TCP4_BLOCK), ProxyInfo(2, "PROXY", "TCP", ("192.168.0.1", 56324), ("192.168.0.11", 443))),
        (v2(0x21, 0x12, TCP4_BLOCK), ProxyInfo(2, "PROXY", "UDP", ("192.168.0.1", 56324), ("192.168.0.11", 443))),
        (
            v2(0x21, 0x21, IP6_SRC + IP6_DST + b"\x00\x50\x01\xbb"),
            ProxyInfo(2, "PROXY", "TCP", ("2001:db8::1", 80), ("2001:db8::2", 443)),
        ),
        (
            v2(0x21, 0x22, IP6_SRC + IP6_DST + b"\x00\x00\xff\xff"),
            ProxyInfo(2, "PROXY", "UDP", ("2001:db8::1", 0), ("2001:db8::2", 65535)),
        ),
        (
            v2(0x21, 0x31, unix_field(b"/run/client.sock") + unix_field(b"/run/server.sock")),
            ProxyInfo(2, "PROXY", "UNIX", "/run/client.sock", "/run/server.sock"),
        ),
        (
            v2(0x21, 0x32, unix_field(b"\x00abstract") + unix_field(b"")),
            ProxyInfo(2, "PROXY", "UNIX_DGRAM", b"\x00abstract", ""),
        ),
        (v2(0x20, 0x00, b""), ProxyInfo(2, "LOCAL", None, None, None)),
        # LOCAL: the receiver must skip an address block if one is there, and must ignore it.
        (v2(0x20, 0x11, TCP4_BLOCK), ProxyInfo(2, "LOCAL", None, None, None)),
        (v2(0x20, 0x10, b""), ProxyInfo(2, "LOCAL", None, None, None)),
        (v2(0x20, 0x01, b""), ProxyInfo(2, "LOCAL", None, None, None)),
        (v2(0x21, 0x00, b""), ProxyInfo(2, "PROXY", None, None, None)),
        # HAProxy's own LOCAL health check: UNSPEC, no addresses, TLVs straight after the 16 bytes.
        (v2(0x20, 0x00, tlv(TLV_UNIQUE_ID, b"abc")), ProxyInfo(2, "LOCAL", None, None, None, {TLV_UNIQUE_ID: b"abc"})),
        # AWS NLB: a custom TLV 0xEA (sub-type 0x01, the VPC endpoint id) is kept as it is.
        (
            v2(0x21, 0x11, TCP4_BLOCK + tlv(0xEA, b"\x01vpce-08d2bf15fac5001c9")),
            ProxyInfo(
                2, "PROXY", "TCP", ("192.168.0.1", 56324), ("192.168.0.11", 443), {0xEA: b"\x01vpce-08d2bf15fac5001c9"}
            ),
        ),
    ],
)
def test_v2_headers_by_hand(wire: bytes, expected: ProxyInfo) -> None:
    result = done(wire + b"\x16\x03\x01 application data", "v2")
    assert result.info == expected
    assert result.consumed == len(wire)
    assert result.trailing == b"\x16\x03\x01 application data"
    assert done(wire, "auto").info == expected


def test_v2_tlvs_by_hand() -> None:
    ssl = (
        bytes([CLIENT_SSL | CLIENT_CERT_CONN])
        + bytes(4)
        + tlv(0x21, b"TLSv1.3")
        + tlv(0x22, "bücher.example".encode())
        + tlv(0x23, b"TLS_AES_128_GCM_SHA256")
        + tlv(0x24, b"RSA-SHA256")
        + tlv(0x25, b"RSA2048")
        + tlv(0x7F, b"future")
    )
    body = (
        TCP4_BLOCK
        + tlv(TLV_NOOP, b"")
        + tlv(TLV_ALPN, b"h2")
        + tlv(TLV_AUTHORITY, "bücher.example".encode())
        + tlv(TLV_NOOP, b"pad")
        + tlv(TLV_UNIQUE_ID, b"\x00" * 128)
        + tlv(TLV_SSL, ssl)
        + tlv(TLV_NETNS, b"blue")
        + tlv(0xE0, b"custom")
        + tlv(TLV_CRC32C, bytes(4))
    )
    wire = with_crc(v2(0x21, 0x11, body))
    info = done(wire).info
    assert set(info.tlvs) == {TLV_ALPN, TLV_AUTHORITY, TLV_UNIQUE_ID, TLV_SSL, TLV_NETNS, 0xE0, TLV_CRC32C}
    assert info.tlvs[TLV_CRC32C] == wire[-4:]
    assert (info.alpn, info.authority, info.unique_id, info.netns) == (b"h2", "bücher.example", bytes(128), "blue")
    assert info.ssl is not None
    assert (info.ssl.client_ssl, info.ssl.verified, info.ssl.version, info.ssl.cn) == (
        True,
        True,
        "TLSv1.3",
        "bücher.example",
    )
    assert (info.ssl.cipher, info.ssl.sig_alg, info.ssl.key_alg) == ("TLS_AES_128_GCM_SHA256", "RSA-SHA256", "RSA2048")
    assert info.ssl.sub_tlvs[0x7F] == b"future"


def test_ssl_verified_needs_a_client_certificate_and_a_zero_verify() -> None:
    def ssl(client: int, verify: int) -> ProxyInfo:
        return done(encode_v2(tlvs={TLV_SSL: encode_ssl_tlv(client=client, verify=verify)})).info

    assert ssl(CLIENT_SSL | CLIENT_CERT_SESS, 0).ssl.verified  # type: ignore[union-attr]
    assert not ssl(CLIENT_SSL, 0).ssl.verified  # type: ignore[union-attr]
    assert not ssl(CLIENT_SSL | CLIENT_CERT_CONN, 1).ssl.verified  # type: ignore[union-attr]
    assert ProxyInfo(1, "PROXY", None, None, None).ssl is None


def test_a_crc32c_is_verified() -> None:
    wire = with_crc(v2(0x21, 0x11, TCP4_BLOCK + tlv(TLV_CRC32C, bytes(4))))
    assert done(wire).info.tlvs[TLV_CRC32C] == crc32c_bitwise(wire[:-4] + bytes(4)).to_bytes(4, "big")
    for index in [*range(16, 28), *range(len(wire) - 4, len(wire))]:  # addresses, ports, the CRC itself
        for bit in range(8):
            corrupt = bytearray(wire)
            corrupt[index] ^= 1 << bit
            with pytest.raises(ProxyProtocolError, match="CRC32C mismatch: the header carries 0x"):
                parse_header(bytes(corrupt), "v2")


V2_OK = v2(0x21, 0x11, TCP4_BLOCK)


@pytest.mark.parametrize(
    ("wire", "message", "offset"),
    [
        (v2(0x11, 0x11, TCP4_BLOCK), "version 1 in byte 0x11; only 2 is defined", 12),
        (v2(0x31, 0x11, TCP4_BLOCK), "version 3", 12),
        (v2(0x22, 0x11, TCP4_BLOCK), "command 2 is neither LOCAL", 12),
        (v2(0x2F, 0x11, TCP4_BLOCK), "command 15", 12),
        (v2(0x21, 0x41, TCP4_BLOCK), "address family 4", 13),
        (v2(0x20, 0xF0, b""), "address family 15", 13),
        (v2(0x21, 0x13, TCP4_BLOCK), "transport 3", 13),
        (v2(0x20, 0x03, b""), "transport 3", 13),
        (v2(0x21, 0x10, TCP4_BLOCK), "0x10 pairs UNSPEC with a defined value", 13),
        (v2(0x21, 0x01, b""), "0x01 pairs UNSPEC", 13),
        (v2(0x21, 0x11, TCP4_BLOCK[:11]), "0x11 has a 12-byte address block, but the header length is 11", 14),
        (v2(0x21, 0x21, IP6_SRC + IP6_DST), "36-byte address block", 14),
        (v2(0x21, 0x31, bytes(215)), "216-byte address block", 14),
        (v2(0x20, 0x11, b""), "12-byte address block", 14),
        (v2(0x21, 0x11, TCP4_BLOCK + b"\x01"), "1 byte\\(s\\) left over at the end of the header", 28),
        (v2(0x21, 0x11, TCP4_BLOCK + b"\x01\x00"), "2 byte", 28),
        (v2(0x21, 0x11, TCP4_BLOCK + b"\x01\x00\x03ab"), "TLV 0x01 declares 3 byte\\(s\\) but only 2 remain", 28),
        (v2(0x21, 0x00, b"\xee\xff\xff"), "TLV 0xee declares 65535", 16),
        (v2(0x21, 0x11, TCP4_BLOCK + tlv(1, b"a") + tlv(1, b"b")), "TLV 0x01 appears twice", 32),
        (v2(0x21, 0x11, TCP4_BLOCK + tlv(TLV_CRC32C, bytes(3))), "CRC32C TLV holds 4 bytes, not 3", 31),
        (v2(0x21, 0x11, TCP4_BLOCK + tlv(TLV_CRC32C, bytes(4))), "CRC32C mismatch", 31),
        (v2(0x21, 0x11, TCP4_BLOCK + tlv(TLV_AUTHORITY, b"\xff")), "AUTHORITY TLV is not utf-8", 31),
        (v2(0x21, 0x11, TCP4_BLOCK + tlv(TLV_UNIQUE_ID, bytes(129))), "UNIQUE_ID TLV is 129 bytes, over 128", 31),
        (v2(0x21, 0x11, TCP4_BLOCK + tlv(TLV_NETNS, b"\x80")), "NETNS TLV is not ascii", 31),
        (v2(0x21, 0x00, tlv(TLV_SSL, bytes(4))), "SSL TLV needs 5 bytes", 19),
        (v2(0x21, 0x00, tlv(TLV_SSL, bytes(5) + b"\x21\x00\x09TLS")), "declares 9 byte\\(s\\) but only 3 remain", 24),
        (v2(0x21, 0x00, tlv(TLV_SSL, bytes(5) + b"\x21\x00")), "left over at the end of the SSL TLV", 24),
        (v2(0x21, 0x00, tlv(TLV_SSL, bytes(5) + tlv(0x21, b"\xe9"))), "SSL sub-TLV 0x21 is not ascii", 19),
        (v2(0x21, 0x00, tlv(TLV_SSL, bytes(5) + tlv(SSL_CN, b"\xc3("))), "SSL sub-TLV 0x22 is not utf-8", 19),
        (v2(0x21, 0x00, tlv(TLV_SSL, bytes(5) + tlv(0x21, b"a") + tlv(0x21, b"b"))), "sub-TLV 0x21 appears twice", 19),
    ],
)
def test_v2_malformations_are_named(wire: bytes, message: str, offset: int) -> None:
    with pytest.raises(ProxyProtocolError, match=message) as caught:
        parse_header(wire + b"data", "v2")
    assert caught.value.offset == offset
    assert f"(at byte {offset})" in str(caught.value)
    with pytest.raises(ProxyProtocolError, match=message):
        parse_header(wire, "auto")


@pytest.mark.parametrize("index", range(1, 12))
def test_each_signature_byte_is_checked_as_it_arrives(index: int) -> None:
    wrong = bytearray(SIG[: index + 1])
    wrong[index] ^= 0x40
    with pytest.raises(ProxyProtocolError, match="signature") as caught:
        parse_header(bytes(wrong), "v2")
    assert caught.value.offset == index


def test_the_fixed_part_fails_before_the_body_arrives() -> None:
    assert parse_header(SIG + b"\x21", "v2") == HeaderIncomplete(3)
    with pytest.raises(ProxyProtocolError, match="version"):
        parse_header(SIG + b"\x12", "v2")
    with pytest.raises(ProxyProtocolError, match="transport"):
        parse_header(SIG + b"\x21\x1f", "v2")
    with pytest.raises(ProxyProtocolError, match="address block"):
        parse_header(SIG + b"\x21\x11\x00\x04", "v2")
    with pytest.raises(ProxyProtocolError, match="the header is 4112 bytes \\(16 \\+ 4096\\), over max_size 4096"):
        parse_header(SIG + b"\x21\x11\x10\x00", "v2")
    assert parse_header(SIG + b"\x21\x11\x00\x0c", "v2") == HeaderIncomplete(12, 28)


def test_max_size_bounds_the_whole_v2_header() -> None:
    wire = encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs={0xE1: bytes(100)})  # 16 + 12 + 103 = 131 bytes
    assert done(wire, "v2", max_size=131).consumed == 131
    with pytest.raises(ProxyProtocolError, match="over max_size 130"):
        parse_header(wire, "v2", max_size=130)
    with pytest.raises(ProxyProtocolError, match="over max_size"):
        parse_v2_datagram(wire, max_size=130)


# --- modes, the parser object, datagrams -----------------------------------------------------------------------


@pytest.mark.parametrize("first", range(256))
def test_auto_decides_on_the_first_byte(first: int) -> None:
    if first in (0x0D, 0x50):
        assert isinstance(parse_header(bytes([first]), "auto"), HeaderIncomplete)
    else:
        with pytest.raises(ProxyProtocolError, match=r"cannot start a v1 header .* or a v2 header") as caught:
            parse_header(bytes([first]), "auto")
        assert caught.value.offset == 0


def test_a_parser_set_to_one_version_rejects_the_other_at_once() -> None:
    with pytest.raises(ProxyProtocolError, match="looks like v2; the parser expects v1"):
        parse_header(b"\r", "v1")
    with pytest.raises(ProxyProtocolError, match="looks like v1; the parser expects v2"):
        parse_header(b"P", "v2")
    with pytest.raises(ProxyProtocolError, match="first byte b'G'"):
        ProxyHeaderParser("v2").feed(b"GET / HTTP/1.1\r\n")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="mode"):
        ProxyHeaderParser("v3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_size"):
        ProxyHeaderParser("v2", max_size=15)
    with pytest.raises(ValueError, match="max_size"):
        parse_header(b"", "auto", max_size=0)


def test_the_parser_reports_what_it_needs_and_hands_back_what_follows() -> None:
    wire = encode_v2(("10.0.0.1", 1234), ("10.0.0.2", 80), tlvs={TLV_ALPN: b"http/1.1"})
    parser = ProxyHeaderParser("auto")
    assert parser.bytes_needed == 15
    assert parser.feed(wire[:10]) == HeaderIncomplete(6)
    assert parser.feed(wire[10:20]) == HeaderIncomplete(len(wire) - 20, len(wire))
    assert parser.bytes_needed == len(wire) - 20
    result = parser.feed(bytearray(wire[20:] + b"GET /"))
    assert isinstance(result, HeaderComplete)
    assert (result.consumed, result.trailing, result.info.alpn) == (len(wire), b"GET /", b"http/1.1")
    assert parser.bytes_needed == 0
    with pytest.raises(RuntimeError, match="already complete"):
        parser.feed(b"more")


def test_a_failed_parser_raises_the_same_error_again() -> None:
    parser = ProxyHeaderParser("v1")
    with pytest.raises(ProxyProtocolError) as first:
        parser.feed(b"PROXY TCP9")
    with pytest.raises(ProxyProtocolError) as again:
        parser.feed(b" whatever")
    assert again.value is first.value
    assert parser.bytes_needed == 0


def test_a_big_first_chunk_is_not_buffered_but_handed_back() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB of application data in the same read
    parser = ProxyHeaderParser("auto", max_size=4096)
    result = parser.feed(memoryview(b"PROXY UNKNOWN\r\n" + payload))
    assert isinstance(result, HeaderComplete)
    assert (result.consumed, result.trailing) == (15, payload)
    assert len(parser._buffer) == 0  # released once done


def test_a_v2_header_in_a_datagram() -> None:
    header = encode_v2(("192.0.2.1", 5353), ("198.51.100.7", 53), datagram=True, checksum=True)
    info, offset = parse_v2_datagram(header + b"\x12\x34payload")
    assert (info.transport, info.source, info.destination) == ("UDP", ("192.0.2.1", 5353), ("198.51.100.7", 53))
    assert offset == len(header)
    assert parse_v2_datagram(memoryview(header)) == (info, len(header))
    with pytest.raises(ProxyProtocolError, match=f"datagram \\(20 bytes\\) ends inside the header of {len(header)}"):
        parse_v2_datagram(header[:20])
    with pytest.raises(ProxyProtocolError, match="ends inside the header"):
        parse_v2_datagram(header[:5])
    with pytest.raises(ProxyProtocolError, match="looks like v1"):
        parse_v2_datagram(b"PROXY UNKNOWN\r\n")


# --- encoders -------------------------------------------------------------------------------------------------


def test_encode_v1() -> None:
    assert encode_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)) == (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    )
    assert encode_v1(("2001:DB8::1", 1, 0, 0), ("::1", 2)) == b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
    assert encode_v1() == b"PROXY UNKNOWN\r\n"


@pytest.mark.parametrize(
    ("source", "destination", "message"),
    [
        (("1.2.3.4", 1), None, "give both source and destination, or neither"),
        ((("1.2.3.4", 1),), ("1.2.3.4", 1), "must be \\(host, port\\)"),
        (("1.2.3.4", 1), ("::1", 2), "one family"),
        (("1.2.3.4", 65536), ("1.2.3.4", 1), "port must be an int"),
        (("1.2.3.4", True), ("1.2.3.4", 1), "port must be an int"),
        (("example.com", 1), ("1.2.3.4", 1), "does not appear to be an IPv4 or IPv6 address"),
        ((b"1.2.3.4", 1), ("1.2.3.4", 1), "host must be a str"),
        (("fe80::1%eth0", 1), ("fe80::2", 1), "scope id"),
    ],
)
def test_encode_v1_refuses_what_v1_cannot_carry(
    source: tuple[str, int] | None, destination: tuple[str, int] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_v1(source, destination)


def test_encode_v2_bytes_are_the_spec_layout() -> None:
    assert encode_v2(("192.168.0.1", 56324), ("192.168.0.11", 443)) == v2(0x21, 0x11, TCP4_BLOCK)
    assert encode_v2(command="LOCAL") == SIG + b"\x20\x00\x00\x00"
    assert encode_v2() == SIG + b"\x21\x00\x00\x00"
    assert encode_v2("/a", "/b", datagram=True) == v2(0x21, 0x32, unix_field(b"/a") + unix_field(b"/b"))
    assert encode_v2(tlvs=[(TLV_NOOP, b""), (TLV_NOOP, b"x")]) == v2(0x21, 0x00, b"\x04\x00\x00\x04\x00\x01x")
    assert encode_v2(checksum=True) == with_crc(v2(0x21, 0x00, b"\x03\x00\x04" + bytes(4)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": ("1.2.3.4", 1), "destination": ("1.2.3.4", 2), "command": "LOCAL"}, "LOCAL header carries no"),
        ({"command": "HEALTH"}, "command must be"),
        ({"source": "/a", "destination": ("1.2.3.4", 2)}, "must be \\(host, port\\)"),
        ({"source": "/a"}, "give both source and destination, or neither"),
        ({"source": "/" + "a" * 108, "destination": "/b"}, "at most 108 bytes"),
        ({"source": "/a\x00b", "destination": "/b"}, "cannot hold NUL"),
        ({"source": b"\x00abstract\x00", "destination": "/b"}, "cannot end with NUL"),
        ({"tlvs": {TLV_CRC32C: bytes(4)}}, "checksum=True"),
        ({"tlvs": [(1, b"a"), (1, b"b")]}, "given twice"),
        ({"tlvs": {256: b""}}, "one byte"),
        ({"tlvs": {0xE0: bytes(65536)}}, "at most 65535 fit"),
        ({"tlvs": {0xE0: bytes(40000), 0xE1: bytes(40000)}}, "its length field holds at most 65535"),
        ({"tlvs": {TLV_AUTHORITY: b"\xff"}}, "AUTHORITY TLV is not utf-8"),
        ({"tlvs": {TLV_UNIQUE_ID: bytes(129)}}, "over 128"),
        ({"tlvs": {TLV_SSL: b"\x01"}}, "SSL TLV needs 5 bytes"),
    ],
)
def test_encode_v2_refuses_what_would_not_parse_back(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_v2(**kwargs)  # type: ignore[arg-type]


def test_encode_ssl_tlv_checks_its_numbers() -> None:
    with pytest.raises(ValueError, match="client is one byte"):
        encode_ssl_tlv(client=256)
    with pytest.raises(ValueError, match="verify four"):
        encode_ssl_tlv(verify=-1)
    with pytest.raises(UnicodeEncodeError):
        encode_ssl_tlv(version="TLSv1.3é")


# --- properties: chunking, fuzzing, round trips -----------------------------------------------------------------

ip4 = st.ip_addresses(v=4).map(str)
ip6 = st.ip_addresses(v=6).map(str)
port = st.integers(0, 65535)
ip_pair = st.one_of(
    st.tuples(st.tuples(ip4, port), st.tuples(ip4, port)), st.tuples(st.tuples(ip6, port), st.tuples(ip6, port))
)
unix_path = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=25),
    st.binary(min_size=1, max_size=100).map(lambda name: b"\x00" + name.rstrip(b"\x00") + b"z"),
)
tlv_values = st.dictionaries(
    st.sampled_from([TLV_ALPN, TLV_AUTHORITY, TLV_UNIQUE_ID, TLV_NETNS, TLV_SSL, 0x06, 0x31, 0xE0, 0xEF, 0xF8]),
    st.binary(max_size=40),
    max_size=5,
).map(
    lambda tlvs: {
        kind: (
            value.decode("latin-1").encode()
            if kind == TLV_AUTHORITY
            else bytes(b & 0x7F for b in value)
            if kind == TLV_NETNS
            else encode_ssl_tlv(client=value[0] if value else 0, version="TLSv1.2", cn=value.hex())
            if kind == TLV_SSL
            else value
        )
        for kind, value in tlvs.items()
    }
)


@st.composite
def v2_headers(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    kind = draw(st.sampled_from(["ip", "unix", "none", "local"]))
    source: object = None
    destination: object = None
    if kind == "ip":
        source, destination = draw(ip_pair)
    elif kind == "unix":
        source, destination = draw(unix_path), draw(unix_path)
    args: dict[str, object] = {
        "source": source,
        "destination": destination,
        "command": "LOCAL" if kind == "local" else "PROXY",
        "datagram": draw(st.booleans()),
        "tlvs": draw(tlv_values),
        "checksum": draw(st.booleans()),
    }
    return encode_v2(**args), args  # type: ignore[arg-type]


v1_lines = st.one_of(ip_pair.map(lambda pair: encode_v1(*pair)), st.just(b"PROXY UNKNOWN\r\n"))
any_header = st.one_of(v1_lines, v2_headers().map(lambda made: made[0]))


def socket_form(address: object) -> object:
    if isinstance(address, tuple):
        return (str(ipaddress.ip_address(address[0])), address[1])
    if isinstance(address, bytes) and not address.startswith(b"\x00"):
        return address.decode()
    return address


@PROPERTY
@given(v2_headers(), st.binary(max_size=20))
def test_v2_round_trip(made: tuple[bytes, dict[str, object]], trailing: bytes) -> None:
    wire, args = made
    result = done(wire + trailing, "auto")
    assert (result.consumed, result.trailing) == (len(wire), trailing)
    info = result.info
    assert info.version == 2 and info.command == args["command"]
    if args["command"] == "LOCAL" or args["source"] is None:
        assert (info.transport, info.source, info.destination) == (None, None, None)
    else:
        assert info.source == socket_form(args["source"])
        assert info.destination == socket_form(args["destination"])
        stream = "UNIX" if isinstance(args["source"], (str, bytes)) else "TCP"
        expected = {"TCP": "UDP", "UNIX": "UNIX_DGRAM"}[stream] if args["datagram"] else stream
        assert info.transport == expected
    tlvs = dict(info.tlvs)
    if args["checksum"]:
        assert tlvs.pop(TLV_CRC32C) == wire[-4:]
    assert tlvs == args["tlvs"]
    again = encode_v2(
        info.source,
        info.destination,
        command=info.command,
        datagram=bool(args["datagram"]),
        tlvs=tlvs,
        checksum=bool(args["checksum"]),
    )
    assert again == wire


@PROPERTY
@given(ip_pair, st.binary(max_size=20))
def test_v1_round_trip(pair: tuple[tuple[str, int], tuple[str, int]], trailing: bytes) -> None:
    wire = encode_v1(*pair)
    assert len(wire) <= 107
    result = done(wire + trailing, "v1")
    assert (result.consumed, result.trailing) == (len(wire), trailing)
    assert (result.info.source, result.info.destination) == (socket_form(pair[0]), socket_form(pair[1]))
    assert encode_v1(result.info.source, result.info.destination) == wire  # type: ignore[arg-type]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted({min(p, len(data)) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize(
    "wire",
    [
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /",
        V1_UNKNOWN_MAX,
        V1_UNKNOWN_MAX[:-2] + b"x\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        v2(0x21, 0x11, TCP4_BLOCK + tlv(TLV_ALPN, b"h2")) + b"rest",
        with_crc(v2(0x20, 0x00, tlv(TLV_CRC32C, bytes(4)))),
        v2(0x21, 0x11, TCP4_BLOCK + b"\x01"),
    ],
)
def test_feeding_split_at_every_byte_equals_feeding_at_once(wire: bytes) -> None:
    whole = outcome(wire)
    assert fed([wire]) == whole
    for point in range(len(wire) + 1):
        assert fed(cut(wire, [point])) == whole, point
    assert fed([wire[i : i + 1] for i in range(len(wire))]) == whole


@PROPERTY
@given(
    any_header, st.binary(max_size=30), st.lists(st.integers(0, 400), max_size=8), st.sampled_from(["auto", "v1", "v2"])
)
def test_any_chunking_of_valid_headers_gives_the_same_result(
    header: bytes, trailing: bytes, points: list[int], mode: str
) -> None:
    data = header + trailing
    assert fed(cut(data, points), mode) == outcome(data, mode)


def check_no_over_consumption(data: bytes, mode: str, max_size: int = 4096) -> None:
    result = outcome(data, mode, max_size)
    if isinstance(result, HeaderComplete):
        assert 0 < result.consumed <= len(data)
        assert result.trailing == data[result.consumed :]
        assert outcome(data[: result.consumed], mode, max_size) == HeaderComplete(result.info, result.consumed)
        # It could not have been decided a byte earlier: the header is exactly what was consumed.
        assert isinstance(outcome(data[: result.consumed - 1], mode, max_size), HeaderIncomplete)
    elif isinstance(result, HeaderIncomplete):
        assert result.bytes_needed >= 1
        if result.header_size is not None:
            assert result.header_size == len(data) + result.bytes_needed <= max_size


MODES = st.sampled_from(["auto", "v1", "v2"])
CUTS = st.lists(st.integers(0, 400), max_size=6)


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(any_header) + draw(st.binary(max_size=8)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if action == "flip" and data:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and data:
            data[where] = draw(st.sampled_from([0x00, 0x0A, 0x0D, 0x20, 0x30, 0x3A, 0xFF]))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 4))]
        else:
            del data[where:]
    return bytes(data)


def check_fuzzed(data: bytes, mode: str, max_size: int, points: list[int]) -> None:
    """Only ProxyProtocolError, never past the header, and any chunking gives the same verdict."""
    check_no_over_consumption(data, mode, max_size)
    assert fed(cut(data, points), mode, max_size) == outcome(data, mode, max_size)


@settings(PROPERTY, max_examples=150)
@given(st.binary(max_size=300), MODES, st.integers(16, 300), CUTS)
def test_random_bytes_only_ever_raise_proxy_protocol_error(
    data: bytes, mode: str, max_size: int, points: list[int]
) -> None:
    for prefix in (b"", SIG, b"PROXY "):
        check_fuzzed(prefix + data, mode, max_size, points)


@PROPERTY
@given(mutated_headers(), MODES, CUTS)
def test_mutated_headers_only_ever_raise_proxy_protocol_error(data: bytes, mode: str, points: list[int]) -> None:
    check_fuzzed(data, mode, 4096, points)


@pytest.mark.slow
@settings(PROPERTY, max_examples=1000)
@given(
    st.one_of(
        mutated_headers(),
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda data: SIG + data),
        st.binary(max_size=120).map(lambda data: b"PROXY " + data),
    ),
    MODES,
    st.integers(16, 600),
    CUTS,
)
def test_deep_fuzz(data: bytes, mode: str, max_size: int, points: list[int]) -> None:
    check_fuzzed(data, mode, max_size, points)


def test_the_parser_is_public_and_its_old_private_name_is_the_same_module() -> None:
    import netloop
    import netloop._proxy_protocol as old
    import netloop.proxy_protocol as public

    assert old is public and netloop.proxy_protocol is public
    assert netloop.ProxyInfo is public.ProxyInfo and old.encode_v1 is public.encode_v1
    assert set(public.__all__) <= set(dir(public))
    assert parse_header(encode_v1(("10.0.0.1", 1), ("10.0.0.2", 2)), "v1").info.source == ("10.0.0.1", 1)
