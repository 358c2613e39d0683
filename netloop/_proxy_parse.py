"""The PROXY protocol's parser (versions 1 and 2), sans-I/O: bytes in, a ``ProxyInfo`` out.

Public as ``netloop.proxy_protocol``, with the encoders of ``netloop._proxy_encode``.

Strict to the letter of HAProxy's ``proxy-protocol.txt``. A receiver must be configured to expect the header (the
spec forbids guessing whether one is present): ``"auto"`` only chooses between the two versions by the first byte.
Nothing past the header is ever taken: a result says how many bytes the header was, the rest is application data.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, TypeAlias

from netloop._errors import NetloopError

Mode: TypeAlias = Literal["v1", "v2", "auto"]
Command: TypeAlias = Literal["PROXY", "LOCAL"]
Transport: TypeAlias = Literal["TCP", "UDP", "UNIX", "UNIX_DGRAM"]
#: The socket module's form: ``(host, port)`` for TCP/UDP, a path (``str``) or an abstract name (``bytes``) for UNIX.
Address: TypeAlias = tuple[str, int] | str | bytes
#: What the encoders take for an IP endpoint: ``(host, port)``, or the socket module's IPv6 4-tuple.
Endpoint: TypeAlias = tuple[str, int] | tuple[str, int, int, int]
Buffer: TypeAlias = bytes | bytearray | memoryview

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX_LENGTH = 107  # the spec's worst case, CRLF included
DEFAULT_MAX_SIZE = 4096
_V2_FIXED = 16  # signature, version/command, family/transport, 2-byte length

TLV_ALPN = 0x01
TLV_AUTHORITY = 0x02
TLV_CRC32C = 0x03
TLV_NOOP = 0x04
TLV_UNIQUE_ID = 0x05
TLV_SSL = 0x20
TLV_NETNS = 0x30
SSL_VERSION = 0x21
SSL_CN = 0x22
SSL_CIPHER = 0x23
SSL_SIG_ALG = 0x24
SSL_KEY_ALG = 0x25
CLIENT_SSL = 0x01
CLIENT_CERT_CONN = 0x02
CLIENT_CERT_SESS = 0x04

_UNIQUE_ID_MAX = 128
_UNIX_FIELD = 108
# Address block length and transport of each family/transport byte the spec defines (0x00, UNSPEC, has none).
_V2_ADDR_LEN = {0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}
_V2_TRANSPORT: dict[int, Transport] = {
    0x11: "TCP", 0x12: "UDP", 0x21: "TCP", 0x22: "UDP", 0x31: "UNIX", 0x32: "UNIX_DGRAM",
}  # fmt: skip
# The SSL sub-TLVs that are text, and their encoding.
_SSL_TEXT = {SSL_VERSION: "ascii", SSL_CN: "utf-8", SSL_CIPHER: "ascii", SSL_SIG_ALG: "ascii", SSL_KEY_ALG: "ascii"}

_V1_PREFIX = b"PROXY "
# What may follow "PROXY ": no candidate is a prefix of another, so the first full match decides.
_V1_FAMILIES = (b"TCP4 ", b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r")
# Shortest complete line per family ("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", "PROXY TCP6 :: :: 0 0\r\n", ...).
_V1_SHORTEST = {b"TCP4": 32, b"TCP6": 22, b"UNKNOWN": 15}
# Bytes a TCP4/TCP6 line may hold before its CRLF, so that garbage fails at once rather than at byte 107.
_V1_CHARS = {b"TCP4": frozenset(b"0123456789. "), b"TCP6": frozenset(b"0123456789abcdefABCDEF:. ")}
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_CR = 0x0D
_LF = 0x0A


class ProxyProtocolError(NetloopError, ValueError):
    """The bytes are not a valid PROXY protocol header; the message says what is wrong, ``offset`` where."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.offset = offset


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli polynomial, reflected
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: Buffer, value: int = 0) -> int:
    """CRC-32C (Castagnoli; RFC 4960 appendix B) of ``data``; pass an earlier result as ``value`` to continue it."""
    table = _CRC32C_TABLE
    crc = value ^ 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True)
