"""HAProxy's PROXY protocol, versions 1 (text) and 2 (binary), sans-I/O: bytes in, a ``ProxyInfo`` out.

Strict to the letter of HAProxy's ``proxy-protocol.txt``. A receiver must be configured to expect the header (the
spec forbids guessing whether one is present): ``"auto"`` only chooses between the two versions by the first byte.
Nothing past the header is ever taken: a result says how many bytes the header was, the rest is application data.

The public face: ``parse_header`` for bytes at hand, ``ProxyHeaderParser`` fed chunk by chunk,
``parse_v2_datagram`` for PROXY v2 over UDP, and ``encode_v1``/``encode_v2``/``encode_ssl_tlv`` to build headers.
A server gets the header read for it with the ``proxy_protocol`` option and sees it as ``conn.proxy_info``; this
module is for code that meets the header elsewhere (a proxy, a test, a protocol of its own). See
docs/proxy_protocol.md.
"""

from netloop._proxy_encode import encode_ssl_tlv, encode_v1, encode_v2
from netloop._proxy_parse import (
    CLIENT_CERT_CONN,
    CLIENT_CERT_SESS,
    CLIENT_SSL,
    DEFAULT_MAX_SIZE,
    SSL_CIPHER,
    SSL_CN,
    SSL_KEY_ALG,
    SSL_SIG_ALG,
    SSL_VERSION,
    TLV_ALPN,
    TLV_AUTHORITY,
    TLV_CRC32C,
    TLV_NETNS,
    TLV_NOOP,
    TLV_SSL,
    TLV_UNIQUE_ID,
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    Address,
    Command,
    Endpoint,
    HeaderComplete,
    HeaderIncomplete,
    Mode,
    ParseResult,
    ProxyHeaderParser,
    ProxyInfo,
    ProxyProtocolError,
    SslInfo,
    Transport,
    crc32c,
    parse_header,
    parse_v2_datagram,
)

__all__ = [
    "CLIENT_CERT_CONN",
    "CLIENT_CERT_SESS",
    "CLIENT_SSL",
    "DEFAULT_MAX_SIZE",
    "SSL_CIPHER",
    "SSL_CN",
    "SSL_KEY_ALG",
    "SSL_SIG_ALG",
    "SSL_VERSION",
    "TLV_ALPN",
    "TLV_AUTHORITY",
    "TLV_CRC32C",
    "TLV_NETNS",
    "TLV_NOOP",
    "TLV_SSL",
    "TLV_UNIQUE_ID",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "Address",
    "Command",
    "Endpoint",
    "HeaderComplete",
    "HeaderIncomplete",
    "Mode",
    "ParseResult",
    "ProxyHeaderParser",
    "ProxyInfo",
    "ProxyProtocolError",
    "SslInfo",
    "Transport",
    "crc32c",
    "encode_ssl_tlv",
    "encode_v1",
    "encode_v2",
    "parse_header",
    "parse_v2_datagram",
]
