"""RingBuffer against a plain bytearray model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netloop import ShortBufferError
from netloop._buffer.ring import RingBuffer

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.binary(max_size=9000)),
        st.tuples(st.sampled_from(["read", "peek", "discard", "read_into"]), st.integers(-1, 10000)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_ring_matches_bytearray_model(operations: list[tuple[str, object]]) -> None:
    ring = RingBuffer()
    model = bytearray()
    for op, arg in operations:
        if op == "write":
            assert isinstance(arg, bytes)
            ring.write(arg)
            model += arg
        else:
            assert isinstance(arg, int)
            n = len(model) if arg < 0 else arg
            if op == "read_into":
                buf = bytearray(n)
                got = ring.read_into(buf)
                assert bytes(buf[:got]) == bytes(model[:got])
                assert got == min(n, len(model))
                del model[:got]
            elif n > len(model):
                with pytest.raises(ShortBufferError):
                    getattr(ring, op)(arg)
            elif op == "discard":
                assert ring.discard(arg) == n
                del model[:n]
            else:
                result = getattr(ring, op)(arg)
                assert type(result) is bytes
                assert result == bytes(model[:n])
                if op == "read":
                    del model[:n]
        assert len(ring) == len(model)
        assert ring.peek() == bytes(model)
        if not model:
            assert ring.capacity == 0, "an empty ring must hold no storage"


def test_returned_bytes_do_not_alias_storage() -> None:
    ring = RingBuffer()
    ring.write(b"a" * 100)
    first = ring.read(50)
    ring.write(b"b" * 5000)  # grows and overwrites the old region
    assert first == b"a" * 50
    assert ring.read(50) == b"a" * 50


def test_wrap_around_and_growth_keep_order() -> None:
    ring = RingBuffer()
    ring.write(bytes(range(200)) * 20)  # 4000 bytes in a 4096 ring
    assert ring.discard(3900) == 3900
    ring.write(b"X" * 3000)  # wraps
    assert ring.capacity == 4096
    ring.write(b"Y" * 5000)  # grows while wrapped
    data = ring.read()
    assert data == (bytes(range(200)) * 20)[3900:] + b"X" * 3000 + b"Y" * 5000
    assert ring.capacity == 0


def test_short_read_consumes_nothing() -> None:
    ring = RingBuffer()
    ring.write(b"abc")
    with pytest.raises(ShortBufferError):
        ring.read(4)
    assert ring.read() == b"abc"


def test_watch_fires_once_when_reading_leaves_the_low_mark_or_fewer() -> None:
    ring = RingBuffer()
    fired: list[int] = []
    ring.write(b"x" * 100)
    ring.watch(50, lambda: fired.append(len(ring)))
    ring.peek(100)  # looking consumes nothing
    ring.read(40)
    assert fired == []
    ring.discard(10)  # 50 left: at the mark
    assert fired == [50]
    ring.read_into(bytearray(50))
    assert fired == [50]  # once
    ring.write(b"y" * 10)
    ring.watch(5, lambda: fired.append(-1))
    ring.watch(5, None)  # stopped watching
    ring.read()
    assert fired == [50]
