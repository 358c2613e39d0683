"""netloop.Client and EventLoop.dial/enroll: real sockets against netloop's own servers and plain ones."""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import socket
import socketserver
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from loopback import connect, recv_exact, serving, split, wait_until

import netloop
import netloop._lookup
from examples.echo import Echo
from netloop._lookup import LookupThreads

TIMEOUT = 5.0
LOOP_OPTIONS = [
    pytest.param({}, id="level"),
    pytest.param({"edge_triggered": True}, id="edge"),
    pytest.param({"pre_write": True}, id="pre-write"),
    pytest.param({"poller": "poll"}, id="poll"),
]


class Collector(netloop.EventHandler):
    """Collects each connection's inbound bytes in ``conn.context`` and reports opens and closes."""

    def __init__(self) -> None:
        self.opened: queue.Queue[netloop.Conn] = queue.Queue()
        self.closed: queue.Queue[tuple[netloop.Conn, BaseException | None]] = queue.Queue()
        self.datagrams: queue.Queue[bytes] = queue.Queue()
        self.received = threading.Condition()
        self.booted: list[netloop.Engine] = []
        self.shut_down: list[netloop.Engine] = []

    def on_boot(self, engine: netloop.Engine) -> None:
        self.booted.append(engine)

    def on_shutdown(self, engine: netloop.Engine) -> None:
        self.shut_down.append(engine)

    def on_open(self, conn: netloop.Conn) -> None:
        conn.context = bytearray()
        self.opened.put(conn)

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.next()
        self.datagrams.put(data)
        with self.received:
            conn.context += data
            self.received.notify_all()
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        self.closed.put((conn, err))

    def wait_for(self, conn: netloop.Conn, size: int) -> bytes:
        with self.received:
            assert self.received.wait_for(lambda: len(conn.context) >= size, TIMEOUT), bytes(conn.context)
            return bytes(conn.context)


@contextlib.contextmanager
def running(handler: netloop.EventHandler, **options: Any) -> Iterator[netloop.Client]:
    client = netloop.Client(handler, **options)
    client.start()
    try:
        yield client
    finally:
        client.stop(TIMEOUT)


@pytest.fixture(scope="module")
def echo() -> Iterator[netloop.Engine]:
    with serving(Echo(), "tcp://127.0.0.1:0", "udp://127.0.0.1:0") as engine:
        yield engine


def tcp_addr(engine: netloop.Engine) -> str:
    return next(a for a in engine.addrs if a.startswith("tcp://"))


def open_fds() -> set[tuple[str, str]]:
    """This process's descriptors, each with what it refers to (a socket's inode tells one from its successor)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to list descriptors")
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (the listing's own descriptor, another thread's)
            found.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
    return found


def new_fds(before: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Descriptors opened since ``before`` and still open (one another thread closed meanwhile is no leak)."""
    return open_fds() - before


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback TCP port that refuses connections: bound, not listening, held for the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class Resolver:
    """The system resolver (``socket.getaddrinfo``) with a few names of its own under ``.test``.

    ``slow.test`` is 127.0.0.1 once ``release`` is set (``asked`` tells that a lookup is waiting), ``v4.test`` is
    127.0.0.1 and ``v6.test`` ::1 only, at once, and ``nope.test`` does not exist. Other names and numeric hosts go
    to the real resolver; the connections to the answers are real.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked = threading.Event()
        self.real = socket.getaddrinfo

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, kind: int = 0, proto: int = 0, flags: int = 0) -> Any:
        if host == "slow.test":
            self.asked.set()
            self.release.wait(4 * TIMEOUT)
            host = "127.0.0.1"
        elif host == "nope.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        elif host in ("v4.test", "v6.test"):
            host = "127.0.0.1" if host == "v4.test" else "::1"
        return self.real(host, port, family, kind, proto, flags)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Resolver]:
    fake = Resolver()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    try:
        yield fake
    finally:
        fake.release.set()  # a lookup still waiting ends


@pytest.fixture
def full_backlog_port() -> Iterator[int]:
    """A loopback TCP listener that never accepts and whose backlog is full: a connect there hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        with socket.socket() as probe:
            probe.settimeout(0.1)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                pass
            else:
                pytest.skip("this system completes connects to a listener with a full backlog")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# -- Client.dial ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", LOOP_OPTIONS)