class SslInfo:
    """The PP2_TYPE_SSL TLV: ``client`` flags (``CLIENT_*``), ``verify`` (0: a client certificate was verified) and
    its sub-TLVs by type (``SSL_*``; unknown ones are kept)."""

    client: int
    verify: int
    sub_tlvs: dict[int, bytes] = field(default_factory=dict, hash=False)

    def _text(self, kind: int) -> str | None:
        value = self.sub_tlvs.get(kind)
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def client_ssl(self) -> bool:
        """The client connected over SSL/TLS."""
        return bool(self.client & CLIENT_SSL)

    @property
    def verified(self) -> bool:
        """The client presented a certificate (on this connection or its session) and it was verified."""
        return self.verify == 0 and bool(self.client & (CLIENT_CERT_CONN | CLIENT_CERT_SESS))

    @property
    def version(self) -> str | None:
        """The TLS version, e.g. ``"TLSv1.3"``."""
        return self._text(SSL_VERSION)

    @property
    def cn(self) -> str | None:
        """The Common Name of the client certificate's subject."""
        return self._text(SSL_CN)

    @property
    def cipher(self) -> str | None:
        return self._text(SSL_CIPHER)

    @property
    def sig_alg(self) -> str | None:
        return self._text(SSL_SIG_ALG)

    @property
    def key_alg(self) -> str | None:
        return self._text(SSL_KEY_ALG)


@dataclass(frozen=True)
class ProxyInfo:
    """What a PROXY header says about the connection it precedes.

    ``source``/``destination`` are None when the header carries no usable addresses: v1 ``UNKNOWN``, v2 ``LOCAL``
    (a proxy's own connection, e.g. a health check), v2 ``UNSPEC``. The spec then says to use the real
    connection's endpoints. ``transport`` is None in the same cases. ``tlvs`` holds v2's TLVs by type, CRC32C
    included (already verified), NOOP left out; every TLV the spec defines has been checked.
    """

    version: Literal[1, 2]
    command: Command
    transport: Transport | None
    source: Address | None
    destination: Address | None
    tlvs: dict[int, bytes] = field(default_factory=dict, hash=False)

    @property
    def alpn(self) -> bytes | None:
        """The application protocol (PP2_TYPE_ALPN), e.g. ``b"h2"``."""
        return self.tlvs.get(TLV_ALPN)

    @property
    def authority(self) -> str | None:
        """The host name the client asked for (PP2_TYPE_AUTHORITY; with TLS, the SNI)."""
        value = self.tlvs.get(TLV_AUTHORITY)
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def unique_id(self) -> bytes | None:
        """The upstream proxy's opaque connection id (PP2_TYPE_UNIQUE_ID, at most 128 bytes)."""
        return self.tlvs.get(TLV_UNIQUE_ID)

    @property
    def netns(self) -> str | None:
        """The network namespace's name (PP2_TYPE_NETNS)."""
        value = self.tlvs.get(TLV_NETNS)
        return None if value is None else value.decode("ascii", "replace")

    @cached_property
    def ssl(self) -> SslInfo | None:
        """The client's TLS facts (PP2_TYPE_SSL), or None."""
        value = self.tlvs.get(TLV_SSL)
        return None if value is None else _parse_ssl(value, None)


@dataclass(frozen=True)
class HeaderIncomplete:
    """No verdict yet: at least ``bytes_needed`` more bytes must arrive. ``header_size`` is the header's whole
    size once it is known (version 2, after its first 16 bytes); then ``bytes_needed`` is exact."""

    bytes_needed: int
    header_size: int | None = None


@dataclass(frozen=True)
class HeaderComplete:
    """A valid header: ``info``, its size ``consumed`` (counted from the first byte of the stream), and
    ``trailing``, the bytes given to the parser after the header: application data for the caller."""

    info: ProxyInfo
    consumed: int
    trailing: bytes = b""


ParseResult: TypeAlias = HeaderIncomplete | HeaderComplete


def _check_settings(mode: str, max_size: int) -> None:
    if mode not in ("v1", "v2", "auto"):
        raise ValueError(f"mode must be 'v1', 'v2' or 'auto', got {mode!r}")
    if not isinstance(max_size, int) or max_size < _V2_FIXED:
        raise ValueError(f"max_size must be an int of at least {_V2_FIXED}, got {max_size!r}")


