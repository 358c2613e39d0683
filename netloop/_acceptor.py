"""Listening sockets: binding an ``Address``, and the acceptor that hands new connections to loops."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
import stat
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from netloop._address import Address
from netloop._conn import BY_LIMIT
from netloop._errors import EngineStoppedError
from netloop._options import Options
from netloop._poller import IN
from netloop._sockopts import buffer_sizes

if TYPE_CHECKING:
    from netloop._eventloop import EventLoop

# Out of descriptors or memory: accepting again at once would spin; wait, doubling up to the cap.
_BACKOFF_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BACKOFF_FIRST = 0.01
_BACKOFF_CAP = 1.0
# The peer went away between the handshake and accept(): nothing to do but take the next one.
_TRANSIENT_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})
# The most connections a closing listener takes off its backlog (the kernel caps a backlog at somaxconn, 4096 by
# default); and the most reads that drop what a refused client sent before its socket is closed.
_BACKLOG_MAX = 65536
_REFUSE_READS = 16


def bind(address: Address, options: Options, reuse_port: bool, port: int | None = None) -> socket.socket:
    """A bound, non-blocking socket for ``address`` (listening, for a stream). ``port`` overrides port 0."""
    if address.fd is not None:
        return _inherited_listener(address, options)
    sockaddr = address.sockaddr
    if port is not None and address.family != socket.AF_UNIX:
        sockaddr = (sockaddr[0], port, *sockaddr[2:])
    sock = socket.socket(address.family, address.socktype)
    try:
        if address.family == socket.AF_UNIX:
            _remove_stale_unix_socket(address.text, sockaddr)
        else:
            if options.reuse_addr:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                if not hasattr(socket, "SO_REUSEPORT"):
                    raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not supported on this platform")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if address.family == socket.AF_INET6 and address.scheme.endswith("6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if options.bind_to_device:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, options.bind_to_device.encode())
        buffer_sizes(sock, options)
        stream = address.socktype == socket.SOCK_STREAM
        try:
            sock.bind(sockaddr)
            if stream:
                sock.listen(options.backlog)
        except OSError as exc:
            # "Address already in use" alone does not say which of the engine's addresses is taken.
            if exc.errno is None:
                raise
            raise type(exc)(exc.errno, f"{address.format(sockaddr)}: {exc.strerror}") from exc
        if not stream and _is_multicast(sockaddr[0]):
            _join_multicast(sock, address.family, sockaddr[0], options.multicast_interface)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def refuse_foreign_listener(address: Address) -> None:
    """Raise ``OSError(EADDRINUSE)`` when a socket holds ``address``'s port (checked before an SO_REUSEPORT bind).

    SO_REUSEPORT lets any socket of the same user bind the same port: another process's listener there would
    silently take a share of the connections, and never answer them. A probe bound without SO_REUSEPORT fails
    exactly when such a socket exists (a TCP probe sets SO_REUSEADDR, so lingering TIME_WAIT connections don't count).
    """
    if address.fd is not None or address.network == "unix" or not address.sockaddr[1]:
        return
    probe = socket.socket(address.family, address.socktype)
    try:
        if address.socktype == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if address.family == socket.AF_INET6 and address.scheme.endswith("6"):
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address.sockaddr)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return  # not this check's business: the bind itself reports it
        raise OSError(
            errno.EADDRINUSE,
            f"{address.text}: {os.strerror(errno.EADDRINUSE)} (by another socket: with reuse_port a foreign"
            " SO_REUSEPORT listener would take a share of the connections and never answer them, so netloop"
            " refuses to bind)",
        ) from None
    finally:
        probe.close()


def _inherited_listener(address: Address, options: Options) -> socket.socket:
    """The inherited socket of ``address`` (fd://, systemd://), non-blocking; a stream socket is listening."""
    assert address.fd is not None
    sock = socket.socket(fileno=address.fd)
    try:
        sock.setblocking(False)
        if address.socktype == socket.SOCK_STREAM:
            sock.listen(options.backlog)  # systemd listens already; another parent may not have
    except BaseException:
        sock.detach()  # the descriptor stays the caller's on failure
        raise
    return sock


def _remove_stale_unix_socket(text: str, path: str) -> None:
    """Remove a socket file nobody listens on; refuse to steal a live one or to remove a non-socket."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, f"{text}: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return
    except OSError:
        return  # not a stream socket we can probe; let bind() report the conflict
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{text}: a server is already listening on {path}")


def _is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_multicast
    except ValueError:
        return False


def _join_multicast(sock: socket.socket, family: int, group: str, interface: str | None) -> None:
    if family == socket.AF_INET:
        if interface and not _is_ip(interface):
            mreq = struct.pack("4s4si", socket.inet_aton(group), b"\0\0\0\0", socket.if_nametoindex(interface))
        else:
            mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface or "0.0.0.0"))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    else:
        index = socket.if_nametoindex(interface) if interface else 0
        mreq = struct.pack("16sI", socket.inet_pton(socket.AF_INET6, group.split("%")[0]), index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def refuse(sock: socket.SocketType) -> None:
    """Close an accepted connection nobody will serve, with a FIN: an orderly close the client reads as end of file.

    Closing a socket whose receive buffer holds bytes sends a reset instead (and the client's read fails with
    ECONNRESET, losing what it had not read yet): send the FIN first, then drop what the client sent. A reset
    for bytes that arrive later follows the FIN, and the client still reads the end of file first.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        for _ in range(_REFUSE_READS):
            if not sock.recv(65536):
                break
    except OSError:
        pass  # nothing (more) to read, or the client is gone already
    finally:
        sock.close()


class AcceptTarget(Protocol):
    """What an acceptor hands a new connection to: an event loop, or (in a worker pool's parent) a worker."""

    assigned: int  # connections handed to it; the acceptor counts each one it picks this target for

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the target's own thread."""

    def add_conn(self, sock: socket.SocketType, remote: Any, tls: ssl.SSLContext | None = None) -> object:
        """Take an accepted, non-blocking connection from ``remote`` (to serve with ``tls`` when given)."""


class Acceptor:
    """A listening stream socket on its ``owner`` loop; each new connection goes to ``pick(remote)``'s target."""

    def __init__(
        self,
        owner: EventLoop,
        sock: socket.socket,
        text: str,
        pick: Callable[[Any], AcceptTarget],
        tls: ssl.SSLContext | None = None,
        full: Callable[[], bool] | None = None,
    ) -> None:
        self.owner = owner
        # True while the engine holds max_connections: a new connection is then accepted and closed at once.
        self._full = full
        self.tls = tls  # connections of a TLS listener are handed on with its context
        self.inherited = False  # set for fd:// and systemd:// listeners
        self.sock = sock
        self.text = text
        self._fd = sock.fileno()
        self._pick = pick
        self._backoff = 0.0
        self._closed = False
        # A plain listener accepts through the C level: socket.socket's Python wrappers cost more than the rest
        # of accepting a connection, which only needs the C methods. A subclass's own accept() is kept.
        self._c_accept: Callable[[], tuple[int, Any]] | None = None
        if type(sock) is socket.socket:
            self._c_accept = sock._accept  # type: ignore[attr-defined]
        self._kind = (sock.family, sock.type, sock.proto)

    def start(self) -> None:
        """Begin accepting (owner loop thread)."""
        if not self._closed:
            self.owner.attach(self._fd, self._on_accept, IN)

    def _on_accept(self, ev: int) -> None:
        self._accept_one()

    def _accept_one(self, closing: bool = False) -> bool:
        """Accept one connection and hand it on; False when none was waiting, or accepting failed."""
        sock: socket.SocketType
        try:
            if self._c_accept is not None:
                fd, remote = self._c_accept()
                sock = socket.SocketType(*self._kind, fd)
            else:
                sock, remote = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if closing:
                pass  # the socket is closed next: nothing to retry
            elif exc.errno in _BACKOFF_ERRNOS:
                self._pause(exc)
            elif exc.errno not in _TRANSIENT_ERRNOS:
                self.owner.log.error("netloop: accept on %s failed: %s", self.text, exc)
            return False
        self._backoff = 0.0
        if self._full is not None and self._full():
            # Accepted and closed, not left in the backlog: the client learns at once, and the backlog keeps room
            # for when connections free up. Existing connections are untouched.
            owner = self.owner
            owner.refused += 1
            owner.accepted += 1
            owner.closed_by[BY_LIMIT] += 1
            refuse(sock)
            return True
        sock.setblocking(False)
        loop = self._pick(remote)
        loop.assigned += 1
        args = (sock, remote) if self.tls is None else (sock, remote, self.tls)
        if loop is self.owner:
            loop.add_conn(*args)
            return True
        try:
            loop.submit(loop.add_conn, *args)
        except EngineStoppedError:
            sock.close()  # its loop has stopped (the engine is stopping): nobody will serve it
        return True

    def _pause(self, exc: OSError) -> None:
        self._backoff = min(_BACKOFF_CAP, self._backoff * 2 or _BACKOFF_FIRST)
        self.owner.log.warning(
            "netloop: accept on %s: %s; pausing accepts for %.2fs", self.text, exc.strerror, self._backoff
        )
        self.owner.detach(self._fd)
        self.owner.call_later(self._backoff, self.start)

    def retarget(self, pick: Callable[[Any], AcceptTarget]) -> None:
        """Hand new connections to ``pick``'s targets from now on (owner's thread)."""
        self._pick = pick

    def close(self) -> None:
        """Stop accepting and close the socket (owner loop thread); a Unix socket's file is removed."""
        if self._closed:
            return
        self._closed = True
        self.owner.detach(self._fd)
        # Closing a listener resets the connections its backlog holds: the kernel completed their handshakes, and
        # their clients may have sent a request. Take them first; the stop then serves and closes them as the
        # others (with SO_REUSEPORT, a restart's new workers get every connection after this).
        for _ in range(_BACKLOG_MAX):
            if not self._accept_one(closing=True):
                break
        # A Unix socket's file is removed, unless the socket was inherited (its file belongs to whoever made it).
        path = self.sock.getsockname() if self.sock.family == socket.AF_UNIX and not self.inherited else None
        self.sock.close()
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
