"""The compiled hot path, built where a C compiler exists; without one, the install is the pure-Python core."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("netloop._speedups", ["netloop/_speedups.c"], optional=True)])