def parse_header(data: Buffer, mode: Mode, max_size: int = DEFAULT_MAX_SIZE) -> ParseResult:
    """Parse the PROXY header at the start of ``data`` (everything received so far); raise ``ProxyProtocolError``
    as soon as ``data`` cannot begin a valid header. Looks at no more than ``max(max_size, 107)`` bytes."""
    _check_settings(mode, max_size)
    outcome = _parse(bytes(data[: max(max_size, V1_MAX_LENGTH)]), mode, max_size)
    if isinstance(outcome, HeaderIncomplete):
        return outcome
    info, consumed = outcome
    return HeaderComplete(info, consumed, bytes(data[consumed:]))


class ProxyHeaderParser:
    """Incremental parser for the header at the start of one connection: ``feed`` it chunks as they arrive.

    ``feed`` returns ``HeaderIncomplete`` or ``HeaderComplete`` (whose ``trailing`` holds the bytes fed after the
    header) or raises ``ProxyProtocolError``, and raises that same error again if fed after it. Feeding after the
    header is complete is a ``RuntimeError``. At most ``max(max_size, 107)`` bytes are buffered; waiting for a slow
    header is the caller's business (a deadline), ``bytes_needed`` says how much is missing.
    """

    def __init__(self, mode: Mode, max_size: int = DEFAULT_MAX_SIZE) -> None:
        _check_settings(mode, max_size)
        self.mode: Mode = mode
        self.max_size = max_size
        self._cap = max(max_size, V1_MAX_LENGTH)
        self._buffer = bytearray()
        self._state: Literal["parsing", "done", "failed"] = "parsing"
        self._error: ProxyProtocolError | None = None
        self._waiting = _nothing_yet(mode)

    @property
    def bytes_needed(self) -> int:
        """At least this many more bytes are needed (0 once the header is complete or has failed)."""
        return self._waiting.bytes_needed if self._state == "parsing" else 0

    def feed(self, data: Buffer) -> ParseResult:
        if self._state == "done":
            raise RuntimeError("the PROXY header is already complete; what follows is application data")
        if self._error is not None:
            raise self._error
        room = self._cap - len(self._buffer)
        self._buffer += data[:room]
        size = self._waiting.header_size
        if size is not None and len(self._buffer) < size:
            # A v2 header's size is known, and nothing inside it is judged before all of it is here.
            return self._remember(HeaderIncomplete(size - len(self._buffer), size))
        try:
            outcome = _parse(bytes(self._buffer), self.mode, self.max_size)
        except ProxyProtocolError as exc:
            self._state, self._error = "failed", exc
            raise
        if isinstance(outcome, HeaderIncomplete):
            return self._remember(outcome)
        info, consumed = outcome
        trailing = bytes(self._buffer[consumed:]) + bytes(data[room:])
        self._state, self._buffer = "done", bytearray()
        return HeaderComplete(info, consumed, trailing)

    def _remember(self, waiting: HeaderIncomplete) -> HeaderIncomplete:
        self._waiting = waiting
        return waiting


def parse_v2_datagram(datagram: Buffer, max_size: int = DEFAULT_MAX_SIZE) -> tuple[ProxyInfo, int]:
    """Parse the v2 header at the start of one datagram (PROXY v2 over UDP); return the info and the offset of the
    payload. A datagram that ends inside the header, or any other fault, raises ``ProxyProtocolError``."""
    _check_settings("v2", max_size)
    outcome = _parse(bytes(datagram[:max_size]), "v2", max_size)
    if isinstance(outcome, HeaderIncomplete):
        size = "" if outcome.header_size is None else f" of {outcome.header_size} bytes"
        raise ProxyProtocolError(f"PROXY v2: the datagram ({len(datagram)} bytes) ends inside the header{size}")
    return outcome


_Outcome: TypeAlias = tuple[ProxyInfo, int] | HeaderIncomplete


def _nothing_yet(mode: str) -> HeaderIncomplete:
    return HeaderIncomplete(_V2_FIXED if mode == "v2" else _V1_SHORTEST[b"UNKNOWN"])


