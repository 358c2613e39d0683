"""netloop's examples: each module is a small server that shows one idea, and imports no other example.

- ``echo``: the smallest handler; TCP, UDP and Unix sockets on one engine.
- ``chat``: a broadcast that crosses event loops with ``conn.async_write``.
- ``http_server``: HTTP/1.1 framed straight from the connection's buffer with ``peek``/``discard``.
- ``ws_chat``: a WebSocket broadcast encoded once for members on every loop.
- ``proxy``: two connections on one loop, with backpressure and half-close passed between them.
- ``rpc``: length-prefixed frames with ``netloop.codec``.
- ``metrics``: ``engine.stats()`` in Prometheus's text format, computed off the loop on a ``WorkerPool``.

``certs`` is not an example: the TLS flags the servers share, and a throw-away certificate for trying them.
"""
