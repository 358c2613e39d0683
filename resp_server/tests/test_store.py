"""The RESP example's keyspace: values, scores as strtod reads them, lazy and active expiry under a fake clock,
and Redis glob matching."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resp_server.store import SAMPLE_SIZE, KeyValueStore, glob_match
from resp_server.values import parse_float, strtod


class FakeClock:
    """Milliseconds that only move when a test says so."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> KeyValueStore:
    return KeyValueStore(clock)


def test_set_get_delete_exists(store: KeyValueStore) -> None:
    assert store.get(b"k") is None
    store.set(b"k", b"v")
    assert store.get(b"k") == b"v"
    assert store.exists(b"k")
    store.set(b"k", b"")
    assert store.get(b"k") == b""  # an empty value is still a value
    assert store.delete(b"k") is True
    assert store.delete(b"k") is False
    assert not store.exists(b"k")
    assert len(store) == 0


def test_key_lives_through_its_deadline_and_is_gone_after_it(store: KeyValueStore, clock: FakeClock) -> None:
    store.set(b"k", b"v", deadline=clock.now + 100)
    clock.now += 100
    assert store.get(b"k") == b"v"  # Redis expires only once now > deadline
    assert store.deadline(b"k") == clock.now
    clock.now += 1
    assert store.get(b"k") is None
    assert len(store) == 0  # the lazy check removed it
    assert store.deadline(b"k") is None


def test_expired_key_is_not_deletable_or_existing(store: KeyValueStore, clock: FakeClock) -> None:
    store.set(b"k", b"v", deadline=clock.now + 1)
    clock.now += 2
    assert len(store) == 1  # not yet noticed
    assert not store.exists(b"k")
    assert store.delete(b"k") is False
    assert len(store) == 0


def test_set_drops_the_deadline_unless_keep_ttl(store: KeyValueStore, clock: FakeClock) -> None:
    store.set(b"k", b"v", deadline=clock.now + 10)
    store.set(b"k", b"w", keep_ttl=True)
    assert store.deadline(b"k") == clock.now + 10
    store.set(b"k", b"x")
    assert store.deadline(b"k") is None
    clock.now += 1000
    assert store.get(b"k") == b"x"


def test_keep_ttl_does_not_revive_an_expired_deadline(store: KeyValueStore, clock: FakeClock) -> None:
    store.set(b"k", b"v", deadline=clock.now)
    clock.now += 1
    store.set(b"k", b"w", keep_ttl=True)  # the old key had expired: this is a fresh key without a deadline
    assert store.get(b"k") == b"w"
    assert store.deadline(b"k") is None


def test_set_deadline_replaces_the_previous_one(store: KeyValueStore, clock: FakeClock) -> None:
    store.set(b"k", b"v")
    store.set_deadline(b"k", clock.now + 5)
    store.set_deadline(b"k", clock.now + 50)
    clock.now += 10
    assert store.get(b"k") == b"v"
    assert store.deadline(b"k") == clock.now + 40


def test_keys_skips_and_removes_expired(store: KeyValueStore, clock: FakeClock) -> None:
    store.set(b"live", b"1")
    store.set(b"soon", b"2", deadline=clock.now + 1)
    store.set(b"later", b"3", deadline=clock.now + 1000)
    clock.now += 2
    assert sorted(store.keys()) == [b"later", b"live"]
    assert len(store) == 2


def test_clear(store: KeyValueStore, clock: FakeClock) -> None:
    store.set(b"a", b"1", deadline=clock.now + 5)
    store.set(b"b", b"2")
    store.clear()
    assert len(store) == 0
    assert store.active_expire() == 0
    store.set(b"a", b"again")
    assert store.deadline(b"a") is None


def test_active_expire_removes_every_expired_key_when_most_are_stale(store: KeyValueStore, clock: FakeClock) -> None:
    for i in range(500):
        store.set(b"k%d" % i, b"v", deadline=clock.now + 10)
    store.set(b"forever", b"v")
    clock.now += 11
    assert store.active_expire(budget=10.0) == 500
    assert store.keys() == [b"forever"]


def test_active_expire_stops_after_a_mostly_live_sample(store: KeyValueStore, clock: FakeClock) -> None:
    # The first sample holds live keys only, so one call stops there; the next call resumes past them.
    for i in range(SAMPLE_SIZE):
        store.set(b"live%d" % i, b"v", deadline=clock.now + 1000)
    for i in range(SAMPLE_SIZE):
        store.set(b"stale%d" % i, b"v", deadline=clock.now + 10)
    clock.now += 11
    assert store.active_expire(budget=10.0) == 0
    assert len(store) == 2 * SAMPLE_SIZE
    assert store.active_expire(budget=10.0) == SAMPLE_SIZE
    assert sorted(store.keys()) == sorted(b"live%d" % i for i in range(SAMPLE_SIZE))


def test_active_expire_is_bounded_by_its_budget(store: KeyValueStore, clock: FakeClock) -> None:
    for i in range(10 * SAMPLE_SIZE):
        store.set(b"k%d" % i, b"v", deadline=clock.now)
    clock.now += 1
    # With no time left after the first round, exactly one sample is processed.
    assert store.active_expire(budget=0.0) == SAMPLE_SIZE
    assert len(store) == 9 * SAMPLE_SIZE


# (kind, key number, amount or None, keep_ttl): one step of the model test below.
_op = st.tuples(
    st.sampled_from(["set", "delete", "expire", "tick", "active", "get"]),
    st.integers(0, 3),
    st.none() | st.integers(0, 4),
    st.booleans(),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_op, max_size=60))
