"""How a TLS connection's records come off the socket: one ``recv`` per read with OpenSSL's read-ahead (the
compiled core), or a header and a body read apiece without it (the pure-Python core, or where read-ahead is not
available).

Read-ahead is OpenSSL's, switched on per connection by ``netloop._tls_speedups`` on the ``_ssl`` object's SSL*; it
refuses (and the connection reads as without it) wherever that object's layout is not the one it checks for.
With it on, records OpenSSL has read but not yet decrypted are not in ``pending()``: ``pending(obj)`` here is
whether a read would find bytes without the socket, whichever way the connection reads.
"""

from __future__ import annotations

import importlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

from netloop._compiled import speedups


def _pending(obj: Any) -> bool:
    # Without read-ahead OpenSSL reads no further than the record it decrypts: what it holds is decrypted.
    return bool(obj.pending())


def _load() -> tuple[Callable[[Any, socket.socket, int], bool], Callable[[Any], bool]] | None:
    """The compiled ``read_ahead`` and ``has_pending``, where the compiled core is in use and they found OpenSSL's
    functions; None otherwise."""
    if speedups is None:
        return None
    try:
        compiled = importlib.import_module("netloop._tls_speedups")
    except ImportError:
        return None
    import _ssl

    if not compiled.load(getattr(_ssl, "__file__", None)):
        return None
    return compiled.read_ahead, compiled.has_pending


_COMPILED = _load()
READ_AHEAD = _COMPILED is not None
"""Whether TLS connections read with OpenSSL's read-ahead (where ``read_ahead`` accepts their ``_ssl`` object)."""


def read_ahead(obj: Any, sock: socket.socket | ssl.SSLSocket) -> Callable[[Any], bool]:
    """Switch OpenSSL's read-ahead on for ``obj`` (the ``_ssl`` object wrapping ``sock``) where it can be, and
    return the ``pending`` test that fits how it now reads."""
    if _COMPILED is not None:
        enable, has_pending = _COMPILED
        if enable(obj, sock, sock.fileno()):
            return has_pending
    return _pending
