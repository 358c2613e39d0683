"""The entry points: ``netloop.start`` then ``Engine.wait`` under Ctrl-C, as an application's main would call them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from loopback import TIMEOUT, connect, recv_exact, recv_until_closed

SCRIPT = """
import signal
import sys
import threading
import time

import netloop

# Ctrl-C as at a terminal: a suite started in the background (a shell's "&") hands its children SIGINT ignored, and
# wait() rightly leaves an ignored SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)


class Echo(netloop.EventHandler):
    def on_traffic(self, conn):
        conn.write(conn.next())

    def on_close(self, conn, err):
        print("closed", type(err).__name__, flush=True)

{make}
print(engine.addrs[0] if hasattr(engine, "addrs") else address, flush=True)


def announce():
    # Tell the test once the main thread is blocked inside wait(): a Ctrl-C before it would not be wait's to handle.
    main = threading.main_thread().ident
    while True:
        frame = sys._current_frames().get(main)
        # Blocked in a wait (threading's, or netloop's own) called (at any depth) from netloop's wait(): not, say,
        # in this thread's start(), which waits in threading too.
        if frame is not None and "wait" in frame.f_code.co_name and (
            frame.f_code.co_filename == threading.__file__ or "netloop" in frame.f_code.co_filename
        ):
            caller = frame
            while caller is not None:
                if caller.f_code.co_name == "wait" and "netloop" in caller.f_code.co_filename:
                    print("waiting", flush=True)
                    if {to_a_loop_thread}:
                        sys.stdin.readline()  # the test's go
                        # A process's signal may be taken by any of its threads: here, by an event loop's.
                        loop = next(t for t in threading.enumerate() if t.name.startswith("netloop-loop"))
                        signal.pthread_kill(loop.ident, signal.SIGINT)
                    return
                caller = caller.f_back
        time.sleep(0.001)


threading.Thread(target=announce, daemon=True).start()
print("waited", engine.wait(), flush=True)
"""

ENGINE = 'engine = netloop.start(Echo(), "tcp://127.0.0.1:0")'
CLIENT = """
import socket
server = socket.create_server(("127.0.0.1", 0))
address = "tcp://127.0.0.1:%d" % server.getsockname()[1]
engine = netloop.Client(Echo())
engine.start()
"""


@pytest.mark.parametrize("to_a_loop_thread", [False, True], ids=["main-thread", "loop-thread"])
@pytest.mark.parametrize("make", [ENGINE, CLIENT], ids=["engine", "client"])
def test_ctrl_c_in_wait_stops_gracefully_without_a_traceback(make: str, to_a_loop_thread: bool) -> None:
    """Also when a loop's thread takes the signal: only the main thread runs Python's handlers, so wait() must wake."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(make=textwrap.dedent(make), to_a_loop_thread=to_a_loop_thread)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        if make is ENGINE:
            sock = connect(address)
            sock.sendall(b"hi")
            assert recv_exact(sock, 2) == b"hi"
        assert proc.stdout.readline().strip() == "waiting"
        if to_a_loop_thread:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        else:
            proc.send_signal(signal.SIGINT)
        if make is ENGINE:
            assert recv_until_closed(sock) == b""  # the graceful stop's FIN
            sock.close()
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in err, err
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "waited True", out
    if make is ENGINE:
        assert "closed NoneType" in out  # the open connection was closed by the graceful stop, on_close and all
