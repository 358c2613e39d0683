"""Worker processes (``workers=N``): real forked workers serving real sockets, supervised by the parent."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import TIMEOUT, connect, datagram_socket, serving, split

import netloop
from examples.echo import Echo
from netloop._lookup import _LOOKUPS
from netloop._supervisor import restart_delay

ROOT = Path(__file__).resolve().parent.parent
PATTERN = bytes(range(256))
BOTH_MODES = pytest.mark.parametrize("mode", [netloop.WorkerBalancing.REUSE_PORT, netloop.WorkerBalancing.PARENT])


class Tagged(netloop.EventHandler):
    """Answers each message with ``b"<worker id> <pid> <message>"``; ``shutdown`` stops the engine."""

    worker_id = -1

    def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
        assert engine.worker_id is not None
        self.worker_id = engine.worker_id
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        data = conn.next()
        if data == b"shutdown\n":
            return netloop.Action.SHUTDOWN
        conn.write(b"%d %d " % (self.worker_id, os.getpid()) + data)
        return None


def open_descriptors() -> dict[int, str]:
    """This process's descriptors and what each is (``socket:[inode]``, ``anon_inode:[eventpoll]``, a path...)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to list descriptors")
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            pass  # the directory listdir itself had open
    return found


class ReportsDescriptors(Tagged):
    """Answers each message with a JSON line: its worker's id, its pid and its open descriptors but the connection's.

    Not that one: the parent may not have closed its copy of a connection it handed off just yet.
    """

    def on_traffic(self, conn: netloop.Conn) -> None:
        conn.next()
        descriptors = {fd: target for fd, target in open_descriptors().items() if fd != conn.fd}
        conn.write(json.dumps([self.worker_id, os.getpid(), descriptors]).encode() + b"\n")


def ask_descriptors(addr: str) -> tuple[int, int, dict[int, str]]:
    """(id, pid, open descriptors) of the worker that answers a new connection."""
    with dial(addr) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"descriptors?\n")
        worker_id, pid, descriptors = json.loads(reader.readline())
    return worker_id, pid, {int(fd): target for fd, target in descriptors.items()}


def check_own_descriptors(descriptors: dict[int, str], before: dict[int, str]) -> None:
    """A worker's descriptors beyond those this process had before the engine started are its own."""
    own = [target for fd, target in descriptors.items() if before.get(fd) != target]
    # One loop: its poller and its wake-up; none of the parent's.
    assert own.count("anon_inode:[eventpoll]") == 1, own
    assert own.count("anon_inode:[eventfd]") == 1, own
    # Sockets of its own (its channels to the parent, its listener); none of the parent's.
    theirs = {target for fd, target in open_descriptors().items() if before.get(fd) != target}
    assert not {target for target in own if target.startswith("socket:")} & theirs, own


def has_children() -> bool:
    """True while this process has a child, running or exited and not yet reaped."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """Every test must leave no worker process behind, running or unreaped."""
    before = has_children()  # a child from elsewhere in the session can't be told apart from ours: no check
    yield
    if not before:
        assert not has_children(), "a child process was left behind"


def dial(addr: str, source: str | None = None) -> socket.socket:
    """A connection to ``addr``, from the local address ``source`` when given."""
    if source is None:
        return connect(addr)
    _, sockaddr = split(addr)
    return socket.create_connection(sockaddr, timeout=TIMEOUT, source_address=(source, 0))


def read_reply(sock: socket.socket) -> tuple[int, int]:
    """The (worker id, pid) of one newline-terminated reply."""
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {reply!r}"
        reply += chunk
    worker_id, pid, _ = reply.split(b" ", 2)
    return int(worker_id), int(pid)


def ask(addr: str, source: str | None = None) -> tuple[int, int]:
    """Connect, send one message and return which worker (id, pid) answered."""
    with dial(addr, source) as sock:
        sock.sendall(b"ping\n")
        return read_reply(sock)


def open_conn(addr: str) -> tuple[socket.socket, int]:
    """A connection kept open, and the id of the worker serving it."""
    sock = dial(addr)
    sock.sendall(b"ping\n")
    return sock, read_reply(sock)[0]


def workers_seen(addr: str, count: int, attempts: int = 200) -> dict[int, int]:
    """Worker id -> pid, connecting until ``count`` different workers have answered."""
    seen: dict[int, int] = {}
    for _ in range(attempts):
        worker_id, pid = ask(addr)
        seen[worker_id] = pid
        if len(seen) == count:
            break
    return seen


def wait_count(engine: netloop.Engine, expected: int) -> int:
    """Ask the engine for its connection count until it is ``expected`` (each ask waits on the workers)."""
    deadline = time.monotonic() + TIMEOUT
    count = engine.count_connections()
    while count != expected and time.monotonic() < deadline:
        count = engine.count_connections()
    return count


def wait_exit(pid: int) -> None:
    """Block until process ``pid`` has exited (its pidfd becomes readable), reaped or not."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        readable, _, _ = select.select([fd], [], [], TIMEOUT)
    finally:
        os.close(fd)
    assert readable, f"process {pid} did not exit"