def _parse(head: bytes, mode: str, max_size: int) -> _Outcome:
    # A pure function of the bytes so far: an error or a result on a prefix stays the same on any extension of it,
    # which is what makes feeding in pieces equal to feeding at once.
    if not head:
        return _nothing_yet(mode)
    first = head[0]
    if first == V2_SIGNATURE[0] and mode != "v1":
        return _parse_v2(head, max_size)
    if first == _V1_PREFIX[0] and mode != "v2":
        return _parse_v1(head, min(V1_MAX_LENGTH, max_size))
    if mode == "auto":
        expected = "a v1 header ('PROXY ') or a v2 header (signature \\r\\n\\r\\n\\0\\r\\nQUIT\\n)"
    elif mode == "v1":
        expected = "a v1 header ('PROXY ')" + (" (this looks like v2; the parser expects v1)" if first == _CR else "")
    else:
        expected = "a v2 header (signature \\r\\n\\r\\n\\0\\r\\nQUIT\\n)" + (
            " (this looks like v1; the parser expects v2)" if first == _V1_PREFIX[0] else ""
        )
    raise ProxyProtocolError(f"not a PROXY protocol header: first byte {head[:1]!r} cannot start {expected}", 0)


def _parse_v1(head: bytes, limit: int) -> _Outcome:
    available = min(len(head), limit)
    for i in range(min(available, len(_V1_PREFIX))):
        if head[i] != _V1_PREFIX[i]:
            raise ProxyProtocolError(f"PROXY v1: a v1 line starts with 'PROXY ', got {head[: i + 1]!r}", i)
    family = None
    viable: tuple[bytes, ...] = _V1_FAMILIES
    for i in range(len(_V1_PREFIX), min(available, len(_V1_PREFIX) + 8)):
        token = head[len(_V1_PREFIX) : i + 1]
        viable = tuple(candidate for candidate in viable if candidate.startswith(token))
        if not viable:
            raise ProxyProtocolError(
                f"PROXY v1: after 'PROXY ' comes 'TCP4 ', 'TCP6 ', 'UNKNOWN ' or 'UNKNOWN\\r\\n', got {token!r}", i
            )
        if token in viable:
            family = token
            break
    if family is None:
        return HeaderIncomplete(max(1, min(_V1_SHORTEST[c[:-1]] for c in viable) - len(head)))
    name = family[:-1]
    # "UNKNOWN\r": the CR is the start of the line end, scanned below.
    start = len(_V1_PREFIX) + (len(family) if family.endswith(b" ") else len(name))
    allowed = _V1_CHARS.get(name)
    end = -1
    for i in range(start, available):
        byte = head[i]
        if byte == _CR:
            if i + 1 >= limit:
                break  # its LF would be byte limit + 1
            if i + 1 >= len(head):
                return HeaderIncomplete(1)
            if head[i + 1] != _LF:
                raise ProxyProtocolError(f"PROXY v1: a CR not followed by LF ({head[i : i + 2]!r})", i)
            end = i
            break
        if byte == _LF:
            raise ProxyProtocolError("PROXY v1: a bare LF; the line must end with CRLF", i)
        if allowed is not None and byte not in allowed:
            raise ProxyProtocolError(f"PROXY v1: {head[i : i + 1]!r} cannot appear in a {name.decode()} line", i)
    if end < 0:
        if available >= limit:
            raise ProxyProtocolError(f"PROXY v1: no CRLF within the first {limit} bytes (a v1 line is at most 107)")
        return HeaderIncomplete(max(1, _V1_SHORTEST[name] - len(head)))
    if name == b"UNKNOWN":  # the spec: ignore whatever precedes the CRLF
        return ProxyInfo(1, "PROXY", None, None, None), end + 2
    fields = head[start:end].split(b" ")
    if len(fields) != 4 or not all(fields):
        raise ProxyProtocolError(
            f"PROXY v1: after '{name.decode()} ' come source, destination, source port and destination port, "
            f"separated by single spaces; got {head[start:end]!r}",
            start,
        )
    offsets = [start]
    for text in fields[:3]:
        offsets.append(offsets[-1] + len(text) + 1)
    version = 4 if name == b"TCP4" else 6
    src = _v1_host(fields[0], version, "source address", offsets[0])
    dst = _v1_host(fields[1], version, "destination address", offsets[1])
    src_port = _v1_port(fields[2], "source port", offsets[2])
    dst_port = _v1_port(fields[3], "destination port", offsets[3])
    return ProxyInfo(1, "PROXY", "TCP", (src, src_port), (dst, dst_port)), end + 2


