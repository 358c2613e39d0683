"""What the compiled core shares with the Python code is declared once (netloop/_compiled.py) and checked at import.

The checkers are called here with classes and modules made to disagree; the real ones are never changed, and the
end-to-end fallback runs in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from typing import Any

import pytest

import netloop
from netloop import _compiled
from netloop._buffer.elastic import OutboundBuffer
from netloop._buffer.ring import RingBuffer
from netloop._compiled import COMPILED_METHODS, HOT_FIELDS, LOOKUPS, class_problems, module_problems, speedups
from netloop._conn import _HOT_FIELDS, Conn
from netloop._eventloop import EventLoop

needs_compiled = pytest.mark.skipif(speedups is None, reason="the compiled core is not in use")


def owners(**replaced: type) -> dict[str, type]:
    real: dict[str, type] = {
        "Conn": Conn,
        "EventLoop": EventLoop,
        "RingBuffer": RingBuffer,
        "OutboundBuffer": OutboundBuffer,
        "EventHandler": netloop.EventHandler,
    }
    return {**real, **replaced}


def test_the_python_classes_have_every_name_the_compiled_core_looks_up() -> None:
    # Checked on either core: the pure-Python run keeps the Python side of the contract too.
    assert class_problems(owners()) == []
    assert _HOT_FIELDS == HOT_FIELDS


def without(cls: type, name: str) -> type:
    """A copy of ``cls``'s namespace (its bases' too) as one class, less ``name``."""
    namespace: dict[str, Any] = {}
    for klass in reversed(cls.__mro__[:-1]):
        namespace.update({k: v for k, v in vars(klass).items() if k not in ("__dict__", "__weakref__", "__slots__")})
    namespace.pop(name, None)
    return type(cls.__name__, (), namespace)


@pytest.mark.parametrize(("owner", "name"), [("Conn", "_keep_rest"), ("EventLoop", "_run_tasks")])
def test_a_method_missing_on_its_class_is_named(owner: str, name: str) -> None:
    lacking = without(owners()[owner], name)
    assert class_problems(owners(**{owner: lacking})) == [f"{owner} has no {name!r}"]


def test_a_buffer_without_its_size_is_named() -> None:
    class Outbound:
        def append(self, data: bytes) -> None: ...

    assert class_problems(owners(OutboundBuffer=Outbound)) == ["OutboundBuffer has no '_size'"]


def test_a_loop_attribute_the_compiled_loop_writes_must_live_in_the_instance_dict() -> None:
    class Slotted(EventLoop):
        @property
        def now(self) -> float:  # type: ignore[override]
            return 0.0

    class Unset:
        def __init__(self) -> None:
            self.bytes_in = 0

    assert class_problems(owners(EventLoop=Slotted)) == [
        "EventLoop.now is a descriptor: the compiled loop writes the instance dict"
    ]
    problems = class_problems(owners(EventLoop=Unset))
    assert "EventLoop.__init__ does not set 'now'" in problems
    assert "EventLoop.__init__ does not set 'bytes_in'" not in problems


@needs_compiled
def test_the_compiled_module_declares_what_the_python_side_does() -> None:
    assert speedups is not None
    assert module_problems(speedups) == []
    assert set(speedups.LOOKUPS) == set(LOOKUPS)


@needs_compiled
def test_a_compiled_module_that_looks_up_another_name_or_has_other_fields_is_refused() -> None:
    assert speedups is not None
    extra = types.SimpleNamespace(LOOKUPS=(*speedups.LOOKUPS, ("Conn", "_renamed")), ConnCore=speedups.ConnCore)
    assert module_problems(extra) == [  # type: ignore[arg-type]
        "it looks up '_renamed' on Conn, which netloop/_compiled.py does not declare"
    ]
    fewer = types.SimpleNamespace(LOOKUPS=speedups.LOOKUPS[1:], ConnCore=speedups.ConnCore)
    owner, name = speedups.LOOKUPS[0]
    assert module_problems(fewer) == [  # type: ignore[arg-type]
        f"it does not look up {name!r} on {owner}, which netloop/_compiled.py declares"
    ]

    class Fields:
        __slots__ = ("_data", "_pos")

    for name in COMPILED_METHODS:
        setattr(Fields, name, getattr(speedups.ConnCore, name))
    other = types.SimpleNamespace(LOOKUPS=speedups.LOOKUPS, ConnCore=Fields)
    assert module_problems(other) == [  # type: ignore[arg-type]
        f"ConnCore's fields ['_data', '_pos'] are not HOT_FIELDS {sorted(HOT_FIELDS)}"
    ]
    no_core = types.SimpleNamespace(LOOKUPS=speedups.LOOKUPS)
    assert module_problems(no_core) == ["it has no ConnCore type"]  # type: ignore[arg-type]


@needs_compiled
def test_a_mismatched_compiled_module_falls_back_to_the_pure_core_with_one_warning() -> None:
    # The child loads the real extension under its own name first, then offers netloop a copy of it that looks up
    # one name more, as a stale build of a renamed method would.
    assert speedups is not None
    code = f"""
        import importlib.util, inspect, sys, types, warnings
        spec = importlib.util.spec_from_file_location("netloop._speedups", {speedups.__file__!r})
        real = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(real)
        stale = types.ModuleType("netloop._speedups")
        stale.__dict__.update(vars(real))
        stale.LOOKUPS = (*real.LOOKUPS, ("Conn", "_renamed"))
        sys.modules["netloop._speedups"] = stale
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import netloop
        print(netloop.compiled, inspect.isfunction(netloop.Conn.write), len(caught))
        print(caught[0].category.__name__, caught[0].message)
        """
    env = {k: v for k, v in os.environ.items() if k != "NETLOOP_PURE"}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.split() == ["False", "True", "1"]
    assert second.startswith("RuntimeWarning netloop: the compiled core (netloop._speedups) does not match")
    assert "it looks up '_renamed' on Conn" in second


@needs_compiled
def test_adopting_classes_that_lack_a_name_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    # adopt() on a stand-in Conn (the real one is adopted already): refused, the module's flags go to the pure core.
    monkeypatch.setattr(_compiled, "speedups", speedups)
    monkeypatch.setattr(_compiled, "compiled", True)
    lacking = without(Conn, "_peer_eof")
    with pytest.warns(RuntimeWarning, match="Conn has no '_peer_eof'") as caught:
        assert _compiled.adopt(lacking, EventLoop, {}) is False
    assert len(caught) == 1
    assert _compiled.speedups is None and _compiled.compiled is False