def test_many_concurrent_dials_to_netloop_server_spread_over_loops(
    echo: netloop.Engine, options: dict[str, Any]
) -> None:
    handler = Collector()
    count = 40
    with running(handler, num_event_loop=2, **options) as client:
        with ThreadPoolExecutor(8) as pool:
            conns = list(pool.map(lambda _: client.dial(tcp_addr(echo), timeout=TIMEOUT), range(count)))
        # dial returns after on_open ran on the connection's loop.
        assert handler.opened.qsize() == count
        assert [len(loop.conns) for loop in client.loops] == [count // 2, count // 2]
        for i, conn in enumerate(conns):
            conn.async_write(b"hello %d;" % i)
        for i, conn in enumerate(conns):
            assert handler.wait_for(conn, len(b"hello %d;" % i)) == b"hello %d;" % i
    closed = [handler.closed.get(timeout=TIMEOUT) for _ in range(count)]
    assert {id(conn) for conn, _ in closed} == {id(conn) for conn in conns}
    assert all(err is None for _, err in closed)
    assert all(conn.closed for conn in conns)


class PlainEcho(socketserver.BaseRequestHandler):
    """A thread per client: greets it, then echoes until it hangs up."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.sendall(b"hi\n")
        while data := sock.recv(65536):
            sock.sendall(data)


class PlainServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops concurrent connects, which then retry a second later


@pytest.fixture
def plain_server() -> Iterator[str]:
    """A thread-per-client server written with plain sockets; yields its address."""
    with PlainServer(("127.0.0.1", 0), PlainEcho) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield f"tcp://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(TIMEOUT)


def test_concurrent_dials_to_plain_socket_server(plain_server: str) -> None:
    handler = Collector()
    with running(handler, num_event_loop=2) as client, ThreadPoolExecutor(8) as pool:
        conns = list(pool.map(lambda _: client.dial(plain_server, TIMEOUT), range(16)))
        for i, conn in enumerate(conns):
            conn.async_writev([b"ping ", b"%d" % i])
        for i, conn in enumerate(conns):
            expected = b"hi\nping %d" % i
            assert handler.wait_for(conn, len(expected)) == expected


def test_dial_unix_socket(tmp_path: Any) -> None:
    handler = Collector()
    path = tmp_path / "echo.sock"
    with serving(Echo(), f"unix://{path}"), running(handler) as client:
        conn = client.dial(f"unix://{path}")
        assert conn.remote_addr == str(path)
        conn.async_write(b"over unix")
        assert handler.wait_for(conn, 9) == b"over unix"


def test_dial_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        engine = netloop.start(Echo(), "tcp6://[::1]:0")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    handler = Collector()
    try:
        with running(handler) as client:
            conn = client.dial(engine.addrs[0])
            conn.async_write(b"six")
            assert handler.wait_for(conn, 3) == b"six"
    finally:
        engine.stop(TIMEOUT)


def test_refused_dial_raises_and_leaks_nothing(refused_port: int) -> None:
    handler = Collector()
    with running(handler, num_event_loop=2) as client:
        before = open_fds()
        # Held while counting: a leaked socket would stay open as long as its exception's frames live.
        with pytest.raises(ConnectionRefusedError, match=f"tcp://127.0.0.1:{refused_port}") as caught:
            client.dial(f"tcp://127.0.0.1:{refused_port}", timeout=TIMEOUT)
        assert not new_fds(before), caught
        assert client.count_connections() == 0
        assert [loop.load() for loop in client.loops] == [0, 0]
    assert handler.opened.empty() and handler.closed.empty()


def test_dial_times_out_and_leaks_nothing(full_backlog_port: int) -> None:
    handler = Collector()
    with running(handler) as client:
        before = open_fds()
        with pytest.raises(TimeoutError, match=r"timed out after 0\.2s") as caught:
            client.dial(f"tcp://127.0.0.1:{full_backlog_port}", timeout=0.2)
        assert not new_fds(before), caught
        assert client.count_connections() == 0
        assert client.loops[0].load() == 0
    assert handler.opened.empty() and handler.closed.empty()


def test_dial_missing_unix_path(tmp_path: Any) -> None:
    with running(Collector()) as client, pytest.raises(FileNotFoundError, match=r"nowhere\.sock"):
        client.dial(f"unix://{tmp_path}/nowhere.sock")


def test_dial_errors_before_any_connect() -> None:
    client = netloop.Client(Collector())
    with pytest.raises(netloop.EngineStoppedError):
        client.dial("tcp://127.0.0.1:9")
    client.start()
    with pytest.raises(netloop.AddressError, match="no port"):
        client.dial("tcp://127.0.0.1")
    client.stop(TIMEOUT)
    with pytest.raises(netloop.EngineStoppedError):
        client.dial("tcp://127.0.0.1:9")
    with pytest.raises(RuntimeError, match="already started"):
        client.start()


def test_bad_options_are_refused() -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        netloop.Client(Collector(), no_such_option=1)
    with pytest.raises(ValueError, match="workers"):
        netloop.Client(Collector(), workers=2)
    with pytest.raises(TypeError, match="EventHandler"):
        netloop.Client(object())  # type: ignore[arg-type]


def test_dial_from_a_client_loop_is_refused(echo: netloop.Engine) -> None:
    errors: queue.Queue[BaseException] = queue.Queue()

    class DialsInside(Collector):
        def on_open(self, conn: netloop.Conn) -> None:
            try:
                client.dial(tcp_addr(echo))
            except RuntimeError as exc:
                errors.put(exc)

    with running(DialsInside()) as client:
        client.dial(tcp_addr(echo))
        assert "event_loop.dial" in str(errors.get(timeout=TIMEOUT))


def test_boot_shutdown_and_shutdown_action(echo: netloop.Engine) -> None:
    class StopsOnBye(Collector):
        def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
            return netloop.Action.SHUTDOWN if conn.next() == b"bye" else None

    handler = StopsOnBye()
    client = netloop.Client(handler)
    with client:
        assert [engine.addrs for engine in handler.booted] == [[]]
        conn = client.dial(tcp_addr(echo))
        conn.async_write(b"bye")
        assert client.wait(TIMEOUT)
    assert handler.closed.get(timeout=TIMEOUT) == (conn, None)
    assert len(handler.shut_down) == 1


# -- Client.enroll -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", LOOP_OPTIONS)
def test_enroll_connected_socket(options: dict[str, Any]) -> None:
    handler = Collector()
    ours, theirs = socket.socketpair()
    with theirs, running(handler, **options) as client:
        conn = client.enroll(ours)
        assert handler.opened.get_nowait() is conn
        theirs.sendall(b"to netloop")
        assert handler.wait_for(conn, 10) == b"to netloop"
        conn.async_write(b"from netloop")
        theirs.settimeout(TIMEOUT)
        assert theirs.recv(100) == b"from netloop"
        theirs.close()
        assert handler.closed.get(timeout=TIMEOUT) == (conn, None)


def test_enroll_refuses_unconnected_socket_and_leaves_it_open() -> None:
    with running(Collector()) as client, socket.socket() as sock:
        with pytest.raises(ValueError, match="not connected"):
            client.enroll(sock)
        assert sock.fileno() >= 0


# -- UDP -----------------------------------------------------------------------------------------------------


def test_udp_dial_one_event_per_datagram(echo: netloop.Engine) -> None:
    handler = Collector()
    udp = next(a for a in echo.addrs if a.startswith("udp://"))
    with running(handler) as client:
        conn = client.dial(udp)
        assert handler.opened.get_nowait() is conn
        sent = [b"one", b"", b"three" * 1000]
        for datagram in sent:
            conn.async_write(datagram)
        received = [handler.datagrams.get(timeout=TIMEOUT) for _ in sent]
        assert sorted(received) == sorted(sent)
        assert not conn.closed


def test_udp_without_listener_closes_with_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Collector()
    with running(handler) as client:
        conn = client.dial(f"udp://127.0.0.1:{port}")
        conn.async_write(b"anyone?")
        closed, err = handler.closed.get(timeout=TIMEOUT)
        assert closed is conn
        assert isinstance(err, ConnectionRefusedError)


def test_enroll_connected_udp_socket(echo: netloop.Engine) -> None:
    handler = Collector()
    host, port = next(a for a in echo.addrs if a.startswith("udp://")).removeprefix("udp://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, int(port)))
    with running(handler) as client:
        conn = client.enroll(sock)
        conn.async_writev([b"a", b"b"])
        assert handler.datagrams.get(timeout=TIMEOUT) == b"ab"


# -- EventLoop.dial / enroll from a server's handler -----------------------------------------------------


class Pairing(netloop.EventHandler):
    """On each accepted connection, dials ``target`` on the same loop and writes to it before it connects."""

    def __init__(self, target: str, timeout: float | None = None, write_early: bool = True) -> None:
        self.target = target
        self.timeout = timeout
        self.write_early = write_early
        self.events: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self.received = threading.Condition()

    def on_open(self, conn: netloop.Conn) -> None:
        if conn.context is not None:
            # The outbound end: its context was set after dial returned, so it opened later.
            self.events.put(("open", conn, conn.context))
            return
        outbound = conn.event_loop.dial(self.target, self.timeout)
        self.registered(conn, outbound)
        outbound.context = conn
        conn.context = outbound
        if self.write_early:
            outbound.write(b"early ")
            outbound.writev([b"bytes", b"!"])

    def on_traffic(self, conn: netloop.Conn) -> None:
        conn.context.write(conn.next())

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        self.events.put(("close", conn, err))

    def registered(self, conn: netloop.Conn, outbound: netloop.Conn) -> None:
        """Report, right after dial/enroll returned, whether ``outbound`` shares the loop and is open."""
        self.events.put(("registered", outbound, (outbound.event_loop is conn.event_loop, outbound.closed)))


def accepted_and_registered(handler: Pairing) -> netloop.Conn:
    kind, outbound, (same_loop, closed) = handler.events.get(timeout=TIMEOUT)
    assert kind == "registered"
    assert same_loop and not closed
    return outbound  # type: ignore[no-any-return]


def closed_with(handler: Pairing, outbound: netloop.Conn) -> BaseException | None:
    """The error that ``outbound``'s ``on_close`` got; that close must be the handler's next event."""
    kind, closed, err = handler.events.get(timeout=TIMEOUT)
    assert (kind, closed) == ("close", outbound)
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize("options", LOOP_OPTIONS)
def test_loop_dial_from_handler_pairs_connections_on_one_loop(echo: netloop.Engine, options: dict[str, Any]) -> None:
    handler = Pairing(tcp_addr(echo))
    with (
        serving(handler, "tcp://127.0.0.1:0", num_event_loop=2, **options) as engine,
        connect(engine.addrs[0]) as sock,
    ):
        outbound = accepted_and_registered(handler)
        kind, opened, downstream = handler.events.get(timeout=TIMEOUT)
        assert (kind, opened) == ("open", outbound)
        # What was written while connecting went out first, and in order.
        assert recv_exact(sock, 12) == b"early bytes!"
        sock.sendall(b"and more")
        assert sock.recv(100) == b"and more"
        assert engine.count_connections() == 2
        assert downstream.event_loop is outbound.event_loop


def test_loop_dial_udp_from_handler(echo: netloop.Engine) -> None:
    handler = Pairing(next(a for a in echo.addrs if a.startswith("udp://")))
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        outbound = accepted_and_registered(handler)
        assert handler.events.get(timeout=TIMEOUT)[:2] == ("open", outbound)
        # Two datagrams, sent before on_open, echoed and read once it opened.
        assert recv_exact(sock, 12) == b"early bytes!"


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("tcp://127.0.0.1:{port}", ConnectionRefusedError),
        ("unix://{tmp}/missing.sock", FileNotFoundError),
        ("tcp://nope.test:{port}", netloop.AddressError),
        ("udp://nope.test:{port}", netloop.AddressError),
    ],
    ids=["tcp-refused", "unix-missing", "tcp-unknown-name", "udp-unknown-name"],
)
def test_loop_dial_failure_reports_on_close(
    refused_port: int, tmp_path: Any, resolver: Resolver, target: str, error: type
) -> None:
    target = target.format(port=refused_port, tmp=tmp_path)
    handler = Pairing(target)
    with serving(handler, "tcp://127.0.0.1:0") as engine:
        before = open_fds()
        with connect(engine.addrs[0]):
            outbound = accepted_and_registered(handler)
            err = closed_with(handler, outbound)
            assert isinstance(err, error)
            assert target in str(err)
            assert engine.count_connections() == 1
            assert engine.loops[0].load() == 1
        assert handler.events.get(timeout=TIMEOUT)[0] == "close"
        assert not new_fds(before)


class DialsOnce(Pairing):
    """Pairs the first accepted connection only; any later one is an echo, whose events are not reported."""

    dialed = False

    def on_open(self, conn: netloop.Conn) -> None:
        if conn.context is None and self.dialed:
            conn.context = conn
            return
        self.dialed = True
        super().on_open(conn)

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> None:
        if conn.context is not conn:
            super().on_close(conn, err)


@pytest.mark.parametrize("options", LOOP_OPTIONS)
def test_loop_dial_looks_a_name_up_off_the_loop(
    echo: netloop.Engine, resolver: Resolver, options: dict[str, Any]
) -> None:
    port = split(tcp_addr(echo))[1][1]
    handler = DialsOnce(f"tcp://slow.test:{port}")
    with serving(handler, "tcp://127.0.0.1:0", **options) as engine, connect(engine.addrs[0]) as first:
        try:
            outbound = accepted_and_registered(handler)
            assert resolver.asked.wait(TIMEOUT)
            assert outbound.remote_addr == ("slow.test", port)
            # The lookup is stuck: the loop serves another connection meanwhile.
            with connect(engine.addrs[0]) as second:
                second.sendall(b"served")
                assert recv_exact(second, 6) == b"served"
        finally:
            resolver.release.set()
        assert handler.events.get(timeout=TIMEOUT)[:2] == ("open", outbound)
        # What was written while the name was looked up went out first, and in order.
        assert recv_exact(first, 12) == b"early bytes!"
        assert outbound.remote_addr == ("127.0.0.1", port)


class FansOut(netloop.EventHandler):
    """On the first accepted connection, dials every one of ``targets``; reports each of those that opens."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.opened: queue.Queue[netloop.Conn] = queue.Queue()

    def on_open(self, conn: netloop.Conn) -> None:
        if conn.context == "outbound":
            self.opened.put(conn)
            return
        for target in self.targets:
            conn.event_loop.dial(target, TIMEOUT).context = "outbound"


def test_a_stuck_lookup_holds_up_no_other(echo: netloop.Engine, resolver: Resolver) -> None:
    port = split(tcp_addr(echo))[1][1]
    handler = FansOut([f"tcp://slow.test:{port}"] + [f"tcp://v4.test:{port}"] * 20)
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]):
        try:
            # More lookups than the loops' lookup threads: they all get their turn while the first is stuck.
            opened = {handler.opened.get(timeout=TIMEOUT) for _ in range(20)}
            assert resolver.asked.is_set() and handler.opened.empty()
        finally:
            resolver.release.set()
        assert handler.opened.get(timeout=TIMEOUT) not in opened
        assert engine.count_connections() == 22


