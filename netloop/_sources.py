"""``max_connections_per_source``: the open connections of each client address, shared by an engine's loops."""

from __future__ import annotations

import threading


class SourceLimit:
    """``max_connections_per_source``: the open connections of each client address, shared by an engine's loops."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()  # the loops are threads

    def take(self, host: str) -> bool:
        """Count one more connection from ``host``; False (nothing counted) when it already has ``limit``."""
        with self.lock:
            n = self.counts.get(host, 0)
            if n >= self.limit:
                return False
            self.counts[host] = n + 1
            return True

    def give(self, host: str) -> None:
        with self.lock:
            n = self.counts[host] - 1
            if n:
                self.counts[host] = n
            else:
                del self.counts[host]  # an address with no connection holds no entry
