"""A two-worker server for tests/test_faults.py, run as its own process: ``python tests/fault_workers.py MODE``.

MODE is a ``netloop.WorkerBalancing`` value (``reuse-port`` or ``parent``). Each worker answers every read with
``b"<worker id> <pid> "`` and the bytes read, and prints ``boot <worker id> <pid> <address>`` once it is up, so a
test learns the pid of a replacement worker too. SIGTERM stops the parent and its workers.
"""

from __future__ import annotations

import os
import sys

import netloop


class Who(netloop.EventHandler):
    worker_id = -1

    def on_boot(self, engine: netloop.Engine) -> netloop.Action | None:
        assert engine.worker_id is not None
        self.worker_id = engine.worker_id
        os.write(1, f"boot {engine.worker_id} {os.getpid()} {engine.addrs[0]}\n".encode())  # one write per line
        return None

    def on_traffic(self, conn: netloop.Conn) -> netloop.Action | None:
        conn.write(b"%d %d " % (self.worker_id, os.getpid()) + conn.next())
        return None


if __name__ == "__main__":
    netloop.run(Who(), "tcp://127.0.0.1:0", workers=2, worker_balancing=sys.argv[1])