def stuck(started: threading.Event, release: threading.Event) -> None:
    started.set()
    release.wait(TIMEOUT)


def test_lookup_threads_cap_end_when_idle_and_start_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netloop._lookup, "_LOOKUP_IDLE", 0.01)
    threads = LookupThreads()
    for _ in range(3):
        # As many stuck jobs as threads: one more waits for a thread to be free.
        release = threading.Event()
        started = [threading.Event() for _ in range(netloop._lookup._LOOKUP_THREADS)]
        for event in started:
            threads.submit(functools.partial(stuck, event, release))
        assert all(event.wait(TIMEOUT) for event in started)
        last = threading.Event()
        threads.submit(last.set)
        assert len(threads._jobs) == 1 and not last.is_set()
        release.set()
        assert last.wait(TIMEOUT)
        # Idle threads end; the next round starts new ones.
        wait_until(lambda: threads._threads == 0, what="the idle lookup threads to end")
        assert threads._waiting == 0


@pytest.mark.parametrize("name", ["v4.test", "v6.test"])
@pytest.mark.parametrize("scheme", ["tcp", "udp"])
def test_loop_dial_a_name_from_handler(resolver: Resolver, scheme: str, name: str) -> None:
    host = "127.0.0.1" if name == "v4.test" else "::1"
    try:
        target = netloop.start(Echo(), f"{scheme}://[{host}]:0" if ":" in host else f"{scheme}://{host}:0")
    except OSError as exc:
        pytest.skip(f"no {host} loopback: {exc}")
    try:
        # tcp:// and udp:// take either family: a name with IPv6 addresses only gets an IPv6 socket.
        port = split(target.addrs[0])[1][1]
        handler = Pairing(f"{scheme}://{name}:{port}", timeout=TIMEOUT)
        with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
            outbound = accepted_and_registered(handler)
            assert handler.events.get(timeout=TIMEOUT)[:2] == ("open", outbound)
            assert recv_exact(sock, 12) == b"early bytes!"
            sock.sendall(b"and more")
            assert recv_exact(sock, 8) == b"and more"
            assert outbound.remote_addr[:2] == (host, port)
            assert outbound.local_addr[0] == host
    finally:
        target.stop(TIMEOUT)


