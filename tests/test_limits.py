"""max_connections: past it a new connection is accepted and closed at once, counted; existing ones are untouched."""

from __future__ import annotations

import pytest
from loopback import Recorder, connect, recv_exact, recv_until_closed, serving, wait_until

import netloop

TIMEOUT = 10.0


@pytest.mark.parametrize("loops", [1, 3])
def test_max_connections_refuses_past_the_limit_and_serves_the_rest(loops: int) -> None:
    handler = Recorder()
    with serving(handler, "tcp://127.0.0.1:0", max_connections=3, num_event_loop=loops) as engine:
        kept = [connect(engine.addrs[0]) for _ in range(3)]
        for sock in kept:
            sock.sendall(b"hi")
            assert recv_exact(sock, 2) == b"hi"
        with connect(engine.addrs[0]) as refused:
            try:
                assert recv_until_closed(refused) == b""  # closed at once: the handler never saw it
            except ConnectionResetError:
                pass
        assert engine.stats()["refused_max_connections"] == 1
        assert engine.count_connections() == 3
        for sock in kept:  # existing connections are unaffected
            sock.sendall(b"ok")
            assert recv_exact(sock, 2) == b"ok"
        kept.pop().close()
        wait_until(lambda: engine.count_connections() == 2, what="a connection to close")
        with connect(engine.addrs[0]) as again:  # room again
            again.sendall(b"back")
            assert recv_exact(again, 4) == b"back"
        for sock in kept:
            sock.close()
    assert handler.names().count("open") == 4


def test_max_connections_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        netloop.start(netloop.EventHandler(), "tcp://127.0.0.1:0", max_connections=-1)
