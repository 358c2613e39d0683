"""Which core is in use: the compiled hot path (``netloop._speedups``, built by ``pip install`` where a C compiler
exists) or the pure-Python reference. ``NETLOOP_PURE=1`` in the environment picks the pure-Python core."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("NETLOOP_PURE", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module("netloop._speedups")
    except ImportError:
        return None


speedups = _load()
compiled = speedups is not None
"""True when the compiled hot path is in use."""