def test_loop_dial_udp_holds_datagrams_up_to_the_cap_while_looking_up(echo: netloop.Engine, resolver: Resolver) -> None:
    port = split(next(a for a in echo.addrs if a.startswith("udp://")))[1][1]

    class WritesThree(Pairing):
        def on_open(self, conn: netloop.Conn) -> None:
            if conn.context is not None:
                self.events.put(("open", conn, conn.context))
                return
            outbound = conn.event_loop.dial(self.target)
            outbound.context = conn
            conn.context = outbound
            # The cap is 10 bytes: the third datagram has no room, and is dropped as a full socket drops it.
            self.events.put(("written", outbound, [outbound.write(data) for data in (b"12345", b"67890", b"x")]))

    handler = WritesThree(f"udp://slow.test:{port}")
    with serving(handler, "tcp://127.0.0.1:0", write_buffer_cap=10) as engine, connect(engine.addrs[0]) as sock:
        try:
            kind, outbound, written = handler.events.get(timeout=TIMEOUT)
            assert (kind, written) == ("written", [5, 5, 0])
        finally:
            resolver.release.set()
        assert handler.events.get(timeout=TIMEOUT)[:2] == ("open", outbound)
        assert recv_exact(sock, 10) == b"1234567890"


@pytest.mark.parametrize("scheme", ["tcp", "udp"])
def test_loop_dial_timeout_counts_the_name_lookup(resolver: Resolver, scheme: str) -> None:
    handler = Pairing(f"{scheme}://slow.test:9", timeout=0.2)
    with serving(handler, "tcp://127.0.0.1:0") as engine:
        before = open_fds()
        try:
            with connect(engine.addrs[0]):
                outbound = accepted_and_registered(handler)
                err = closed_with(handler, outbound)
                assert isinstance(err, TimeoutError)
                assert f"{scheme}://slow.test:9" in str(err)
        finally:
            resolver.release.set()
        assert handler.events.get(timeout=TIMEOUT)[0] == "close"
        # The released lookup finishes on its own thread after the close: its descriptors go with it.
        wait_until(lambda: not new_fds(before), what="the lookup's descriptors to be released")


