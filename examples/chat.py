"""Line-based chat: every line a client sends is broadcast to every other client.

Clients are spread over several event loops, so a broadcast reaches connections owned by other loops (threads):
it goes through ``conn.async_write``, the thread-safe way to write to a connection of another loop.

    python -m examples.chat --port 7000 [--host 127.0.0.1] [--loops 4]
    # then, in two terminals: nc 127.0.0.1 7000    (commands: /nick NAME, /who, /quit)
"""

from __future__ import annotations

import argparse
import logging
import threading

import netloop
from netloop.codec import LineBasedFrameCodec

MAX_LINE = 4096
# A member that stops reading is cut off once this much waits for it (OutboundLimitError): chat lines are small, so
# a reader that fell this far behind is gone, and memory stays bounded whatever the others send.
LIMITS = {"write_buffer_cap": 256 * 1024, "write_buffer_limit": 1024 * 1024}


class Chat(netloop.EventHandler):
    """Members live in one dict shared by every loop, guarded by a lock."""

    def __init__(self) -> None:
        self.codec = LineBasedFrameCodec(b"\n", max_frame_length=MAX_LINE)
        self.lock = threading.Lock()
        self.members: dict[netloop.Conn, str] = {}

    def broadcast(self, line: str, sender: netloop.Conn | None = None, to: list[netloop.Conn] | None = None) -> None:
        """Send ``line`` to every member but ``sender``, or to the members ``to``."""
        data = self.codec.encode(line.encode())
        if to is None:
            with self.lock:
                to = [conn for conn in self.members if conn is not sender]
        for conn in to:
            try:
                conn.async_write(data)
            except netloop.EngineStoppedError:
                pass  # the engine is stopping: nobody left to tell

    def on_open(self, conn: netloop.Conn) -> netloop.Action | None:
        name = f"guest{conn.fd}"
        with self.lock:
            # Who is told of this arrival is settled as it joins: a member joining on another loop meanwhile
            # comes after it, and is not told of it.
            earlier = list(self.members)
            self.members[conn] = name
        conn.write(self.codec.encode(f"* welcome, {name} (event loop {conn.event_loop.index})".encode()))
        self.broadcast(f"* {name} joined", to=earlier)
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        for frame in self.codec.decode(conn):
            line = frame.decode("utf-8", "replace").rstrip("\r")
            if line.startswith("/nick "):
                new = line[6:].strip()[:32] or "nobody"
                with self.lock:
                    old, self.members[conn] = self.members[conn], new
                self.broadcast(f"* {old} is now {new}", conn)
                conn.write(self.codec.encode(f"* you are {new}".encode()))
            elif line == "/who":
                with self.lock:
                    names = sorted(self.members.values())
                conn.write(self.codec.encode(("* here: " + ", ".join(names)).encode()))
            elif line == "/quit":
                conn.write(self.codec.encode(b"* bye"))
                return netloop.Action.CLOSE
            elif line:
                with self.lock:
                    name = self.members[conn]
                self.broadcast(f"{name}: {line}", conn)
        if conn.inbound_buffered():
            conn.start_message()  # a line has begun: with read_timeout it must end in time, however slowly it comes
        else:
            conn.end_message()
        return None

    def on_close(self, conn: netloop.Conn, err: BaseException | None) -> netloop.Action | None:
        with self.lock:
            name = self.members.pop(conn, None)
        if name is not None:
            self.broadcast(f"* {name} left")
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--read-timeout", type=float, default=60.0, help="seconds a line may take to arrive")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.info("chat on tcp://%s:%d with %d event loops", args.host, args.port, args.loops)
    address = f"tcp://{args.host}:{args.port}"
    netloop.run(Chat(), address, num_event_loop=args.loops, read_timeout=args.read_timeout, **LIMITS)


if __name__ == "__main__":
    main()
