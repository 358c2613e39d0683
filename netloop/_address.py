"""Address strings (``tcp://host:port``, ``udp6://[::1]:0``, ``unix:///path``): parsing and formatting."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from typing import Any

from netloop._errors import AddressError

_SCHEMES = {
    "tcp": ("tcp", socket.AF_UNSPEC),
    "tcp4": ("tcp", socket.AF_INET),
    "tcp6": ("tcp", socket.AF_INET6),
    "udp": ("udp", socket.AF_UNSPEC),
    "udp4": ("udp", socket.AF_INET),
    "udp6": ("udp", socket.AF_INET6),
    "unix": ("unix", socket.AF_UNIX),
}

# sizeof(sockaddr_un.sun_path): a path must leave room for its terminating NUL.
_SUN_PATH = 108 if sys.platform.startswith("linux") else 104


@dataclasses.dataclass(frozen=True)
class Address:
    """A parsed address. ``sockaddr`` is what ``bind``/``connect`` take for ``family``."""

    text: str
    scheme: str
    network: str  # "tcp", "udp" or "unix"
    family: int
    sockaddr: Any
    fd: int | None = None  # an inherited socket (fd://N, systemd://): served as it is, never bound

    @property
    def socktype(self) -> int:
        return socket.SOCK_DGRAM if self.network == "udp" else socket.SOCK_STREAM

    @property
    def host(self) -> str:
        """The host as written (a name or a numeric address); a Unix address's path."""
        if self.network == "unix":
            return str(self.sockaddr)
        return _split_host_port(self.text, self.text.partition("://")[2])[0]

    def format(self, sockaddr: Any) -> str:
        """This address's URL form with ``sockaddr`` (e.g. a bound socket's name) filled in."""
        return format_address(self.scheme, self.family, sockaddr)


def format_address(scheme: str, family: int, sockaddr: Any) -> str:
    if family == socket.AF_UNIX:
        path = sockaddr.decode() if isinstance(sockaddr, bytes) else sockaddr
        return f"{scheme}://{path}"
    host, port = sockaddr[0], sockaddr[1]
    if family == socket.AF_INET6:
        return f"{scheme}://[{host}]:{port}"
    return f"{scheme}://{host}:{port}"


def listen_addresses(text: str) -> list[Address]:
    """The addresses a server listens on for ``text``: ``systemd://`` may stand for several inherited sockets."""
    if text.partition("://")[0].lower() == "systemd":
        return _systemd_addresses(text)
    return [parse_address(text)]


def _inherited(text: str, fd: int, scheme: str) -> Address:
    """An ``Address`` for the socket on descriptor ``fd``, which this process inherited."""
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise AddressError(f"address {text!r}: descriptor {fd} is not a usable socket ({exc.strerror})") from None
    with probe:
        family, kind = probe.family, probe.type
        if family == socket.AF_UNIX:
            network = "unix"
        elif family in (socket.AF_INET, socket.AF_INET6):
            network = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        else:
            raise AddressError(f"address {text!r}: descriptor {fd} is a socket of an unsupported family")
        if kind not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            raise AddressError(f"address {text!r}: descriptor {fd} is neither a stream nor a datagram socket")
        sockaddr = probe.getsockname()
    return Address(text, network, network, int(family), sockaddr, fd)


# systemd's socket activation: the first passed descriptor is 3 (SD_LISTEN_FDS_START).
_LISTEN_FDS_START = 3


def _systemd_addresses(text: str) -> list[Address]:
    """``systemd://`` (every socket systemd passed) or ``systemd://NAME`` (those named NAME in LISTEN_FDNAMES).

    The variables are read once and removed, so that processes this one starts do not take them for theirs.
    """
    name = text.partition("://")[2]
    pid, count, names = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_FDNAMES")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    if pid is None or count is None:
        raise AddressError(f"address {text!r}: no sockets were passed (LISTEN_PID/LISTEN_FDS are not set)")
    if not pid.isdigit() or int(pid) != os.getpid():
        raise AddressError(f"address {text!r}: the sockets were passed to process {pid}, not to this one")
    if not count.isdigit() or int(count) < 1:
        raise AddressError(f"address {text!r}: LISTEN_FDS={count!r} passes no socket")
    labels = names.split(":") if names else []
    fds = range(_LISTEN_FDS_START, _LISTEN_FDS_START + int(count))
    chosen = [fd for i, fd in enumerate(fds) if not name or (i < len(labels) and labels[i] == name)]
    if not chosen:
        raise AddressError(f"address {text!r}: no passed socket is named {name!r} (LISTEN_FDNAMES={names!r})")
    return [_inherited(text, fd, "systemd") for fd in chosen]


def parse_address(text: str) -> Address:
    """Parse and resolve ``text``; raise ``AddressError`` naming it when it is malformed or unresolvable."""
    if not isinstance(text, str):
        raise AddressError(f"address must be a string like 'tcp://127.0.0.1:9000', got {text!r}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise AddressError(f"address {text!r} has no scheme; expected e.g. 'tcp://127.0.0.1:9000'")
    scheme = scheme.lower()
    if scheme == "fd":
        if not rest.isdigit():
            raise AddressError(f"address {text!r}: expected 'fd://N' with N a descriptor number")
        return _inherited(text, int(rest), scheme)
    if scheme not in _SCHEMES:
        known = ", ".join([*_SCHEMES, "fd", "systemd"])
        raise AddressError(f"address {text!r}: unknown scheme {scheme!r} (use one of {known})")
    network, family_ = _SCHEMES[scheme]
    family = int(family_)
    if network == "unix":
        if not rest:
            raise AddressError(f"address {text!r}: a unix address needs a path, e.g. 'unix:///tmp/app.sock'")
        if "\0" in rest:
            raise AddressError(f"address {text!r}: the path contains a NUL byte")
        size = len(os.fsencode(rest))
        if size >= _SUN_PATH:
            raise AddressError(
                f"address {text!r}: the path is too long ({size} bytes; a Unix socket path must be under {_SUN_PATH})"
            )
        return Address(text, scheme, network, family, rest)
    host, port = _split_host_port(text, rest)
    family, sockaddr = _resolve(text, host, port, family, network)
    return Address(text, scheme, network, family, sockaddr)


def _split_host_port(text: str, rest: str) -> tuple[str, int]:
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0 or not rest[end + 1 :].startswith(":"):
            raise AddressError(f"address {text!r}: expected '[ipv6]:port'")
        host, port_text = rest[1:end], rest[end + 2 :]
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise AddressError(f"address {text!r} has no port; expected 'host:port' (port 0 picks a free one)")
        if ":" in host:
            raise AddressError(f"address {text!r}: put an IPv6 host in brackets, e.g. 'tcp6://[::1]:9000'")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressError(f"address {text!r}: port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def _resolve(text: str, host: str, port: int, family: int, network: str) -> tuple[int, Any]:
    if not host:
        # "tcp://:9000" listens on every address of the family (IPv4 unless the scheme says 6).
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    socktype = socket.SOCK_DGRAM if network == "udp" else socket.SOCK_STREAM
    try:
        infos = socket.getaddrinfo(host, port, family, socktype, 0, socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressError(f"address {text!r}: cannot resolve host {host!r} ({exc})") from exc
    # Prefer IPv4 for an unspecified family, as most users of "tcp://localhost:N" expect.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    fam, _, _, _, sockaddr = infos[0]
    return int(fam), sockaddr
