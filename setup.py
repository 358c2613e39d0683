"""The compiled hot path, built where a C compiler exists; without one, the install is the pure-Python core."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("netloop._speedups", ["netloop/_speedups.c"], optional=True),
        # The example RESP server's request framer (resp_server.parser frames in Python without it).
        Extension("resp_server._framing", ["resp_server/_framing.c"], optional=True),
    ]
)