def _v1_host(text: bytes, version: int, what: str, offset: int) -> str:
    try:
        ip = ipaddress.IPv4Address(text.decode()) if version == 4 else ipaddress.IPv6Address(text.decode())
    except ValueError as exc:
        raise ProxyProtocolError(
            f"PROXY v1: {what} {text!r} is not a valid IPv{version} address ({exc})", offset
        ) from None
    return str(ip)


def _v1_port(text: bytes, what: str, offset: int) -> int:
    if _V1_PORT.fullmatch(text) is None or int(text) > 0xFFFF:
        raise ProxyProtocolError(f"PROXY v1: {what} {text!r} is not a decimal 0..65535 without leading zeros", offset)
    return int(text)


def _parse_v2(head: bytes, max_size: int) -> _Outcome:
    available = len(head)
    for i in range(min(available, len(V2_SIGNATURE))):
        if head[i] != V2_SIGNATURE[i]:
            raise ProxyProtocolError(
                f"PROXY v2: the signature is \\r\\n\\r\\n\\0\\r\\nQUIT\\n, got {head[: i + 1]!r}", i
            )
    if available < 13:
        return HeaderIncomplete(_V2_FIXED - available)
    version, command = head[12] >> 4, head[12] & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"PROXY v2: version {version} in byte 0x{head[12]:02x}; only 2 is defined", 12)
    if command > 1:
        raise ProxyProtocolError(f"PROXY v2: command {command} is neither LOCAL (0) nor PROXY (1)", 12)
    if available < 14:
        return HeaderIncomplete(_V2_FIXED - available)
    kind = head[13]
    if kind >> 4 > 3:
        raise ProxyProtocolError(f"PROXY v2: address family {kind >> 4} is none of UNSPEC, INET, INET6, UNIX", 13)
    if kind & 0x0F > 2:
        raise ProxyProtocolError(f"PROXY v2: transport {kind & 0x0F} is none of UNSPEC, STREAM, DGRAM", 13)
    if command == 1 and kind != 0 and kind not in _V2_ADDR_LEN:
        raise ProxyProtocolError(
            f"PROXY v2: family/transport 0x{kind:02x} pairs UNSPEC with a defined value, which only a LOCAL header "
            "may carry (PROXY takes 0x00, 0x11, 0x12, 0x21, 0x22, 0x31 or 0x32)",
            13,
        )
    if available < _V2_FIXED:
        return HeaderIncomplete(_V2_FIXED - available)
    length = int.from_bytes(head[14:16], "big")
    size = _V2_FIXED + length
    if size > max_size:
        raise ProxyProtocolError(f"PROXY v2: the header is {size} bytes (16 + {length}), over max_size {max_size}", 14)
    address_length = _V2_ADDR_LEN.get(kind, 0)
    if length < address_length:
        raise ProxyProtocolError(
            f"PROXY v2: family/transport 0x{kind:02x} has a {address_length}-byte address block, "
            f"but the header length is {length}",
            14,
        )
    if available < size:
        return HeaderIncomplete(size - available, size)
    header = head[:size]
    tlvs: dict[int, bytes] = {}
    for tlv_type, start, stop in _split_tlvs(header, _V2_FIXED + address_length, size, "header", 0):
        if tlv_type == TLV_NOOP:
            continue
        if tlv_type in tlvs:
            raise ProxyProtocolError(f"PROXY v2: TLV 0x{tlv_type:02x} appears twice", start - 3)
        tlvs[tlv_type] = header[start:stop]
        _check_tlv(tlv_type, tlvs[tlv_type], start)
        if tlv_type == TLV_CRC32C:
            carried = int.from_bytes(header[start:stop], "big")
            computed = crc32c(header[:start] + b"\0\0\0\0" + header[stop:])
            if carried != computed:
                raise ProxyProtocolError(
                    f"PROXY v2: CRC32C mismatch: the header carries 0x{carried:08x}, its bytes give 0x{computed:08x}",
                    start,
                )
    if command == 0:  # LOCAL: the spec says to discard the addresses and the family
        return ProxyInfo(2, "LOCAL", None, None, None, tlvs), size
    if kind == 0:
        return ProxyInfo(2, "PROXY", None, None, None, tlvs), size
    return ProxyInfo(2, "PROXY", _V2_TRANSPORT[kind], *_v2_addresses(kind, header), tlvs), size


