"""The compiled hot path, built where a C compiler exists; without one, the install is the pure-Python core."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("netloop._speedups", ["netloop/_speedups.c"], optional=True),
        # OpenSSL read-ahead for TLS connections, found at run time in the ssl module's libssl (no headers needed).
        Extension("netloop._tls_speedups", ["netloop/_tls_speedups.c"], optional=True),
        # asyncio's ready queue on netloop's loops (netloop.aio); optional in the same way.
        Extension("netloop.aio._speedups", ["netloop/aio/_speedups.c"], optional=True),
        # The example RESP server's hot path (resp_server does the same in Python without it).
        Extension("resp_server._speedups", ["resp_server/_speedups.c"], optional=True),
    ]
)
