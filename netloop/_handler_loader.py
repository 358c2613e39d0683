"""The handler a ``"module:attr"`` string names: how ``netloop.serve`` and each worker process find theirs."""

from __future__ import annotations

import importlib
from typing import Any

from netloop._errors import NetloopError
from netloop._handler import EventHandler


def load_handler(spec: str) -> EventHandler:
    """The handler ``"module:attr"`` names: an ``EventHandler`` instance, or a class or callable that makes one.

    Raises ``NetloopError`` saying what is wrong with ``spec``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise NetloopError(f"handler {spec!r}: expected 'module:attribute', e.g. 'myapp.server:Handler'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise NetloopError(f"handler {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise NetloopError(f"handler {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, EventHandler):
        return target
    if not callable(target):
        raise NetloopError(f"handler {spec!r} is neither a netloop.EventHandler nor a callable that makes one")
    handler = target()
    if not isinstance(handler, EventHandler):
        raise NetloopError(f"handler {spec!r} made a {type(handler).__name__}, not a netloop.EventHandler")
    return handler