def _v2_addresses(kind: int, header: bytes) -> tuple[Address, Address]:
    block = header[_V2_FIXED : _V2_FIXED + _V2_ADDR_LEN[kind]]
    if kind >> 4 == 3:
        return _unix_path(block[:_UNIX_FIELD]), _unix_path(block[_UNIX_FIELD:])
    width = 4 if kind >> 4 == 1 else 16
    src, dst = ipaddress.ip_address(block[:width]), ipaddress.ip_address(block[width : 2 * width])
    ports = block[2 * width :]
    return (str(src), int.from_bytes(ports[:2], "big")), (str(dst), int.from_bytes(ports[2:], "big"))


def _unix_path(raw: bytes) -> str | bytes:
    if raw[:1] == b"\0" and raw.strip(b"\0"):
        return raw.rstrip(b"\0")  # a Linux abstract name: the socket module gives bytes with the leading NUL
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _split_tlvs(data: bytes, start: int, end: int, where: str, base: int | None) -> list[tuple[int, int, int]]:
    """(type, value start, value end) of each TLV in ``data[start:end]``, which they must fill exactly; ``base`` is
    where ``data`` starts in the header, for error offsets (None: unknown)."""
    found = []
    pos = start
    while pos < end:
        if end - pos < 3:
            raise ProxyProtocolError(
                f"PROXY v2: {end - pos} byte(s) left over at the end of the {where}; a TLV takes at least 3",
                None if base is None else base + pos,
            )
        value_length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        if pos + 3 + value_length > end:
            raise ProxyProtocolError(
                f"PROXY v2: TLV 0x{data[pos]:02x} declares {value_length} byte(s) but only {end - pos - 3} "
                f"remain in the {where}",
                None if base is None else base + pos,
            )
        found.append((data[pos], pos + 3, pos + 3 + value_length))
        pos += 3 + value_length
    return found


def _check_tlv(tlv_type: int, value: bytes, offset: int | None) -> None:
    if tlv_type == TLV_CRC32C and len(value) != 4:
        raise ProxyProtocolError(f"PROXY v2: the CRC32C TLV holds 4 bytes, not {len(value)}", offset)
    if tlv_type == TLV_AUTHORITY:
        _check_text(value, "utf-8", "the AUTHORITY TLV", offset)
    elif tlv_type == TLV_UNIQUE_ID and len(value) > _UNIQUE_ID_MAX:
        raise ProxyProtocolError(f"PROXY v2: the UNIQUE_ID TLV is {len(value)} bytes, over 128", offset)
    elif tlv_type == TLV_NETNS:
        _check_text(value, "ascii", "the NETNS TLV", offset)
    elif tlv_type == TLV_SSL:
        _parse_ssl(value, offset)


def _check_text(value: bytes, encoding: str, what: str, offset: int | None) -> None:
    try:
        value.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ProxyProtocolError(f"PROXY v2: {what} is not {encoding} ({exc.reason} at {exc.start})", offset) from None


def _parse_ssl(value: bytes, offset: int | None) -> SslInfo:
    if len(value) < 5:
        raise ProxyProtocolError(f"PROXY v2: the SSL TLV needs 5 bytes (client, verify), has {len(value)}", offset)
    subs: dict[int, bytes] = {}
    for sub_type, start, stop in _split_tlvs(value, 5, len(value), "SSL TLV", offset):
        if sub_type in subs:
            raise ProxyProtocolError(f"PROXY v2: SSL sub-TLV 0x{sub_type:02x} appears twice", offset)
        subs[sub_type] = value[start:stop]
        if sub_type in _SSL_TEXT:
            _check_text(subs[sub_type], _SSL_TEXT[sub_type], f"SSL sub-TLV 0x{sub_type:02x}", offset)
    return SslInfo(value[0], int.from_bytes(value[1:5], "big"), subs)
