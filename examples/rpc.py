"""A length-prefixed JSON RPC server and client on netloop.

Every message is a 4-byte big-endian length, then that many bytes of UTF-8 JSON. A request is
``{"id": 1, "method": "add", "params": [1, 2]}``; its reply ``{"id": 1, "result": 3}``, or
``{"id": 1, "error": "..."}`` when the call fails. A frame over 1 MiB closes the connection.

    python -m examples.rpc --port 9000                 # serve
    python -m examples.rpc --port 9000 --call add 1 2  # call, prints 3
"""

from __future__ import annotations

import argparse
import json
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import netloop
from netloop.codec import LengthFieldBasedFrameCodec

CODEC = LengthFieldBasedFrameCodec(length_field_length=4, byteorder="big", max_frame_length=1 << 20)

METHODS: dict[str, Callable[..., Any]] = {
    "add": lambda *numbers: sum(numbers),
    "echo": lambda value: value,
}


def answer(request: bytes) -> bytes:
    """Return the JSON reply to one JSON request; a bad request gets an error reply, never an exception."""
    call: Any = None
    try:
        call = json.loads(request)
        reply = {"id": call.get("id"), "result": METHODS[call["method"]](*call.get("params", []))}
    except Exception as exc:
        request_id = call.get("id") if isinstance(call, dict) else None
        reply = {"id": request_id, "error": f"{type(exc).__name__}: {exc}"}
    return json.dumps(reply).encode()


class RpcServer(netloop.EventHandler):
    """Answers every complete request in the order it came; a partial one waits in the connection."""

    def on_boot(self, engine: netloop.Engine) -> None:
        print("listening on", *engine.addrs, flush=True)

    def on_traffic(self, conn: netloop.Conn) -> None:
        # FrameTooLongError and CodecError propagate: netloop closes this connection with the error.
        replies = [CODEC.encode(answer(request)) for request in CODEC.decode(conn)]
        if replies:
            conn.writev(replies)


class RpcClient:
    """A blocking client over one socket, one call at a time."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._decoder = CODEC.decoder()
        self._replies: deque[bytes] = deque()
        self._last_id = 0

    def call(self, method: str, *params: Any) -> Any:
        """Return the call's result; raises ``RuntimeError`` with the server's error message."""
        self._last_id += 1
        request = {"id": self._last_id, "method": method, "params": params}
        self._sock.sendall(CODEC.encode(json.dumps(request).encode()))
        while not self._replies:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self._replies.extend(self._decoder.feed(chunk))
        reply = json.loads(self._replies.popleft())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def close(self) -> None:
        self._sock.close()


def parse_param(text: str) -> Any:
    """A command-line parameter as JSON when it is JSON (numbers, lists), else as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.rpc", description="A length-prefixed JSON RPC demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port (server only)")
    parser.add_argument("--call", nargs="+", metavar=("METHOD", "PARAM"), help="call METHOD and print the result")
    args = parser.parse_args(argv)
    if args.call is None:
        netloop.run(RpcServer(), f"tcp://{args.host}:{args.port}")
        return
    method, *params = args.call
    client = RpcClient(args.host, args.port)
    try:
        print(json.dumps(client.call(method, *map(parse_param, params))))
    except RuntimeError as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        client.close()


if __name__ == "__main__":
    main()
