"""The compiled hot paths, built where a C compiler exists; without one, the install is the pure-Python core."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("netloop._speedups", ["netloop/_speedups.c"], optional=True),
        # asyncio's ready queue on netloop's loops (netloop.aio); optional in the same way.
        Extension("netloop.aio._speedups", ["netloop/aio/_speedups.c"], optional=True),
    ]
)