# -- every worker serves ------------------------------------------------------------------------------------


@BOTH_MODES
def test_every_worker_receives_connections(mode: netloop.WorkerBalancing) -> None:
    with serving(Tagged(), "tcp://127.0.0.1:0", workers=2, worker_balancing=mode) as engine:
        assert engine.worker_id is None
        assert engine.loops == []
        (addr,) = engine.addrs
        assert not addr.endswith(":0")
        seen = workers_seen(addr, 2)
        assert sorted(seen) == [0, 1]
        assert len(set(seen.values())) == 2
        assert os.getpid() not in seen.values()
        held = [open_conn(addr)[0] for _ in range(3)]
        try:
            assert wait_count(engine, 3) == 3
        finally:
            for sock in held:
                sock.close()


def test_parent_round_robin_alternates_workers() -> None:
    with serving(Tagged(), "tcp://127.0.0.1:0", workers=2, worker_balancing="parent") as engine:
        ids = [ask(engine.addrs[0])[0] for _ in range(4)]
    assert ids == [0, 1, 0, 1]


def test_least_connections_prefers_the_emptier_worker() -> None:
    options = {"workers": 2, "worker_balancing": "parent", "load_balancing": "least-connections"}
    with serving(Tagged(), "tcp://127.0.0.1:0", **options) as engine:
        addr = engine.addrs[0]
        conns = [open_conn(addr) for _ in range(4)]
        assert [worker_id for _, worker_id in conns] == [0, 1, 0, 1]
        for sock, worker_id in conns:
            if worker_id == 0:
                sock.close()
        assert wait_count(engine, 2) == 2  # the workers' answers also tell the parent their loads
        more = [open_conn(addr) for _ in range(2)]
        try:
            # Worker 0 holds none and worker 1 two: both new connections go to worker 0 (round robin: 0, 1).
            assert [worker_id for _, worker_id in more] == [0, 0]
        finally:
            for sock, _ in conns + more:
                sock.close()


def test_source_address_hash_keeps_a_host_on_one_worker() -> None:
    options = {"workers": 2, "worker_balancing": "parent", "load_balancing": "source-addr-hash"}
    with serving(Tagged(), "tcp://127.0.0.1:0", **options) as engine:
        addr = engine.addrs[0]
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            assert len({ask(addr, source)[0] for _ in range(4)}) == 1


@BOTH_MODES
def test_unix_socket_served_by_workers(mode: netloop.WorkerBalancing, tmp_path: Path) -> None:
    path = tmp_path / "w.sock"
    with serving(Tagged(), f"unix://{path}", workers=2, worker_balancing=mode) as engine:
        assert engine.addrs == [f"unix://{path}"]
        assert sorted(workers_seen(engine.addrs[0], 2)) == [0, 1]
    assert not path.exists()


@BOTH_MODES
def test_udp_served_by_workers(mode: netloop.WorkerBalancing) -> None:
    with serving(Tagged(), "udp://127.0.0.1:0", workers=2, worker_balancing=mode) as engine:
        sock, sockaddr = datagram_socket(engine.addrs[0])
        with sock:
            for _ in range(3):
                sock.sendto(b"ping\n", sockaddr)
                reply, _ = sock.recvfrom(4096)
                worker_id, pid, rest = reply.split(b" ", 2)
                assert int(worker_id) in (0, 1)
                assert int(pid) != os.getpid()
                assert rest == b"ping\n"


