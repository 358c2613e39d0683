"""Which core is in use: the compiled hot path (``netloop._speedups``, built by ``pip install`` where a C compiler
exists) or the pure-Python reference. ``NETLOOP_PURE=1`` in the environment picks the pure-Python core.

The compiled code keeps fields of ``Conn`` as C members and looks Python names up by string. What it shares with the
Python code is declared here, once, and checked when it loads: the C module's own table against these declarations
(``_load``), then the declarations against the classes (``adopt``, once they exist). A mismatch (a method renamed on
one side only) turns the compiled core off with one warning and the pure-Python core serves: it fails at import,
never as a wrong answer under load.
"""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from collections.abc import Mapping
from types import GetSetDescriptorType, MemberDescriptorType, ModuleType
from typing import Any

from netloop import _lifecycle

HOT_FIELDS = (
    "_data",
    "_fd",
    "_inbound",
    "_loop",
    "_more",
    "_outbound",
    "_pos",
    "_recv",
    "_seen",
    "_send",
    "_state",
)
"""The fields the hot path touches: slots of ``Conn`` in the pure-Python core, members of ``_speedups.ConnCore``."""

COMPILED_METHODS = (
    "next",
    "write",
    "inbound_buffered",
    "outbound_buffered",
    "peek",
    "discard",
    "read_into",
    "writev",
)
"""The ``Conn`` methods ``ConnCore`` carries compiled; the Python ones stay the reference the C code calls back."""

LOOKUPS = (
    ("RingBuffer OutboundBuffer", "_size"),
    ("RingBuffer", "read"),
    ("Conn", "_enqueue"),
    ("Conn", "_buffer_rest"),
    ("Conn", "_fail_soon"),
    ("Conn", "_close"),
    ("Conn", "_peer_eof"),
    ("Conn", "_keep_rest"),
    ("Conn", "_keep_read"),
    ("Conn", "_read_failed"),
    ("Conn", "_read_on"),
    ("Conn", "_write_failed"),
    ("Conn", "_act"),
    ("EventLoop", "bytes_out"),
    ("EventLoop", "bytes_in"),
    ("EventLoop", "now"),
    ("EventLoop", "_running"),
    ("EventLoop", "_sleeping"),
    ("EventLoop", "_run_timers"),
    ("EventLoop", "_run_tasks"),
    ("EventLoop", "handler_failed"),
    ("EventLoop", "_internal_error"),
    ("EventHandler", "on_traffic"),
)
"""Every Python name the compiled code looks up, with the class(es) it is looked up on (``_speedups.LOOKUPS``)."""

LOOP_ATTRIBUTES = ("bytes_out", "bytes_in", "now", "_running", "_sleeping")
"""``EventLoop`` attributes the compiled loop reads and writes in the loop's instance ``__dict__``: ``__init__`` must
set them, and no class attribute may be a descriptor (a property or slot the dictionary writes would bypass)."""


_MISSING = object()
_NO_TABLE = "it has no lifecycle(): it does not take the state table from netloop/_lifecycle.py"


def module_problems(module: ModuleType) -> list[str]:
    """What the compiled ``module`` disagrees with in the declarations above (empty when nothing)."""
    problems: list[str] = []
    table = getattr(module, "LOOKUPS", None)
    if not isinstance(table, tuple):
        return ["it declares no LOOKUPS table"]
    theirs, ours = set(table), set(LOOKUPS)
    problems += [
        f"it looks up {name!r} on {owner}, which netloop/_compiled.py does not declare"
        for owner, name in sorted(theirs - ours)
    ]
    problems += [
        f"it does not look up {name!r} on {owner}, which netloop/_compiled.py declares"
        for owner, name in sorted(ours - theirs)
    ]
    core = getattr(module, "ConnCore", None)
    if not isinstance(core, type):
        return [*problems, "it has no ConnCore type"]
    fields = {
        name
        for name, value in vars(core).items()
        if isinstance(value, (MemberDescriptorType, GetSetDescriptorType)) and not name.startswith("__")
    }
    if fields != set(HOT_FIELDS):
        problems.append(f"ConnCore's fields {sorted(fields)} are not HOT_FIELDS {sorted(HOT_FIELDS)}")
    problems += [f"ConnCore has no compiled {name!r}" for name in COMPILED_METHODS if name not in vars(core)]
    return problems