def test_loop_dial_times_out_and_reports_on_close(full_backlog_port: int) -> None:
    handler = Pairing(f"tcp://127.0.0.1:{full_backlog_port}", timeout=0.2)
    with serving(handler, "tcp://127.0.0.1:0") as engine:
        before = open_fds()
        with connect(engine.addrs[0]):
            outbound = accepted_and_registered(handler)
            err = closed_with(handler, outbound)
            assert isinstance(err, TimeoutError)
            assert engine.count_connections() == 1
        assert handler.events.get(timeout=TIMEOUT)[0] == "close"
        assert not new_fds(before)


@pytest.mark.parametrize("target", ["tcp://127.0.0.1:{port}", "tcp://slow.test:{port}"], ids=["connect", "lookup"])
def test_loop_dial_closed_before_connecting_reports_aborted(
    full_backlog_port: int, resolver: Resolver, target: str
) -> None:
    class ClosesAtOnce(Pairing):
        def on_open(self, conn: netloop.Conn) -> None:
            outbound = conn.event_loop.dial(self.target)
            self.registered(conn, outbound)
            # Nothing buffered: the close doesn't wait for the connect to flush anything.
            outbound.close()

    target = target.format(port=full_backlog_port)
    handler = ClosesAtOnce(target)
    with serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]):
        outbound = accepted_and_registered(handler)
        err = closed_with(handler, outbound)
        assert isinstance(err, ConnectionAbortedError)
        assert target in str(err)