# -- supervision --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
@BOTH_MODES
def test_dead_worker_is_replaced(mode: netloop.WorkerBalancing, signum: int) -> None:
    with serving(Tagged(), "tcp://127.0.0.1:0", workers=2, worker_balancing=mode) as engine:
        addr = engine.addrs[0]
        old = workers_seen(addr, 2)
        os.kill(old[0], signum)
        wait_exit(old[0])
        deadline = time.monotonic() + TIMEOUT
        replacement = None
        while replacement is None and time.monotonic() < deadline:
            worker_id, pid = ask(addr)  # every connection is answered meanwhile
            assert pid != old[0]
            if worker_id == 0:
                replacement = pid
        assert replacement is not None, "worker 0 was not restarted"
        assert replacement != old[0]


def test_worker_failing_to_boot_fails_start() -> None:
    class FailsInWorkerOne(Tagged):
        def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
            if engine.worker_id == 1:
                raise RuntimeError("no database here")
            return super().on_boot(engine)

    before = open_descriptors()
    with pytest.raises(netloop.NetloopError, match=r"worker 1 .*no database here") as caught:
        netloop.start(FailsInWorkerOne(), "tcp://127.0.0.1:0", workers=2)
    assert open_descriptors() == before, caught


def test_worker_that_cannot_be_started_leaks_no_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socketpair
    made = 0

    def socketpair(*args: int) -> tuple[socket.socket, socket.socket]:
        nonlocal made
        made += 1
        if made > 3:  # worker 0's two channels and worker 1's control channel, then no more
            raise OSError(errno.EMFILE, "Too many open files")
        return real(*args)

    monkeypatch.setattr(socket, "socketpair", socketpair)
    before = open_descriptors()
    # Held while counting: a leaked socket would stay open as long as its exception's frames live.
    with pytest.raises(OSError, match="Too many open files") as caught:
        netloop.start(Tagged(), "tcp://127.0.0.1:0", workers=2, worker_balancing="parent")
    assert open_descriptors() == before, caught


@BOTH_MODES
def test_a_worker_holds_none_of_the_parents_descriptors(mode: netloop.WorkerBalancing) -> None:
    before = open_descriptors()
    with serving(ReportsDescriptors(), "tcp://127.0.0.1:0", workers=2, worker_balancing=mode) as engine:
        addr = engine.addrs[0]
        pids: dict[int, int] = {}
        for _ in range(200):
            worker_id, pid, descriptors = ask_descriptors(addr)
            if worker_id not in pids:
                check_own_descriptors(descriptors, before)
                pids[worker_id] = pid
            if len(pids) == 2:
                break
        assert sorted(pids) == [0, 1]
        # A worker started again is forked by the parent's running loop, which has more open: none is inherited.
        os.kill(pids[0], signal.SIGKILL)
        wait_exit(pids[0])
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            worker_id, pid, descriptors = ask_descriptors(addr)
            if worker_id == 0:
                assert pid != pids[0]
                check_own_descriptors(descriptors, before)
                break
        else:
            raise AssertionError("worker 0 was not started again")


def test_shutdown_action_in_a_worker_stops_the_engine() -> None:
    engine = netloop.start(Tagged(), "tcp://127.0.0.1:0", workers=2)
    try:
        with dial(engine.addrs[0]) as sock:
            sock.sendall(b"shutdown\n")
            while sock.recv(65536):  # the worker's lingering close ends once we end too
                pass
        assert engine.wait(TIMEOUT)
    finally:
        engine.stop(timeout=15)
    assert engine.count_connections() == 0


class DialsThroughAName(netloop.EventHandler):
    """Pairs each accepted connection with one it registers to ``target``, and greets through it."""

    def __init__(self, target: str) -> None:
        self.target = target

    def on_open(self, conn: netloop.Conn) -> None:
        if conn.context is None:
            outbound = conn.event_loop.dial(self.target, TIMEOUT)
            outbound.context = conn
            conn.context = outbound
            outbound.write(b"through a name\n")

    def on_traffic(self, conn: netloop.Conn) -> None:
        conn.context.write(conn.next())


def test_workers_look_names_up_after_the_parent_did(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any) -> Any:
        return real("127.0.0.1" if host == "echo.test" else host, *args)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # the workers have it too: they are forks
    # The parent has a lookup thread when it forks; the workers do not, and start their own.
    looked_up = threading.Event()
    _LOOKUPS.submit(looked_up.set)
    assert looked_up.wait(TIMEOUT)
    with serving(Echo(), "tcp://127.0.0.1:0") as echo:
        port = split(echo.addrs[0])[1][1]
        handler = DialsThroughAName(f"tcp://echo.test:{port}")
        with serving(handler, "tcp://127.0.0.1:0", workers=2, worker_balancing="parent") as engine:
            for _ in range(2):  # round robin: one connection to each worker
                with dial(engine.addrs[0]) as sock, sock.makefile("rb") as reader:
                    assert reader.readline() == b"through a name\n"


