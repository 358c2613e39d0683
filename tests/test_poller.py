"""The poller contract, run against every poller this platform has (kqueue is not available on Linux)."""

from __future__ import annotations

import os
import socket

import pytest

from netloop import available_pollers
from netloop._poller import EDGE, IN, OUT, new_poller

POLLERS = available_pollers()


@pytest.fixture(params=POLLERS)
def poller_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_the_default_poller_is_the_best_available() -> None:
    assert new_poller().name == POLLERS[0]
    with pytest.raises(ValueError, match="unknown poller"):
        new_poller("select")


def test_read_readiness(poller_name: str, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller = new_poller(poller_name)
    poller.register(a.fileno(), IN)
    assert poller.poll(0) == []
    b.send(b"x")
    events = poller.poll(1.0)
    assert [(fd, bool(ev & IN)) for fd, ev in events] == [(a.fileno(), True)]
    # Level-triggered: still ready until read.
    assert [fd for fd, _ in poller.poll(0)] == [a.fileno()]
    a.recv(1)
    assert poller.poll(0) == []
    poller.close()


def test_write_readiness_and_modify(poller_name: str, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    poller = new_poller(poller_name)
    poller.register(a.fileno(), IN)
    assert poller.poll(0) == []
    poller.modify(a.fileno(), IN | OUT)
    events = poller.poll(1.0)
    assert len(events) == 1 and events[0][0] == a.fileno() and events[0][1] & OUT
    poller.modify(a.fileno(), IN)
    assert poller.poll(0) == []
    poller.close()


def test_unregister_stops_events(poller_name: str, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller = new_poller(poller_name)
    poller.register(a.fileno(), IN)
    poller.unregister(a.fileno())
    b.send(b"x")
    assert poller.poll(0.05) == []
    poller.close()


def test_hangup_is_reported_as_readable(poller_name: str, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller = new_poller(poller_name)
    poller.register(a.fileno(), IN)
    b.close()
    events = poller.poll(1.0)
    assert events and events[0][0] == a.fileno()
    assert a.recv(1) == b""
    poller.close()


def test_timeout_returns_empty(poller_name: str) -> None:
    poller = new_poller(poller_name)
    r, w = os.pipe()
    try:
        poller.register(r, IN)
        assert poller.poll(0.01) == []
    finally:
        os.close(r)
        os.close(w)
        poller.close()


def test_edge_triggered_fires_once_per_arrival(poller_name: str, pair: tuple[socket.socket, socket.socket]) -> None:
    poller = new_poller(poller_name)
    a, b = pair
    if not poller.supports_edge:
        with pytest.raises(ValueError, match="level-triggered only"):
            poller.register(a.fileno(), IN | EDGE)
        return
    poller.register(a.fileno(), IN | EDGE)
    b.send(b"x")
    assert [fd for fd, _ in poller.poll(1.0)] == [a.fileno()]
    assert poller.poll(0) == [], "an edge is reported once even though the byte is unread"
    b.send(b"y")
    assert [fd for fd, _ in poller.poll(1.0)] == [a.fileno()]
    poller.close()
