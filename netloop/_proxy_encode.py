"""The PROXY protocol's encoders: headers for tests, proxies written on netloop, and health checks.

Every header they build passes the parser (a TLV is checked as the parser checks it); public as
``netloop.proxy_protocol``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from netloop._proxy_parse import (
    _SSL_TEXT,
    _UNIX_FIELD,
    CLIENT_SSL,
    SSL_CIPHER,
    SSL_CN,
    SSL_KEY_ALG,
    SSL_SIG_ALG,
    SSL_VERSION,
    TLV_CRC32C,
    TLV_NOOP,
    V2_SIGNATURE,
    Address,
    Command,
    Endpoint,
    _check_tlv,
    crc32c,
)


def encode_v1(source: Endpoint | None = None, destination: Endpoint | None = None) -> bytes:
    """A v1 line: ``TCP4``/``TCP6`` by the addresses' family, ``UNKNOWN`` when both are None. ``ValueError`` for
    addresses v1 cannot carry."""
    if source is None and destination is None:
        return b"PROXY UNKNOWN\r\n"
    src, src_port, dst, dst_port = _ip_pair(source, destination)
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src} {dst} {src_port} {dst_port}\r\n".encode("ascii")


def encode_v2(
    source: Address | Endpoint | None = None,
    destination: Address | Endpoint | None = None,
    *,
    command: Command = "PROXY",
    datagram: bool = False,
    tlvs: Mapping[int, bytes] | Iterable[tuple[int, bytes]] = (),
    checksum: bool = False,
) -> bytes:
    """A v2 header. Addresses are ``(host, port)`` (IPv4 or IPv6; socket's 4-tuples too) or UNIX paths (``str``,
    or ``bytes`` starting with NUL for an abstract name); both None gives UNSPEC, which LOCAL requires.
    ``datagram`` picks UDP / UNIX_DGRAM. ``tlvs`` are written in order; ``checksum`` appends a CRC32C TLV.
    Raises ``ValueError`` for anything the parser would reject."""
    if command not in ("PROXY", "LOCAL"):
        raise ValueError(f"command must be 'PROXY' or 'LOCAL', got {command!r}")
    if source is None and destination is None:
        kind, body = 0x00, bytearray()
    elif command == "LOCAL":
        raise ValueError("a LOCAL header carries no addresses (the receiver uses the connection's own)")
    elif isinstance(source, (str, bytes)) and isinstance(destination, (str, bytes)):
        kind, body = (0x32 if datagram else 0x31), bytearray(_unix_field(source) + _unix_field(destination))
    else:
        src, src_port, dst, dst_port = _ip_pair(source, destination)
        kind = (0x10 if src.version == 4 else 0x20) | (0x02 if datagram else 0x01)
        body = bytearray(src.packed + dst.packed + src_port.to_bytes(2, "big") + dst_port.to_bytes(2, "big"))
    seen = set()
    for tlv_type, raw in tlvs.items() if isinstance(tlvs, Mapping) else tlvs:
        value = bytes(raw)
        if not isinstance(tlv_type, int) or not 0 <= tlv_type <= 0xFF:
            raise ValueError(f"a TLV type is one byte, got {tlv_type!r}")
        if tlv_type == TLV_CRC32C:
            raise ValueError("pass checksum=True for a CRC32C TLV; its value is computed")
        if tlv_type in seen and tlv_type != TLV_NOOP:
            raise ValueError(f"TLV 0x{tlv_type:02x} given twice")
        if len(value) > 0xFFFF:
            raise ValueError(f"TLV 0x{tlv_type:02x} is {len(value)} bytes; at most 65535 fit")
        _check_tlv(tlv_type, value, None)
        seen.add(tlv_type)
        body += bytes([tlv_type]) + len(value).to_bytes(2, "big") + value
    if checksum:
        body += bytes([TLV_CRC32C, 0, 4, 0, 0, 0, 0])
    if len(body) > 0xFFFF:
        raise ValueError(f"the header body is {len(body)} bytes; its length field holds at most 65535")
    header = bytearray(V2_SIGNATURE)
    header += bytes([0x21 if command == "PROXY" else 0x20, kind]) + len(body).to_bytes(2, "big") + body
    if checksum:
        header[-4:] = crc32c(header).to_bytes(4, "big")
    return bytes(header)


def encode_ssl_tlv(
    *,
    client: int = CLIENT_SSL,
    verify: int = 0,
    version: str | None = None,
    cn: str | None = None,
    cipher: str | None = None,
    sig_alg: str | None = None,
    key_alg: str | None = None,
) -> bytes:
    """The value of a PP2_TYPE_SSL TLV (pass it as ``tlvs={TLV_SSL: ...}``); the strings become sub-TLVs."""
    if not 0 <= client <= 0xFF or not 0 <= verify <= 0xFFFFFFFF:
        raise ValueError(f"client is one byte and verify four, got client={client!r}, verify={verify!r}")
    value = bytearray([client]) + verify.to_bytes(4, "big")
    for sub_type, text in ((SSL_VERSION, version), (SSL_CN, cn), (SSL_CIPHER, cipher), (SSL_SIG_ALG, sig_alg),
                           (SSL_KEY_ALG, key_alg)):  # fmt: skip
        if text is not None:
            raw = text.encode(_SSL_TEXT[sub_type])
            value += bytes([sub_type]) + len(raw).to_bytes(2, "big") + raw
    return bytes(value)


def _ip_pair(
    source: object, destination: object
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    if source is None or destination is None:
        raise ValueError(f"give both source and destination, or neither; got {source!r} and {destination!r}")
    src, src_port = _ip_endpoint(source, "source")
    dst, dst_port = _ip_endpoint(destination, "destination")
    if src.version != dst.version:
        raise ValueError(f"source and destination must be of one family, got {source!r} and {destination!r}")
    return src, src_port, dst, dst_port


def _ip_endpoint(address: object, what: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise ValueError(f"{what} must be (host, port), got {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str):
        raise ValueError(f"{what} host must be a str, got {host!r}")
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ValueError(f"{what} {host!r}: a scope id cannot be carried")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"{what} port must be an int 0..65535, got {port!r}")
    return ip, port


def _unix_field(path: str | bytes) -> bytes:
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else bytes(path)
    if len(raw) > _UNIX_FIELD:
        raise ValueError(f"a UNIX address holds at most 108 bytes, {path!r} is {len(raw)}")
    if raw[:1] == b"\0" and len(raw) > 1:
        if raw.endswith(b"\0"):
            raise ValueError(f"an abstract name cannot end with NUL (lost in the padding): {path!r}")
    elif b"\0" in raw:
        raise ValueError(f"a UNIX path cannot hold NUL: {path!r}")
    return raw.ljust(_UNIX_FIELD, b"\0")