def test_loop_dial_from_another_thread_behaves_like_dial(echo: netloop.Engine) -> None:
    handler = Collector()
    with serving(handler, "tcp://127.0.0.1:0", num_event_loop=2) as engine:
        loop = engine.loops[1]
        conn = loop.dial(tcp_addr(echo), TIMEOUT)
        assert handler.opened.get_nowait() is conn
        assert conn.event_loop is loop and loop.count_connections() == 1
        conn.async_write(b"via loop 1")
        assert handler.wait_for(conn, 10) == b"via loop 1"


def test_loop_register_is_dial_under_its_old_name_and_warns(echo: netloop.Engine) -> None:
    handler = Collector()
    with serving(handler, "tcp://127.0.0.1:0") as engine:
        loop = engine.loops[0]
        with pytest.warns(DeprecationWarning, match="EventLoop.dial"):
            conn = loop.register(tcp_addr(echo), TIMEOUT)
        assert handler.opened.get_nowait() is conn and conn.event_loop is loop
        conn.async_write(b"old name")
        assert handler.wait_for(conn, 8) == b"old name"


def test_enroll_from_handler_opens_on_a_later_turn() -> None:
    ours, theirs = socket.socketpair()

    class EnrollsPair(Pairing):
        def on_open(self, conn: netloop.Conn) -> None:
            if conn.context is not None:
                self.events.put(("open", conn, conn.context))
                return
            enrolled = conn.event_loop.enroll(ours)
            self.registered(conn, enrolled)
            enrolled.context = conn
            conn.context = enrolled
            enrolled.write(b"before open")

    handler = EnrollsPair("unused")
    with theirs, serving(handler, "tcp://127.0.0.1:0") as engine, connect(engine.addrs[0]) as sock:
        enrolled = accepted_and_registered(handler)
        assert handler.events.get(timeout=TIMEOUT)[:2] == ("open", enrolled)
        theirs.settimeout(TIMEOUT)
        assert recv_exact(theirs, 11) == b"before open"
        theirs.sendall(b"piped")
        assert sock.recv(100) == b"piped"
        theirs.close()  # ends the enrolled side: the stop's lingering close need not wait for it


