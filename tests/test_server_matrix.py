"""Echo correctness over the matrix of gnet's server tests.

{level-triggered, edge-triggered, reuse_port} x {tcp, tcp with async writes from another thread, udp, unix}
x {1 loop, 3 loops} x each load balancer where one is used: several concurrent clients send random payloads
(1 byte to 1 MiB for streams) and every byte must come back in order.
"""

from __future__ import annotations

import os
import queue
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from loopback import connect, datagram_socket, echo_through, serving, wait_until

import netloop
from netloop import LoadBalancing

CLIENTS = 4


class AsyncEcho(netloop.EventHandler):
    """Echoes through another thread with async_write, the order kept by one FIFO worker per server."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[netloop.Conn, bytes] | None] = queue.SimpleQueue()
        self.worker = threading.Thread(target=self._work, daemon=True)
        self.worker.start()

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            conn, data = job
            conn.async_write(data)

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        self.jobs.put((conn, conn.next()))
        return None

    def on_shutdown(self, engine: netloop.Engine) -> None:
        self.jobs.put(None)


class Echo(netloop.EventHandler):
    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.write(conn.next())
        return None


def _cases() -> list[Any]:
    cases = []
    for mode in ("lt", "et", "reuse_port"):
        for proto in ("tcp", "tcp-async", "udp", "unix"):
            for loops in (1, 3):
                balancers: list[LoadBalancing | None] = [None]
                if loops > 1 and proto != "udp" and (mode != "reuse_port" or proto == "unix"):
                    balancers = list(LoadBalancing)
                for lb in balancers:
                    name = f"{mode}-{proto}-{loops}loops" + (f"-{lb.name.lower()}" if lb else "")
                    cases.append(pytest.param(mode, proto, loops, lb, id=name))
    return cases


def _payload_sizes(rng: random.Random) -> list[int]:
    return [1, rng.randint(2, 4096), rng.randint(4097, 200_000), rng.choice([1 << 20, rng.randint(300_000, 1 << 20)])]


@pytest.mark.parametrize(("mode", "proto", "loops", "lb"), _cases())
def test_echo_matrix(mode: str, proto: str, loops: int, lb: LoadBalancing | None, tmp_path: Any) -> None:
    options: dict[str, Any] = {
        "num_event_loop": loops,
        "edge_triggered": mode == "et",
        "reuse_port": mode == "reuse_port",
    }
    if lb is not None:
        options["load_balancing"] = lb
    handler = AsyncEcho() if proto == "tcp-async" else Echo()
    if proto == "udp":
        addr = "udp://127.0.0.1:0"
    elif proto == "unix":
        addr = f"unix://{tmp_path}/echo.sock"
    else:
        addr = "tcp://127.0.0.1:0"
    rng = random.Random(f"{mode}{proto}{loops}{lb}")
    with serving(handler, addr, **options) as engine:
        url = engine.addrs[0]
        if proto == "udp":
            _udp_clients(url, rng)
        else:
            _stream_clients(url, rng, engine)
    if proto == "tcp-async":
        handler.worker.join(5)


def _stream_clients(url: str, rng: random.Random, engine: netloop.Engine) -> None:
    seeds = [rng.random() for _ in range(CLIENTS)]

    def client(seed: float) -> None:
        local = random.Random(seed)
        with connect(url) as sock:
            for size in _payload_sizes(local):
                payload = os.urandom(size)
                assert echo_through(sock, payload) == payload

    with ThreadPoolExecutor(CLIENTS) as pool:
        for result in [pool.submit(client, s) for s in seeds]:
            result.result(timeout=60)


def _udp_clients(url: str, rng: random.Random) -> None:
    seeds = [rng.random() for _ in range(CLIENTS)]

    def client(seed: float) -> None:
        local = random.Random(seed)
        sock, target = datagram_socket(url)
        with sock:
            for size in (1, local.randint(2, 1400), local.randint(1401, 60_000)):
                payload = os.urandom(size)
                sock.sendto(payload, target)
                data, sender = sock.recvfrom(65536)
                assert data == payload
                assert sender == target

    with ThreadPoolExecutor(CLIENTS) as pool:
        for result in [pool.submit(client, s) for s in seeds]:
            result.result(timeout=60)


def test_connections_spread_over_loops_round_robin() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    class Where(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
            with lock:
                seen.append(conn.event_loop.index)
            conn.write(b"!")
            return None

    with serving(Where(), "tcp://127.0.0.1:0", num_event_loop=3) as engine:
        socks = [connect(engine.addrs[0]) for _ in range(6)]
        for s in socks:
            assert s.recv(1) == b"!"
        assert sorted(seen) == [0, 0, 1, 1, 2, 2]
        assert engine.count_connections() == 6
        for s in socks:
            s.close()


def test_source_addr_hash_keeps_a_host_on_one_loop() -> None:
    seen: list[int] = []

    class Where(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
            seen.append(conn.event_loop.index)
            conn.write(b"!")
            return None

    with serving(Where(), "tcp://127.0.0.1:0", num_event_loop=3, load_balancing="source-addr-hash") as engine:
        for _ in range(5):
            with connect(engine.addrs[0]) as s:
                assert s.recv(1) == b"!"
        assert len(set(seen)) == 1


def test_least_connections_prefers_the_emptier_loop() -> None:
    class Where(netloop.EventHandler):
        def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
            conn.write(str(conn.event_loop.index).encode())
            return None

    with serving(Where(), "tcp://127.0.0.1:0", num_event_loop=2, load_balancing=LoadBalancing.LEAST_CONNECTIONS) as e:
        first = [connect(e.addrs[0]) for _ in range(4)]
        loops = [int(s.recv(1)) for s in first]
        assert sorted(loops) == [0, 0, 1, 1]
        # Close both connections of loop 0; the next two must land there.
        for s, loop in zip(first, loops, strict=True):
            if loop == 0:
                s.close()
        wait_until(lambda: e.loops[0].count_connections() == 0, what="loop 0 to empty")
        more = [connect(e.addrs[0]) for _ in range(2)]
        assert [int(s.recv(1)) for s in more] == [0, 0]
        for s in first + more:
            s.close()


def test_ipv6_and_mixed_protocols_in_one_engine(tmp_path: Any) -> None:
    addrs = ["tcp6://[::1]:0", "udp6://[::1]:0", "tcp://127.0.0.1:0", f"unix://{tmp_path}/m.sock"]
    with serving(Echo(), *addrs) as engine:
        for url in engine.addrs:
            if url.startswith("udp"):
                sock, target = datagram_socket(url)
                with sock:
                    sock.sendto(b"ping6", target)
                    assert sock.recv(100) == b"ping6"
            else:
                with connect(url) as sock:
                    assert echo_through(sock, b"hello " + url.encode()) == b"hello " + url.encode()
    assert not os.path.exists(f"{tmp_path}/m.sock"), "the unix socket file is removed on stop"
