"""OutboundBuffer against a plain bytearray model."""

from __future__ import annotations

import array

from hypothesis import given, settings
from hypothesis import strategies as st

from netloop._buffer.elastic import MAX_IOV, OutboundBuffer

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.binary(max_size=3000)),
        st.tuples(st.just("advance"), st.integers(0, 6000)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_outbound_matches_bytearray_model(operations: list[tuple[str, object]]) -> None:
    out = OutboundBuffer()
    model = bytearray()
    for op, arg in operations:
        if op == "append":
            assert isinstance(arg, bytes)
            out.append(arg)
            model += arg
        else:
            assert isinstance(arg, int)
            n = min(arg, len(model))
            out.advance(n)
            del model[:n]
        assert len(out) == len(model)
        assert bool(out) == bool(model)
        assert out.peek_all() == bytes(model)
        chunks = out.chunks()
        assert len(chunks) <= MAX_IOV
        joined = b"".join(chunks)
        assert bytes(model).startswith(joined)
        assert (len(joined) == len(model)) or len(chunks) == MAX_IOV


def test_advance_past_end_is_an_error() -> None:
    out = OutboundBuffer()
    out.append(b"abc")
    try:
        out.advance(4)
    except ValueError:
        pass
    else:
        raise AssertionError("advance beyond the buffered bytes must raise")
    assert out.peek_all() == b"abc"


def test_a_wide_memoryview_is_counted_and_advanced_in_bytes() -> None:
    buf = OutboundBuffer()
    words = array.array("I", [1, 2, 3, 4])
    buf.append(memoryview(words))
    assert len(buf) == 16
    buf.advance(6)
    assert buf.peek_all() == words.tobytes()[6:]
