"""Both cores on the same steps, with edge values: the compiled ``Conn`` methods answer what the reference does.

Each core runs in a process of its own (``NETLOOP_PURE`` picks it at import), both driving ``conn_harness``: a real
socket pair and a real, never-run ``EventLoop``. Hypothesis draws the reads and writes; both processes get the same
case, and their answers (values, or the type of what was raised), what is left buffered and what the peer got must
be equal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from core_process import Core, both_cores
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

HARNESS = Path(__file__).with_name("conn_harness.py")


@pytest.fixture(scope="module")
def cores() -> Iterator[tuple[Core, Core]]:
    with both_cores(HARNESS, {"steps": [{"chunk": "", "ops": []}]}) as pair:
        yield pair


def same(cores: tuple[Core, Core], case: dict[str, Any]) -> None:
    pure, compiled = (core.ask(case) for core in cores)
    assert compiled.pop("compiled") and not pure.pop("compiled")
    assert compiled == pure, case


SIZES = st.one_of(
    st.none(),
    st.integers(-3, 12),
    st.sampled_from([sys.maxsize, sys.maxsize - 1, -sys.maxsize - 1, 1 << 31, 1 << 62, 1 << 64, -(1 << 64), 1 << 100]),
)
READS = st.one_of(
    st.tuples(st.sampled_from(["next", "peek", "discard"]), SIZES),
    st.tuples(
        st.just("read_into"),
        st.fixed_dictionaries(
            {
                "kind": st.sampled_from(["bytearray", "memoryview", "wide", "readonly", "released"]),
                "size": st.integers(0, 12),
            }
        ),
    ),
    st.tuples(st.just("inbound_buffered"), st.none()),
)
PLAIN = st.fixed_dictionaries({"kind": st.sampled_from(["bytes", "bytearray"]), "items": st.integers(0, 9)})
WIDE = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["array", "strided", "2d"]),
        "fmt": st.sampled_from(["B", "b", "H", "I", "d"]),
        "items": st.integers(0, 9),
    }
)


def cases(buffers: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    op = st.one_of(
        READS,
        st.tuples(st.just("write"), buffers),
        st.tuples(st.sampled_from(["writev", "writev-tuple"]), st.lists(buffers, max_size=3)),
    )
    step = st.fixed_dictionaries(
        {"chunk": st.binary(min_size=1, max_size=10).map(bytes.hex), "ops": st.lists(op, max_size=6)}
    )
    return st.fixed_dictionaries({"steps": st.lists(step, min_size=1, max_size=3)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases(PLAIN))
@example(case={"steps": [{"chunk": "616263", "ops": [("next", sys.maxsize), ("next", 1 << 64), ("next", -1)]}]})
@example(case={"steps": [{"chunk": "61", "ops": [("discard", 0)]}, {"chunk": "62", "ops": [("next", 1 << 100)]}]})
@example(
    case={
        "steps": [
            {"chunk": "61626364", "ops": [("peek", 2), ("discard", 1), ("discard", 1), ("peek", None), ("discard", 9)]},
            {"chunk": "65", "ops": [("peek", -1), ("read_into", {"kind": "memoryview", "size": 2}), ("discard", None)]},
        ]
    }
)
@example(
    case={
        "steps": [
            {
                "chunk": "6162636465",
                "ops": [
                    ("read_into", {"kind": "wide", "size": 4}),
                    ("read_into", {"kind": "wide", "size": 3}),
                    ("read_into", {"kind": "readonly", "size": 2}),
                    ("read_into", {"kind": "released", "size": 2}),
                    ("read_into", {"kind": "bytearray", "size": 9}),
                    ("writev-tuple", [{"kind": "bytes", "items": 2}, {"kind": "bytearray", "items": 0}]),
                ],
            }
        ]
    }
)
def test_reads_and_plain_writes_answer_alike_on_both_cores(cores: tuple[Core, Core], case: dict[str, Any]) -> None:
    same(cores, case)


@pytest.fixture
def wide_writes(cores: tuple[Core, Core]) -> tuple[Core, Core]:
    # The pure core counted a wide view's items until its write was fixed (the same issue as the compiled one's).
    probe = {"steps": [{"chunk": "00", "ops": [("write", {"kind": "array", "fmt": "I", "items": 1})]}]}
    if cores[0].ask(probe)["answers"] == [["ok", [1, 0]]]:
        pytest.xfail("the pure core's write still counts items, not bytes")
    return cores


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases(WIDE))
@example(case={"steps": [{"chunk": "00", "ops": [("write", {"kind": "array", "fmt": "I", "items": 3})]}]})
@example(case={"steps": [{"chunk": "00", "ops": [("write", {"kind": "strided", "fmt": "d", "items": 4})]}]})
def test_writes_of_every_buffer_format_answer_alike_on_both_cores(
    wide_writes: tuple[Core, Core], case: dict[str, Any]
) -> None:
    same(wide_writes, case)
