"""A Redis-compatible (RESP2 and RESP3) key-value server on netloop; redis-cli, redis-benchmark and redis-py work
with it. ``python -m resp_server --port 6380`` runs it; docs/resp.md describes it.

The protocol is sans-I/O (:class:`RespParser` frames requests, :class:`RespSession` answers them); :class:`RespHandler`
moves bytes between netloop connections and one session each.
"""

from resp_server.parser import RespParser, encode_request
from resp_server.server import RespHandler, address, main, start
from resp_server.session import RespSession
from resp_server.store import KeyValueStore

__all__ = ["KeyValueStore", "RespHandler", "RespParser", "RespSession", "address", "encode_request", "main", "start"]