def test_graceful_stop_while_connecting_aborts_the_connect(full_backlog_port: int) -> None:
    # Nothing written to it: a graceful stop would otherwise wait (up to shutdown_timeout) to flush those bytes.
    handler = Pairing(f"tcp://127.0.0.1:{full_backlog_port}", write_early=False)
    engine = netloop.start(handler, "tcp://127.0.0.1:0")
    with connect(engine.addrs[0]) as sock:
        outbound = accepted_and_registered(handler)
        stopper = threading.Thread(target=engine.stop, args=(TIMEOUT,))
        stopper.start()
        assert sock.recv(1) == b""  # our FIN from the graceful stop, then we end too
        sock.close()
        stopper.join(TIMEOUT)
    assert engine.wait(TIMEOUT)
    closes = {id(conn): err for kind, conn, err in (handler.events.get(timeout=TIMEOUT) for _ in range(2))}
    assert isinstance(closes.pop(id(outbound)), ConnectionAbortedError)
    assert list(closes.values()) == [None]


def test_shutdown_write_while_the_dial_connects_sends_the_fin_once_connected(caplog: pytest.LogCaptureFixture) -> None:
    """A handler that shuts its writing down before the outbound connect completed (a proxy whose client half-closed
    at once): the FIN waits for the connect and goes out after it, and nothing goes wrong inside the loop."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    dialled: queue.Queue[netloop.Conn] = queue.Queue()

    class Dialler(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> None:
            upstream = conn.event_loop.dial(f"tcp://127.0.0.1:{port}")
            upstream.write(b"before the fin")
            upstream.shutdown_write()
            dialled.put(upstream)

    with listener, serving(Dialler(), "tcp://127.0.0.1:0") as engine:
        client = connect(engine.addrs[0])
        upstream = dialled.get(timeout=5)
        peer, _ = listener.accept()
        with client, peer:
            peer.settimeout(5)
            received = b""
            while chunk := peer.recv(4096):
                received += chunk
            assert received == b"before the fin"  # then our FIN: recv returned b""
            assert not upstream.closed or upstream.fd == -1
    internal = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert not internal, internal


def test_shutdown_write_alone_while_the_dial_connects(caplog: pytest.LogCaptureFixture) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    class Dialler(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> None:
            conn.event_loop.dial(f"tcp://127.0.0.1:{port}").shutdown_write()

    with listener, serving(Dialler(), "tcp://127.0.0.1:0") as engine:
        client = connect(engine.addrs[0])
        peer, _ = listener.accept()
        with client, peer:
            peer.settimeout(5)
            assert peer.recv(4096) == b""  # the FIN, sent once the connect completed
    internal = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert not internal, internal