def table_problems(module: ModuleType) -> list[str]:
    """Where the compiled ``module``'s copy of the lifecycle table (after ``configure``) differs from
    ``netloop._lifecycle``'s: the write in each state must be decided by the same table in both cores."""
    if not callable(getattr(module, "lifecycle", None)):
        return [_NO_TABLE]
    sends, closed = module.lifecycle()
    problems = []
    if tuple(sends) != _lifecycle.SENDS:
        problems.append(f"its SENDS {tuple(sends)} are not netloop._lifecycle.SENDS {_lifecycle.SENDS}")
    if closed != _lifecycle.CLOSED:
        problems.append(f"its CLOSED {closed} is not netloop._lifecycle.CLOSED {_lifecycle.CLOSED}")
    return problems


def class_problems(owners: Mapping[str, type]) -> list[str]:
    """What the classes (by the names ``LOOKUPS`` gives them) lack of what the compiled code looks up on them."""
    problems: list[str] = []
    for owner_names, name in LOOKUPS:
        for owner in owner_names.split():
            cls = owners[owner]
            if owner == "EventLoop" and name in LOOP_ATTRIBUTES:
                shadow = inspect.getattr_static(cls, name, None)
                if hasattr(type(shadow), "__set__"):
                    problems.append(f"{owner}.{name} is a descriptor: the compiled loop writes the instance dict")
                elif name not in _assigned_in_init(cls):
                    problems.append(f"{owner}.__init__ does not set {name!r}")
            elif inspect.getattr_static(cls, name, _MISSING) is _MISSING:
                problems.append(f"{owner} has no {name!r}")
    return problems


def _assigned_in_init(cls: type) -> tuple[str, ...]:
    init: Any = getattr(cls, "__init__", None)
    code = getattr(init, "__code__", None)
    return () if code is None else tuple(code.co_names)


def _fall_back(problems: list[str]) -> None:
    global speedups, compiled
    speedups = None
    compiled = False
    warnings.warn(
        "netloop: the compiled core (netloop._speedups) does not match this netloop ("
        + "; ".join(problems)
        + "): serving with the pure-Python core; rebuild it (pip install, or python setup.py build_ext --inplace)",
        RuntimeWarning,
        stacklevel=2,
    )


def _load() -> ModuleType | None:
    if os.environ.get("NETLOOP_PURE", "") not in ("", "0"):
        return None
    try:
        module = importlib.import_module("netloop._speedups")
    except ImportError:
        return None
    problems = module_problems(module)
    if not callable(getattr(module, "lifecycle", None)):
        # A build from before the lifecycle table: its configure() would refuse what adopt() hands it.
        problems.append(_NO_TABLE)
    if not callable(getattr(module, "methods_for", None)):
        problems.append("it has no methods_for(): a build from before the compiled methods became Conn's own")
    if problems:
        _fall_back(problems)
        return None
    return module


def adopt(conn: type, loop: type, shared: Mapping[str, Any]) -> bool:
    """Switch the compiled core on for ``conn`` (``Conn``) and ``loop`` (``EventLoop``) once the classes it looks
    names up on are known to have them; False (with the one warning) where they don't, or where it is not in use.

    ``shared`` is what the connection module shares with C: ``NO_INBOUND``, ``NO_OUTBOUND`` (passed in, so this
    module imports nothing of the core's and no import goes round in a circle); the states' table comes from
    ``netloop._lifecycle``, which imports nothing either.
    Called once, when ``netloop._eventloop`` has defined the last of the classes.
    """
    if speedups is None:
        return False
    import _socket

    from netloop._buffer.elastic import OutboundBuffer
    from netloop._buffer.ring import RingBuffer
    from netloop._errors import ShortBufferError
    from netloop._handler import EventHandler

    owners = {
        "Conn": conn,
        "EventLoop": loop,
        "RingBuffer": RingBuffer,
        "OutboundBuffer": OutboundBuffer,
        "EventHandler": EventHandler,
    }
    problems = class_problems(owners)
    if problems:
        _fall_back(problems)
        return False
    # The Python methods stay the reference: the compiled ones call them for what they don't handle themselves.
    reference = vars(conn)
    speedups.configure(
        shared["NO_INBOUND"],
        shared["NO_OUTBOUND"],
        ShortBufferError,
        reference["next"],
        reference["write"],
        _socket.socket,
        _lifecycle.SENDS,
        _lifecycle.CLOSED,
    )
    speedups.references({name: reference[name] for name in COMPILED_METHODS})
    problems = table_problems(speedups)
    if problems:
        _fall_back(problems)
        return False
    # The compiled methods as methods of ``Conn`` itself, not inherited from ConnCore: the interpreter specializes a
    # call of a C method only on an instance of the method's own type (a subclass's instances take the generic call).
    compiled_methods = speedups.methods_for(conn)
    for name in COMPILED_METHODS:
        setattr(conn, name, compiled_methods[name])
    return True


speedups = _load()
compiled = speedups is not None
"""True when the compiled hot path is in use."""
