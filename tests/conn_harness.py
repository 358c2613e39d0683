"""One connection, driven a step at a time: a real socket pair and a real ``EventLoop`` that is never run.

``run_case`` sends each chunk of a case from the peer, lets the connection read it (``Conn._on_io``, the loop's
own read path), and has ``on_traffic`` apply that chunk's operations (``next``, ``peek``, ``discard``,
``read_into``, ``write``, ``writev`` of a list or a tuple, ``inbound_buffered``...), recording what each returned
or the type of what it raised.
Run as a script it answers cases, one JSON line each, on stdin/stdout: the differential tests run it twice, once per
core (``NETLOOP_PURE``), and compare the answers.
"""

from __future__ import annotations

import array
import json
import select
import socket
import sys
import types
from typing import Any

import netloop
from netloop._eventloop import EventLoop
from netloop._options import Options
from netloop._poller import IN

Answer = list[Any]


def make_buffer(spec: dict[str, Any]) -> Any:
    """The buffer ``spec`` names: bytes, bytearray, or a memoryview of an array of a format, strided or 2-D."""
    kind = spec["kind"]
    items = spec["items"]
    if kind == "bytes":
        return bytes(i % 251 for i in range(items))
    if kind == "bytearray":
        return bytearray(i % 251 for i in range(items))
    fmt = spec.get("fmt", "B")
    values = [i * 0.5 for i in range(items)] if fmt == "d" else [(i * 37) % 100 for i in range(items)]
    view = memoryview(array.array(fmt, values))
    if kind == "strided":
        return view[::2]
    if kind == "2d":
        return view.cast("B").cast("B", (items, view.itemsize)) if items else view
    return view


def read_target(kind: str, buf: bytearray) -> Any:
    """What ``read_into`` is given for ``buf``: itself, a view of it (plain, of 2-byte items, strided), a read-only
    view of a copy, or a released view."""
    if kind == "bytearray":
        return buf
    view = memoryview(buf)
    if kind == "wide":
        return view.cast("H") if len(buf) % 2 == 0 else view[::2]
    if kind == "readonly":
        return memoryview(bytes(buf))
    if kind == "released":
        view.release()
    return view


class Steps(netloop.EventHandler):
    """Applies the operations meant for each delivery and records the answers."""

    def __init__(self) -> None:
        self.ops: list[list[Any]] = []
        self.answers: list[Answer] = []

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        for op in self.ops:
            try:
                self.answers.append(["ok", apply(conn, op)])
            except Exception as exc:
                self.answers.append(["raise", type(exc).__name__])
        self.ops = []
        return None


def apply(conn: netloop.Conn, op: list[Any]) -> Any:
    name, arg = op
    if name in ("next", "peek"):
        data = getattr(conn, name)() if arg is None else getattr(conn, name)(arg)
        return data.hex()
    if name == "discard":
        return conn.discard() if arg is None else conn.discard(arg)
    if name == "read_into":
        buf: Any = bytearray(arg["size"])
        n = conn.read_into(read_target(arg["kind"], buf))
        return [n, buf.hex()]
    if name == "write":
        return [conn.write(make_buffer(arg)), conn.outbound_buffered()]
    if name == "writev":
        return [conn.writev([make_buffer(spec) for spec in arg]), conn.outbound_buffered()]
    if name == "writev-tuple":
        return [conn.writev(tuple(make_buffer(spec) for spec in arg)), conn.outbound_buffered()]
    if name == "inbound_buffered":
        return conn.inbound_buffered()
    raise ValueError(f"no operation {name!r}")


def drain(sock: socket.socket) -> bytes:
    """What the peer can read now, without waiting."""
    got = bytearray()
    while select.select([sock], [], [], 0)[0]:
        part = sock.recv(1 << 16)
        if not part:
            break
        got += part
    return bytes(got)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Deliver each of ``case["steps"]`` (``{"chunk": hex, "ops": [...]}``) and return every answer."""
    handler = Steps()
    core = types.SimpleNamespace(sources=None)
    loop = EventLoop(0, core, handler, Options())  # type: ignore[arg-type]
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    try:
        conn = loop.open_accepted(ours, "peer", None, None)
        assert conn is not None
        for step in case["steps"]:
            peer.sendall(bytes.fromhex(step["chunk"]))
            handler.ops = step["ops"]
            conn._on_io(IN)
            loop._run_tasks()
        return {
            "answers": handler.answers,
            "inbound": conn.inbound_buffered(),
            "sent": (drain(peer) + conn._outbound.peek_all()).hex(),
        }
    finally:
        peer.close()
        loop._teardown()


def main() -> None:
    for line in sys.stdin:
        print(json.dumps({"compiled": netloop.compiled, **run_case(json.loads(line))}), flush=True)


if __name__ == "__main__":
    main()