def test_restart_delay_backs_off_to_a_cap() -> None:
    delays = [restart_delay(n) for n in range(10)]
    assert delays[:4] == [0.0, 0.1, 0.2, 0.4]
    assert delays == sorted(delays)
    assert delays[-1] == 10.0


# -- a separate parent process: signals to the parent ---------------------------------------------------------

SERVER = textwrap.dedent(
    """
    import os, sys
    import netloop

    PATTERN = bytes(range(256))

    def say(line):
        os.write(1, line.encode() + b"\\n")  # one write per line: the workers share the pipe

    class Server(netloop.EventHandler):
        def on_boot(self, engine):
            self.worker_id = engine.worker_id
            say(f"boot {engine.worker_id} {os.getpid()} {engine.addrs[0]}")

        def on_traffic(self, conn):
            size = int(conn.next().split()[1])
            conn.write(PATTERN * (size // len(PATTERN)))

        def on_shutdown(self, engine):
            say(f"shutdown {self.worker_id}")

    netloop.run(Server(), "tcp://127.0.0.1:0", workers=2, worker_balancing=sys.argv[1])
    """
)


@contextlib.contextmanager
def server_process(mode: str) -> Iterator[tuple[subprocess.Popen[bytes], dict[int, int], str]]:
    """The SERVER script as a parent process with two workers: (process, worker id -> pid, address)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, mode], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        pids: dict[int, int] = {}
        addr = ""
        while len(pids) < 2:
            line = read_line(proc.stdout.fileno())
            _, worker_id, pid, addr = line.split()
            pids[int(worker_id)] = int(pid)
        yield proc, pids, addr
    finally:
        if proc.poll() is None:
            proc.kill()  # its workers follow: that is what test_sigkill_of_parent_leaves_no_orphan checks
        proc.wait(TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


def read_line(fd: int) -> str:
    line = b""
    while not line.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], TIMEOUT)
        assert readable, f"no output from the server process (so far {line!r})"
        byte = os.read(fd, 1)
        assert byte, f"the server process closed its output (so far {line!r})"
        line += byte
    return line.decode()


def read_to_end(fd: int) -> str:
    """Everything up to end of file: it comes once the parent and every worker (they share it) have exited."""
    out = b""
    deadline = time.monotonic() + TIMEOUT
    while True:
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert readable, "a process of the server is still running"
        chunk = os.read(fd, 4096)
        if not chunk:
            return out.decode()
        out += chunk


@pytest.mark.parametrize("mode", ["reuse-port", "parent"])
def test_sigterm_to_parent_drains_every_worker(mode: str) -> None:
    size = 8 * 1024 * 1024
    with server_process(mode) as (proc, _pids, addr), dial(addr) as client:
        client.sendall(b"give %d\n" % size)
        received = bytearray(client.recv(65536))
        assert received, "the reply did not start"
        proc.send_signal(signal.SIGTERM)  # most of the reply is still in the worker's outbound buffer
        while chunk := client.recv(1 << 20):
            received += chunk
        client.close()  # the worker's lingering close ends once we end too
        assert len(received) == size
        assert received == PATTERN * (size // len(PATTERN))
        assert proc.stdout is not None
        rest = read_to_end(proc.stdout.fileno())
        assert proc.wait(TIMEOUT) == 0
    assert sorted(rest.split("\n")) == ["", "shutdown 0", "shutdown 1"]


def test_sigkill_of_parent_leaves_no_orphan() -> None:
    with server_process("reuse-port") as (proc, pids, _addr):
        proc.kill()
        proc.wait(TIMEOUT)
        assert proc.stdout is not None
        rest = read_to_end(proc.stdout.fileno())  # the workers held it open: they have exited too
        for pid in pids.values():
            wait_exit(pid)
    assert sorted(rest.split("\n")) == ["", "shutdown 0", "shutdown 1"]


# -- free-threaded builds -----------------------------------------------------------------------------------


def test_start_warns_when_a_free_threaded_build_runs_with_the_gil(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: 1 if name == "Py_GIL_DISABLED" else real(name))
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    with caplog.at_level(logging.WARNING, logger="netloop"), serving(netloop.EventHandler(), "tcp://127.0.0.1:0"):
        pass
    assert any("GIL enabled" in record.getMessage() for record in caplog.records)
