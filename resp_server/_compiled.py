"""resp_server's compiled hot path (``resp_server/_speedups.c``: the request framer, the session's dispatch loop),
built by setup.py beside netloop's core. Where it is not built, or with ``NETLOOP_PURE=1``, the parser and the
session do the same in Python, with the same results."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("NETLOOP_PURE", "") not in ("", "0"):  # the pure-Python run of netloop is pure here too
        return None
    try:
        return importlib.import_module("resp_server._speedups")
    except ImportError:
        return None


SPEEDUPS = _load()
COMPILED = SPEEDUPS is not None
"""What parsers and sessions use by default (their ``compiled`` argument left out): the compiled hot path or not."""


def speedups(compiled: bool | None) -> ModuleType | None:
    """The compiled module for a parser or session made with ``compiled`` (None: :data:`COMPILED`), or None for
    the Python way; RuntimeError where it is asked for and not built."""
    if not (COMPILED if compiled is None else compiled):
        return None
    if SPEEDUPS is None:
        raise RuntimeError("resp_server._speedups is not built (python setup.py build_ext --inplace)")
    return SPEEDUPS
