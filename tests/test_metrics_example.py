"""examples.metrics: engine.stats() in Prometheus's text format, scraped with curl after traffic of known counts."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from loopback import TIMEOUT, connect, recv_exact, recv_until_closed, serving, wait_until

import netloop
from examples import metrics

prometheus_parser = pytest.importorskip("prometheus_client.parser")

pytestmark = pytest.mark.timeout(60)


class Scripted(netloop.EventHandler):
    def on_traffic(self, conn: netloop.Conn) -> None:
        data = conn.next()
        if data == b"boom":
            raise RuntimeError("handler failure on purpose")
        conn.write(data)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    done = subprocess.run(
        [curl, "-sS", "--fail", "-D", "-", f"http://{host}:{port}/metrics"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition("\n\n")  # text mode: CRLFs read as newlines
    assert "text/plain; version=0.0.4" in head
    samples = {}
    for family in prometheus_parser.text_string_to_metric_families(body):  # the format is valid, or this raises
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        value
        for (metric, got), value in samples.items()
        if metric == name and all(dict(got).get(k) == v for k, v in labels.items())
    )


@pytest.mark.parametrize("workers", [None, 2])
def test_scraped_counters_match_the_traffic(workers: int | None) -> None:
    options: dict[str, Any] = {"max_connections": 3}
    if workers:
        options.update(workers=workers, worker_balancing="parent")
    with serving(Scripted(), "tcp://127.0.0.1:0", **options) as engine:
        url = engine.addrs[0]
        for _ in range(5):  # 5 connections, 1000 bytes each way, closed by the peer
            with connect(url) as sock:
                sock.sendall(b"m" * 1000)
                assert recv_exact(sock, 1000) == b"m" * 1000
        with connect(url) as sock:  # one handler error
            sock.sendall(b"boom")
            try:
                recv_until_closed(sock)
            except ConnectionResetError:
                pass
        wait_until(lambda: engine.stats()["closed"] == 6, what="six closes")
        held = [connect(url) for _ in range(3)]
        for sock in held:
            sock.sendall(b"h")
            assert recv_exact(sock, 1) == b"h"
        if not workers:  # one past max_connections (with workers the limit is per worker)
            with connect(url) as refused:
                try:
                    recv_until_closed(refused)
                except ConnectionResetError:
                    pass
        metrics_engine = metrics.serve_metrics(engine, "tcp://127.0.0.1:0")
        try:
            samples = scrape(metrics_engine.addrs[0])
        finally:
            metrics_engine.stop(timeout=TIMEOUT)
            for sock in held:
                sock.close()
    assert total(samples, "netloop_connections") == 3
    assert total(samples, "netloop_received_bytes_total") == 5000 + 4 + 3
    assert total(samples, "netloop_sent_bytes_total") == 5000 + 3
    assert total(samples, "netloop_handler_errors_total") == 1
    assert total(samples, "netloop_connections_closed_total", cause="peer") == 5
    assert total(samples, "netloop_connections_closed_total", cause="error") == 1
    refused = 0 if workers else 1
    assert total(samples, "netloop_refused_total") == refused
    assert any(name == "netloop_refused_per_source_total" for name, _ in samples)  # exposed, and none refused
    assert total(samples, "netloop_refused_per_source_total") == 0
    assert total(samples, "netloop_connections_accepted_total") == 5 + 1 + 3 + refused
    label = "worker" if workers else "loop"
    assert all(label in dict(labels) for (name, labels) in samples if name.startswith("netloop_"))


def test_other_paths_and_bad_requests() -> None:
    with serving(Scripted(), "tcp://127.0.0.1:0") as engine:
        metrics_engine = metrics.serve_metrics(engine, "tcp://127.0.0.1:0")
        try:
            for request, status in ((b"GET / HTTP/1.1\r\n\r\n", b"404"), (b"nonsense\r\n\r\n", b"400")):
                with connect(metrics_engine.addrs[0]) as sock:
                    sock.sendall(request)
                    assert recv_until_closed(sock).split(b" ")[1] == status
        finally:
            metrics_engine.stop(timeout=TIMEOUT)
