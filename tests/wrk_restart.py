"""SIGHUP under wrk: a server restarted while wrk's keep-alive clients load it answers every request, and the new
code serves after. ``test_restart`` runs it on a raw netloop server, ``test_asgi_deploy`` on the ASGI server."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from loopback import TIMEOUT, wait_until


class LineLog(threading.Thread):
    """A process's stderr lines with the time each arrived."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.lines: list[tuple[float, str]] = []

    def run(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line))


def established(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (the server's side), from /proc/net/tcp."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


def restart_under_wrk(
    wrk: str, server: subprocess.Popen[str], port: int, answer: Callable[[], bytes | None], update: Callable[[], None]
) -> None:
    """``server`` (its stderr piped, logging "restart done") answers b"first" on ``port``; ``update()`` puts the
    version that answers b"second" in place; SIGHUP comes once wrk's eight connections are up. Stops ``server``."""
    log = LineLog(server)
    log.start()
    try:
        wait_until(lambda: answer() == b"first", what="the server to start")
        update()
        load = subprocess.Popen(
            [wrk, "-t1", "-c8", "-d4s", f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True
        )
        # The restart comes once wrk's eight connections are up; the log's timestamps below check it landed inside.
        wait_until(lambda: established(port) >= 8, what="wrk's connections")
        server.send_signal(signal.SIGHUP)
        out, _ = load.communicate(timeout=30)
        wrk_done = time.monotonic()
        assert load.returncode == 0, out
        wait_until(lambda: answer() == b"second", what="the new code to serve")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.join(TIMEOUT)
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    assert requests > 1000, out
    done = [at for at, line in log.lines if "restart done" in line]
    assert done and done[0] < wrk_done, "the restart finished while wrk was running"
