"""The chat example: broadcasts cross event loops through async_write."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from loopback import TIMEOUT, connect, serving, wait_until

import netloop
from examples.chat import MAX_LINE, Chat


def _line(sock: socket.socket, buf: bytearray) -> str:
    while b"\n" not in buf:
        chunk = sock.recv(4096)
        assert chunk, "closed while waiting for a line"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode()


def test_broadcast_reaches_clients_on_every_loop() -> None:
    with serving(Chat(), "tcp://127.0.0.1:0", num_event_loop=3) as engine:
        clients: list[socket.socket] = []
        bufs = [bytearray() for _ in range(3)]
        loops = set()
        for i in range(3):
            sock = connect(engine.addrs[0])  # one at a time: a member hears only of later arrivals
            clients.append(sock)
            welcome = _line(sock, bufs[i])
            assert welcome.startswith("* welcome, guest")
            loops.add(welcome.rsplit(" ", 1)[1])
            for j in range(i):  # earlier members hear about the newcomer
                assert _line(clients[j], bufs[j]).endswith("joined")
        assert len(loops) == 3, "round-robin puts the three clients on three loops"
        clients[0].sendall(b"/nick alice\n")
        assert _line(clients[0], bufs[0]) == "* you are alice"
        for i in (1, 2):
            assert _line(clients[i], bufs[i]).endswith("is now alice")
        clients[0].sendall(b"hello everyone\r\n")
        for i in (1, 2):
            assert _line(clients[i], bufs[i]) == "alice: hello everyone"
        clients[1].sendall(b"/quit\n")
        assert _line(clients[1], bufs[1]) == "* bye"
        assert clients[1].recv(10) == b""
        clients[1].close()  # our end too: the server's lingering close ends, and the others hear that it left
        for i in (0, 2):
            assert _line(clients[i], bufs[i]).endswith("left")
        for sock in clients:
            sock.close()


def test_an_overlong_line_closes_only_that_client() -> None:
    with serving(Chat(), "tcp://127.0.0.1:0", num_event_loop=2) as engine:
        gbuf, bbuf = bytearray(), bytearray()
        good = connect(engine.addrs[0])
        _line(good, gbuf)  # good is a member before bad arrives, so it hears of bad
        bad = connect(engine.addrs[0])
        _line(bad, bbuf)
        assert _line(good, gbuf).endswith("joined")
        bad.sendall(b"x" * (MAX_LINE + 10))
        while bad.recv(4096):  # a lingering close: FIN, never a reset, even with our bytes unread
            pass
        bad.close()  # our end too, so the server's close completes and the others hear that it left
        assert _line(good, gbuf).endswith("left")
        good.sendall(b"/who\n")
        assert _line(good, gbuf).startswith("* here: guest")
        good.close()
        bad.close()


def test_a_member_that_never_reads_is_cut_off_and_the_rest_chat_on() -> None:
    from examples.chat import LIMITS

    chat = Chat()
    # A small kernel send buffer, so the outbound limit, not the kernel, is what fills.
    with serving(chat, "tcp://127.0.0.1:0", num_event_loop=2, socket_send_buffer=65536, **LIMITS) as engine:
        silent = connect(engine.addrs[0])
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it never reads
        talker, listener = connect(engine.addrs[0]), connect(engine.addrs[0])
        buf_t, buf_l = bytearray(), bytearray()
        assert _line(talker, buf_t).startswith("* welcome")
        assert _line(listener, buf_l).startswith("* welcome")
        heard = threading.Event()
        lines = [0]  # lines the listener has received
        progress = threading.Condition()

        def keep_up() -> None:  # the listener reads everything, as a live member does
            got = bytearray()
            while b"still here" not in got:
                chunk = listener.recv(1 << 16)
                if not chunk:
                    return
                with progress:
                    lines[0] += chunk.count(b"\n")
                    progress.notify_all()
                got += chunk
                del got[: max(0, len(got) - 64)]
            heard.set()

        reader = threading.Thread(target=keep_up)
        reader.start()
        line = b"x" * 1000 + b"\n"
        for i in range(1, 2001):  # ~2 MB of broadcasts: past the silent member's 1 MiB limit
            talker.sendall(line)
            if i % 100 == 0:  # the talker waits for the listener, which never falls 1 MiB behind
                with progress:
                    assert progress.wait_for(lambda i=i: lines[0] >= i - 100, 10), "the listener fell behind"
        wait_until(lambda: len(chat.members) == 2, what="the silent member to be cut off")
        talker.sendall(b"still here\n")
        assert heard.wait(10), "the listener was not served on"
        reader.join(10)
        for sock in (silent, talker, listener):
            sock.close()


def test_a_line_that_trickles_in_is_closed_at_read_timeout_and_the_rest_chat_on() -> None:
    read_timeout = 0.5
    stop = threading.Event()
    with serving(Chat(), "tcp://127.0.0.1:0", read_timeout=read_timeout) as engine:
        gbuf = bytearray()
        good = connect(engine.addrs[0])
        _line(good, gbuf)
        slow = connect(engine.addrs[0])
        began = time.monotonic()

        def trickle() -> None:  # a byte every 0.2 s: never quiet for read_timeout, never a whole line
            try:
                while not stop.wait(0.2):
                    slow.sendall(b"x")
            except OSError:
                pass

        trickler = threading.Thread(target=trickle)
        trickler.start()
        try:
            try:
                while slow.recv(4096):
                    pass
            except OSError:
                pass
            assert time.monotonic() - began < read_timeout + 0.5
            good.sendall(b"/who\n")
            reply = _line(good, gbuf)
            while not reply.startswith("* here:"):  # the slow member's joined/left notices come first
                reply = _line(good, gbuf)
        finally:
            stop.set()
            trickler.join(5)
            slow.close()
            good.close()


class SlowToTell(Chat):
    """Holds the first "joined" broadcast until a second member is in: the moment a newcomer can race it."""

    def __init__(self) -> None:
        super().__init__()
        self.second_in = threading.Event()
        self.held = False

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        action = super().on_open(conn)
        if len(self.members) >= 2:
            self.second_in.set()
        return action

    def broadcast(self, line: str, *args: Any, **kwargs: Any) -> None:
        if line.endswith("joined") and not self.held:
            self.held = True
            assert self.second_in.wait(TIMEOUT), "the second member never came"
        super().broadcast(line, *args, **kwargs)


def test_a_newcomer_hears_only_of_members_that_came_after_it() -> None:
    """The first member's "joined" is still being told when the second arrives: the second is not told of it."""
    with serving(SlowToTell(), "tcp://127.0.0.1:0", num_event_loop=2) as engine:
        first, fbuf = connect(engine.addrs[0]), bytearray()
        assert _line(first, fbuf).startswith("* welcome, ")
        second, sbuf = connect(engine.addrs[0]), bytearray()
        assert _line(second, sbuf).startswith("* welcome, ")
        assert _line(first, fbuf).endswith("joined")  # of the second
        first.sendall(b"/nick alice\n")
        assert _line(second, sbuf).endswith("is now alice"), "the second was told of a member older than it"
        first.close()
        second.close()