def test_store_matches_a_plain_model(ops: list[tuple[str, int, int | None, bool]]) -> None:
    """Whatever the mix of writes, deadlines, time and active expiry, reads agree with a simple model.

    Reads are steps of their own, so expired keys linger unnoticed between them as they would in use.
    """
    clock = FakeClock(0)
    store = KeyValueStore(clock)
    model: dict[bytes, tuple[bytes, int | None]] = {}

    def alive(key: bytes) -> bool:
        entry = model.get(key)
        return entry is not None and (entry[1] is None or clock.now <= entry[1])

    for n, (kind, k, amount, keep) in enumerate(ops):
        key = b"k%d" % k
        if kind == "set":
            deadline = None if amount is None else clock.now + amount
            if deadline is None and keep and alive(key):
                deadline = model[key][1]
            store.set(key, b"v%d" % n, None if amount is None else clock.now + amount, keep_ttl=keep)
            model[key] = (b"v%d" % n, deadline)
        elif kind == "delete":
            assert store.delete(key) is alive(key)
            model.pop(key, None)
        elif kind == "expire":
            assert store.exists(key) is alive(key)
            if alive(key):
                store.set_deadline(key, clock.now + (amount or 0))
                model[key] = (model[key][0], clock.now + (amount or 0))
        elif kind == "tick":
            clock.now += k
        elif kind == "active":
            store.active_expire(budget=10.0)
        else:
            assert store.get(key) == (model[key][0] if alive(key) else None)
            assert store.deadline(key) == (model[key][1] if alive(key) else None)
    assert sorted(store.keys()) == sorted(key for key in model if alive(key))


# (pattern, string, matches) as Redis 7.0's stringmatchlen decides them; every row was checked against a
# real redis-server with SET string + KEYS pattern (except the empty string under '*', see below).
REDIS_GLOB_TABLE = [
    (b"*", b"anything", True),
    (b"*", b"", False),  # stringmatchlen says no; KEYS * still lists the empty key by skipping the match
    (b"", b"", True),
    (b"", b"a", False),
    (b"a", b"", False),
    (b"**", b"", False),
    (b"h?llo", b"hello", True),
    (b"h?llo", b"hllo", False),
    (b"h*llo", b"hllo", True),
    (b"h*llo", b"heeeello", True),
    (b"h[ae]llo", b"hello", True),
    (b"h[ae]llo", b"hillo", False),
    (b"h[^e]llo", b"hallo", True),
    (b"h[^e]llo", b"hello", False),
    (b"h[a-b]llo", b"hbllo", True),
    (b"h[a-b]llo", b"hcllo", False),
    (b"h[b-a]llo", b"hallo", True),  # a reversed range is swapped
    (b"h\\*llo", b"h*llo", True),
    (b"h\\*llo", b"hello", False),
    (b"h\\?llo", b"hello", False),
    (b"\\\\", b"\\", True),
    (b"[abc", b"a", True),  # an unterminated set ends with the pattern
    (b"[abc", b"d", False),
    (b"[", b"[", False),
    (b"[^", b"x", True),
    (b"[]", b"]", False),  # ']' right after '[' closes an empty set
    (b"[]]", b"]", False),
    (b"[^]", b"x", True),
    (b"[a-]", b"-", False),  # 'a-]' is the range ']'..'a', and the set is left unterminated
    (b"[a-]", b"_", True),
    (b"[-a]", b"-", True),
    (b"[\\]]", b"]", True),
    (b"[\\-z]", b"-", True),
    (b"[\\-z]", b"m", False),
    (b"a*b*c", b"axxbyyc", True),
    (b"a*b*c", b"axxbyy", False),
    (b"*a", b"bbba", True),
    (b"*a", b"bbab", False),
    (b"a*", b"a", True),
    (b"*?", b"", False),
    (b"*?*", b"x", True),
    (b"?*?", b"x", False),
    (b"\\", b"\\", True),  # a trailing backslash is literal
    (b"a\\", b"a\\", True),
    (b"user:*", b"user:1", True),
    (b"user:?", b"user:10", False),
    (b"[0-9]*", b"7up", True),
    (b"*[^0-9]", b"abc1", False),
    (b"HELLO", b"hello", False),  # KEYS is case-sensitive
    (b"h[A-Z]llo", b"hello", False),
    (b"a*" * 32 + b"b", b"a" * 50, False),  # Redis's regression test for runaway backtracking
]


@pytest.mark.parametrize(("pattern", "string", "expected"), REDIS_GLOB_TABLE)
def test_glob_matches_redis(pattern: bytes, string: bytes, expected: bool) -> None:
    assert glob_match(pattern, string) is expected


def test_glob_is_not_fnmatch() -> None:
    # fnmatch uses '!' for negation and has no backslash escapes; Redis uses '^' and '\\'.
    assert glob_match(b"[!a]", b"!")
    assert not glob_match(b"[!a]", b"b")
    assert glob_match(b"\\[x]", b"[x]")


@given(st.binary(max_size=12))
def test_glob_literal_pattern_matches_only_itself(s: bytes) -> None:
    escaped = b"".join(b"\\" + bytes([c]) for c in s)
    assert glob_match(escaped, s)
    assert glob_match(b"*" + escaped + b"*", b"x" + s + b"y")
    assert not glob_match(escaped + b"?", s)


@given(st.from_regex(rb"[0-9]{1,400}", fullmatch=True))
@example(b"9" * 299)
@example(b"1" + b"0" * 308)  # 1e308: a double still
@example(b"9" * 309)  # past the largest double
@example(b"0" * 350)
def test_plain_integer_scores_read_as_strtod_reads_them(text: bytes) -> None:
    # parse_float reads a plain integer without strtod's regular expression: the same value, and the same refusal
    # of a number too big for a double.
    value, end, erange = strtod(text)
    assert parse_float(text) == (None if erange or end != len(text) else value)
