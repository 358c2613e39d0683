"""examples.ws_chat: RFC 6455 over netloop with wsproto; protocol cases with a wsproto client on real sockets."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loopback import TIMEOUT, connect, recv_until_closed, wait_until

wsproto = pytest.importorskip("wsproto")

from wsproto import ConnectionType, WSConnection  # noqa: E402
from wsproto.events import (  # noqa: E402
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)

import netloop  # noqa: E402
from examples import ws_chat  # noqa: E402

pytestmark = pytest.mark.timeout(60)


class Client:
    """A WebSocket client: wsproto on a blocking socket."""

    def __init__(self, url: str) -> None:
        self.sock = connect(url)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Any] = []
        self.parts: list[str] = []
        self.sock.sendall(self.ws.send(Request(host="localhost", target="/ws")))
        assert isinstance(self.next_event(), AcceptConnection)
        self.welcome = self.message()
        assert self.welcome["type"] == "welcome"

    def next_event(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                raise ConnectionError("closed")
        return self.pending.pop(0)

    def message(self) -> dict[str, Any]:
        """The next complete chat message (JSON), skipping nothing else: anything else is an error."""
        while True:
            event = self.next_event()
            assert isinstance(event, TextMessage), event
            self.parts.append(event.data)
            if event.message_finished:
                text, self.parts = "".join(self.parts), []
                return json.loads(text)

    def message_of(self, kind: str) -> dict[str, Any]:
        while True:
            message = self.message()
            if message["type"] == kind:
                return message

    def send(self, event: Any) -> None:
        self.sock.sendall(self.ws.send(event))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def chat() -> Iterator[netloop.Engine]:
    engine = ws_chat.start(loops=2)
    try:
        yield engine
    finally:
        engine.stop(timeout=TIMEOUT)
        engine.wait(TIMEOUT)


def raw_request(url: str, head: bytes) -> bytes:
    with connect(url) as sock:
        sock.sendall(head)
        return recv_until_closed(sock)


def test_the_page_is_served(chat: netloop.Engine) -> None:
    answer = raw_request(chat.addrs[0], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"text/html" in answer
    assert b"new WebSocket(" in answer


def test_messages_reach_members_on_other_loops(chat: netloop.Engine) -> None:
    alice, bob = Client(chat.addrs[0]), Client(chat.addrs[0])
    try:
        assert alice.welcome["loop"] != bob.welcome["loop"]  # round robin over two loops
        alice.send(Message(data="hello from alice"))
        assert bob.message_of("message") == {
            "type": "message",
            "from": alice.welcome["name"],
            "text": "hello from alice",
        }
        assert alice.message_of("message")["text"] == "hello from alice"  # everyone, the sender too
        bob.send(Message(data="/nick bob"))
        assert alice.message_of("renamed") == {"type": "renamed", "from": bob.welcome["name"], "to": "bob"}
    finally:
        alice.close()
        bob.close()


def test_ping_pong_and_the_close_handshake(chat: netloop.Engine) -> None:
    client = Client(chat.addrs[0])
    client.send(Ping(payload=b"are you there"))
    event = client.next_event()
    while isinstance(event, TextMessage):  # "joined" notes may come first
        event = client.next_event()
    assert isinstance(event, Pong) and event.payload == b"are you there"
    client.send(CloseConnection(code=1000, reason="bye"))
    event = client.next_event()
    while isinstance(event, TextMessage):
        event = client.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1000
    assert recv_until_closed(client.sock) == b""  # and then the TCP connection ends
    client.close()


def test_fragmented_messages_are_reassembled(chat: netloop.Engine) -> None:
    alice, bob = Client(chat.addrs[0]), Client(chat.addrs[0])
    try:
        for i, part in enumerate(["frag", "ment", "ed"]):
            alice.send(Message(data=part, message_finished=i == 2))
        assert bob.message_of("message")["text"] == "fragmented"
    finally:
        alice.close()
        bob.close()


def _close_code(client: Client) -> int:
    while True:
        event = client.next_event()
        if isinstance(event, CloseConnection):
            return int(event.code)


def test_an_oversized_message_closes_with_1009(chat: netloop.Engine) -> None:
    client = Client(chat.addrs[0])
    other = Client(chat.addrs[0])
    try:
        for _ in range(ws_chat.MAX_MESSAGE // 8192 + 2):  # fragments of 8 KiB: the sum passes the bound
            client.send(Message(data="x" * 8192, message_finished=False))
        assert _close_code(client) == 1009
        other.send(Message(data="still here"))  # the others go on
        assert other.message_of("message")["text"] == "still here"
    finally:
        client.close()
        other.close()


def test_a_message_in_too_many_fragments_closes_with_1008(chat: netloop.Engine) -> None:
    """Empty continuation frames cost the sender 6 bytes each: their count is bounded, not only their bytes."""
    client = Client(chat.addrs[0])
    other = Client(chat.addrs[0])
    try:
        mask = b"\x00" * 4  # masked, empty: a text frame that does not finish, then empty continuations
        client.sock.sendall(b"\x01\x80" + mask + (b"\x00\x80" + mask) * (ws_chat.MAX_FRAGMENTS + 10))
        assert _close_code(client) == 1008
        other.send(Message(data="still here"))
        assert other.message_of("message")["text"] == "still here"
    finally:
        client.close()
        other.close()


def test_a_message_of_max_fragments_is_delivered(chat: netloop.Engine) -> None:
    alice, bob = Client(chat.addrs[0]), Client(chat.addrs[0])
    try:
        for i in range(ws_chat.MAX_FRAGMENTS):
            alice.send(Message(data="x" if i % 2 else "", message_finished=i == ws_chat.MAX_FRAGMENTS - 1))
        assert bob.message_of("message")["text"] == "x" * (ws_chat.MAX_FRAGMENTS // 2)
    finally:
        alice.close()
        bob.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x02hi", 1002),  # unmasked client frame
        (b"\x83\x80" + b"\x00" * 4, 1002),  # reserved opcode 3
        (b"\x81\x82" + b"\x00" * 4 + b"\xff\xfe", 1007),  # invalid UTF-8 in a text frame
    ],
)
def test_malformed_frames_close_with_the_right_code(chat: netloop.Engine, frame: bytes, code: int) -> None:
    client = Client(chat.addrs[0])
    try:
        client.sock.sendall(frame)
        assert _close_code(client) == code
    finally:
        client.close()
    healthy = Client(chat.addrs[0])  # the loop keeps serving
    healthy.send(Message(data="ok"))
    assert healthy.message_of("message")["text"] == "ok"
    healthy.close()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),  # no Upgrade
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"400",
        ),  # a key that is not 16 bytes
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            b"400",
        ),  # an old version
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * ws_chat.MAX_HEAD + b"\r\n\r\n", b"431"),
    ],
)
def test_bad_requests(chat: netloop.Engine, head: bytes, status: bytes) -> None:
    assert raw_request(chat.addrs[0], head).split(b" ")[1] == status


def test_shutdown_says_going_away() -> None:
    engine = ws_chat.start(loops=2)
    client = Client(engine.addrs[0])
    stopping = threading.Thread(target=engine.stop, kwargs={"timeout": TIMEOUT})
    stopping.start()
    assert _close_code(client) == 1001
    client.close()  # the client ends its side: the server's lingering close completes at once
    stopping.join(TIMEOUT)
    assert engine.wait(TIMEOUT)


def test_a_member_that_stops_reading_is_cut_off() -> None:
    engine = ws_chat.start(loops=2, write_buffer_cap=16 * 1024, write_buffer_limit=64 * 1024)
    try:
        url = engine.addrs[0]
        silent = Client(url)
        silent.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        talker = Client(url)
        line = "y" * 4000
        cut = False
        for _ in range(2000):  # far more than the silent member's buffers and limit
            talker.send(Message(data=line))
            message = talker.message_of("message")  # the talker reads its own echo: it keeps up
            assert message["text"] == line
            if engine.count_connections() == 1:
                cut = True
                break
        assert cut, "the silent member was never cut off"
        wait_until(lambda: engine.stats()["closed_limit"] == 1, what="the cut to be counted as a limit")
        silent.close()
        talker.close()
    finally:
        engine.stop(timeout=TIMEOUT)
        engine.wait(TIMEOUT)


def test_frame_encoding_lengths() -> None:
    for size in (0, 125, 126, 65535, 65536):
        data = ws_chat.frame(0x1, b"a" * size)
        assert data[0] == 0x81
        if size < 126:
            assert data[1] == size and len(data) == 2 + size
        elif size < 65536:
            assert data[1] == 126 and struct.unpack("!H", data[2:4])[0] == size
        else:
            assert data[1] == 127 and struct.unpack("!Q", data[2:10])[0] == size


def _closed_after(sock: socket.socket, began: float) -> float:
    """Seconds from ``began`` until the server closed ``sock`` (read until EOF or reset)."""
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    return time.monotonic() - began


def test_an_upgrade_or_a_message_that_never_completes_is_closed_at_read_timeout() -> None:
    read_timeout = 0.5
    engine = ws_chat.start(loops=1, read_timeout=read_timeout)
    stop = threading.Event()
    try:
        head = b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
        slow = connect(engine.addrs[0])
        member = Client(engine.addrs[0])
        began = time.monotonic()

        def trickle() -> None:  # a byte every 0.2 s: never quiet for read_timeout, never a whole head
            try:
                for byte in head:
                    slow.sendall(bytes([byte]))
                    if stop.wait(0.2):
                        return
            except OSError:
                pass

        trickler = threading.Thread(target=trickle)
        trickler.start()
        member.send(Message(data="half a message", message_finished=False))
        healthy = Client(engine.addrs[0])  # served meanwhile
        healthy.send(Message(data="still here"))
        assert healthy.message_of("message")["text"] == "still here"
        assert _closed_after(slow, began) < read_timeout + 0.5
        assert _closed_after(member.sock, began) < read_timeout + 0.5
        healthy.close()
    finally:
        stop.set()
        engine.stop(timeout=TIMEOUT)
        engine.wait(TIMEOUT)
    trickler.join(TIMEOUT)
    slow.close()
    member.close()
