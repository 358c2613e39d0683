"""RespParser on its own: framing, limits, inline splitting, empty lines, whatever the chunking (sans-I/O).

Expected results were taken from a real redis-server 7.0 given the same bytes.
"""

from __future__ import annotations

import itertools
import os
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resp_server import _compiled
from resp_server import parser as resp_proto
from resp_server.parser import MAX_ARRAY, MAX_BULK, MAX_INLINE, RespParser, encode_request, split_inline
from resp_server.replies import parse_int64
from resp_server.session import RespSession
from resp_server.store import KeyValueStore

resp_proto_split = resp_proto.split_inline

_BUILT = _compiled.SPEEDUPS is not None


@pytest.fixture(scope="module", autouse=True, params=["python", "compiled"])
def framer(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs with each framer as the parsers' default (the compiled one where it is built)."""
    compiled = request.param == "compiled"
    if compiled and not _BUILT:
        if os.environ.get("NETLOOP_EXPECT_COMPILED") == "1":
            pytest.fail("resp_server._speedups is not built")
        pytest.skip("resp_server._speedups is not built (or NETLOOP_PURE=1)")
    default = _compiled.COMPILED
    _compiled.COMPILED = compiled
    try:
        yield request.param
    finally:
        _compiled.COMPILED = default


def cmd(*args: str | bytes) -> bytes:
    return encode_request([a.encode() if isinstance(a, str) else a for a in args])


def feed_all(parser: RespParser, chunks: list[bytes]) -> list[list[bytes]]:
    commands: list[list[bytes]] = []
    for chunk in chunks:
        commands.extend(parser.feed(chunk))
    return commands


# -- integers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"0", 0),
        (b"7", 7),
        (b"-7", -7),
        (b"9223372036854775807", 2**63 - 1),
        (b"-9223372036854775808", -(2**63)),
        (b"9223372036854775808", None),
        (b"-9223372036854775809", None),
        (b"", None),
        (b"-", None),
        (b"01", None),
        (b"-0", None),
        (b"+1", None),
        (b" 1", None),
        (b"1 ", None),
        (b"1_000", None),
        (b"1.5", None),
        (b"\xd9\xa1", None),  # a non-ASCII digit
        (b"1" * 21, None),
    ],
)
def test_parse_int64_follows_redis_string2ll(text: bytes, value: int | None) -> None:
    assert parse_int64(text) == value


# -- parser -----------------------------------------------------------------------------------------------


def test_parser_reads_multibulk_and_inline_pipelined_in_one_chunk() -> None:
    parser = RespParser()
    data = cmd("SET", "k", "v") + b"PING\r\n" + cmd("GET", "k") + b"ECHO  hi  there\n" + cmd("DEL", "")
    assert parser.feed(data) == [
        [b"SET", b"k", b"v"],
        [b"PING"],
        [b"GET", b"k"],
        [b"ECHO", b"hi", b"there"],
        [b"DEL", b""],
    ]
    assert parser.error is None


def test_parser_handles_every_split_point_byte_by_byte() -> None:
    data = cmd("SET", "key", b"a\r\nbinary\x00value") + b"PING\r\n" + cmd("MGET", "a", "b")
    expected = [[b"SET", b"key", b"a\r\nbinary\x00value"], [b"PING"], [b"MGET", b"a", b"b"]]
    for cut in range(len(data) + 1):
        assert feed_all(RespParser(), [data[:cut], data[cut:]]) == expected
    assert feed_all(RespParser(), [data[i : i + 1] for i in range(len(data))]) == expected


def test_parser_skips_empty_requests() -> None:
    assert RespParser().feed(b"*0\r\n*-1\r\n\r\n   \r\nPING\r\n") == [[b"PING"]]


# -- empty lines: skipped a run at a time, and bounded ------------------------------------------------------


@pytest.mark.parametrize("blank", [b"\n", b"\r\n", b" \t\r\n", b"\x0b\r\n"])
def test_empty_lines_are_skipped_a_run_at_a_time(monkeypatch: pytest.MonkeyPatch, blank: bytes) -> None:
    # One Python step per empty line made 10 MB of them cost seconds: a run must be skipped in one step, so the
    # inline splitter (called once per line the slow way) never sees them.
    calls = []
    monkeypatch.setattr(resp_proto, "split_inline", lambda line: calls.append(line) or resp_proto_split(line))
    parser = RespParser()
    run = blank * (MAX_INLINE // len(blank))
    assert parser.feed(run + b"PING\r\n" + run + b"PING\r\n") == [[b"PING"], [b"PING"]]
    assert parser.error is None
    assert len(calls) <= 4


@pytest.mark.parametrize("blank", [b"\n", b"\r\n", b" \r\n", b"*0\r\n"])
def test_ten_megabytes_of_empty_lines_are_a_protocol_error(blank: bytes) -> None:
    session = RespSession(KeyValueStore())
    flood = blank * (10 * 1024 * 1024 // len(blank))
    reply, close = session.receive(b"PING\r\n" + flood)
    assert (reply, close) == (b"+PONG\r\n-ERR Protocol error: too many empty lines before a request\r\n", True)


def test_empty_lines_are_counted_across_reads() -> None:
    parser = RespParser(max_inline=100)
    assert parser.feed(b"PING\r\n" + b"\r\n" * 30) == [[b"PING"]]
    assert parser.feed(b"\r\n" * 20) == []
    assert parser.error is None  # 100 bytes: at the limit
    assert parser.feed(b"\n") == []
    assert parser.error == "Protocol error: too many empty lines before a request"


def test_a_request_starts_a_new_count_of_empty_lines() -> None:
    parser = RespParser(max_inline=100)
    for _ in range(5):
        assert parser.feed(b"\r\n" * 40) == []
        assert parser.feed(b"\n" * 16 + b"*0\r\n PING\r\n") == [[b"PING"]]  # 100 empty bytes, then a request
        assert parser.feed(cmd("GET", "k") + b"\r\n" * 25) == [[b"GET", b"k"]]
        assert parser.feed(b"\r\n" * 25 + cmd("GET", "k")) == [[b"GET", b"k"]]  # a run of 100 bytes
    assert parser.error is None


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from([b"\r\n", b"\n", b" \r\n", b"\t\n", b"*0\r\n", b"PING\r\n", b"*1\r\n$1\r\nx\r\n"])),
    st.lists(st.integers(0, 400), max_size=4),
)
def test_empty_lines_count_the_same_whatever_the_split(pieces: list[bytes], cuts: list[int]) -> None:
    # Lines stay shorter than max_inline, whose bound on a line still arriving depends on the split (as in Redis).
    data = b"".join(pieces)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    whole, split, bytewise = RespParser(max_inline=16), RespParser(max_inline=16), RespParser(max_inline=16)
    expected = whole.feed(data)
    assert feed_all(split, chunks) == expected
    assert feed_all(bytewise, [data[i : i + 1] for i in range(len(data))]) == expected
    assert split.error == bytewise.error == whole.error


def test_bulk_of_exactly_the_limit_is_accepted() -> None:
    parser = RespParser(max_bulk=10)
    assert parser.feed(cmd("SET", "k", b"x" * 10)) == [[b"SET", b"k", b"x" * 10]]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"SET k v", [b"SET", b"k", b"v"]),
        (b"  GET\t k  ", [b"GET", b"k"]),
        (b"SET \"a b\" 'c d'", [b"SET", b"a b", b"c d"]),
        (b'ECHO "\\x41\\n\\t\\\\\\""', [b"ECHO", b'A\n\t\\"']),
        (b"ECHO 'it\\'s'", [b"ECHO", b"it's"]),
        (b'ECHO ab"c d"e', None),  # a closing quote must be followed by a space
        (b'ECHO a"b c" x', [b"ECHO", b"ab c", b"x"]),
        (b'ECHO ""', [b"ECHO", b""]),
        (b'GET "a', None),
        (b"GET 'a", None),
    ],
)
def test_split_inline_like_redis_sdssplitargs(line: bytes, words: list[bytes] | None) -> None:
    assert split_inline(line) == words


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*x\r\n", "Protocol error: invalid multibulk length"),
        (b"*01\r\n", "Protocol error: invalid multibulk length"),
        (b"*\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "Protocol error: expected '$', got '+'"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$01\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$4\r\nPINGxx", "Protocol error: expected CRLF after bulk data"),
        (b'GET "a\r\n', "Protocol error: unbalanced quotes in request"),
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
    ],
)
def test_malformed_request_sets_error_after_earlier_commands(data: bytes, message: str) -> None:
    parser = RespParser()
    assert parser.feed(b"PING\r\n" + data + b"PING\r\n") == [[b"PING"]]
    assert parser.error == message
    assert parser.feed(b"PING\r\n") == []  # a failed parser stays failed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*1\r\n$11\r\n", "Protocol error: invalid bulk length"),
        (b"*5\r\n", "Protocol error: invalid multibulk length"),
        (b"x" * 17, "Protocol error: too big inline request"),
        (b"*" + b"1" * 17, "Protocol error: too big mbulk count string"),
        (b"*1\r\n$" + b"1" * 17, "Protocol error: too big bulk count string"),
    ],
)
def test_limits_are_enforced_before_the_data_arrives(data: bytes, message: str) -> None:
    parser = RespParser(max_bulk=10, max_array=4, max_inline=16)
    assert parser.feed(data) == []
    assert parser.error == message


def test_line_limit_holds_when_the_line_arrives_in_pieces() -> None:
    parser = RespParser(max_inline=16)
    for _ in range(16):
        assert parser.feed(b"a") == []
    assert parser.error is None
    parser.feed(b"b")
    assert parser.error == "Protocol error: too big inline request"


def test_default_limits() -> None:
    assert (MAX_BULK, MAX_ARRAY, MAX_INLINE) == (64 * 1024 * 1024, 1024 * 1024, 64 * 1024)
    parser = RespParser()
    assert parser.feed(b"*%d\r\n" % (MAX_ARRAY + 1)) == []
    assert parser.error == "Protocol error: invalid multibulk length"


def test_declared_length_does_not_allocate_memory() -> None:
    parser = RespParser()
    tracemalloc.start()
    try:
        parser.feed(b"*1000000\r\n$%d\r\nabc" % MAX_BULK)
        parser.feed(b"def")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parser.error is None
    assert peak < 1024 * 1024


def test_large_bulk_in_many_chunks_arrives_whole() -> None:
    value = bytes(range(256)) * 4096  # 1 MiB
    data = cmd("SET", "k", value)
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    assert feed_all(RespParser(), chunks) == [[b"SET", b"k", value]]


_args = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@given(st.lists(_args, max_size=8), st.lists(st.integers(0, 10_000), max_size=10))
def test_encoded_commands_parse_back_whatever_the_split(commands: list[list[bytes]], cuts: list[int]) -> None:
    data = b"".join(encode_request(c) for c in commands)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    parser = RespParser()
    assert feed_all(parser, chunks) == commands
    assert parser.error is None


# Words an inline request can carry unquoted; no '*', which opens a multibulk request at the start of a line.
_word = st.binary(min_size=1, max_size=8).filter(lambda w: not set(w) & set(b" \t\r\n\x0b\x0c\"'*"))


@given(
    st.lists(st.tuples(st.booleans(), st.lists(_word, min_size=1, max_size=4)), max_size=8),
    st.integers(0, 1000),
)
def test_inline_and_multibulk_mix(commands: list[tuple[bool, list[bytes]]], cut: int) -> None:
    data = b"".join(b" ".join(words) + b"\r\n" if inline else encode_request(words) for inline, words in commands)
    cut %= len(data) + 1
    assert feed_all(RespParser(), [data[:cut], data[cut:]]) == [words for _, words in commands]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_never_raises_out_of_receive(chunks: list[bytes]) -> None:
    session = RespSession(KeyValueStore(), max_bulk=1024, max_array=64, max_inline=256)
    for chunk in chunks:
        reply, close = session.receive(chunk)
        assert isinstance(reply, bytes)
        if close:
            assert session.receive(b"PING\r\n") == (b"", True)
            break


@given(st.lists(st.sampled_from([b"*", b"$", b"\r\n", b"-1", b"3", b"\r", b"\n", b"PING", b'"', b"0"]), max_size=30))
def test_protocol_like_garbage_never_raises(pieces: list[bytes]) -> None:
    session = RespSession(KeyValueStore())
    reply, close = session.receive(b"".join(pieces))
    assert not close or reply.endswith(b"\r\n")


@settings(max_examples=200)
@given(
    st.lists(
        st.sampled_from(
            [b"*", b"$", b"\r\n", b"-1", b"1", b"3", b"\n", b" ", b'"', b"PING", b"SET", b"MULTI", b"EXEC"]
        ),
        max_size=40,
    ),
    st.integers(0, 200),
)
def test_replies_do_not_depend_on_how_bytes_are_split(pieces: list[bytes], cut: int) -> None:
    # The line limit is left at its default: when a line is seen too long depends on the split, as in Redis.
    data = b"".join(pieces)
    whole = RespSession(KeyValueStore(), max_bulk=8, max_array=8).receive(data)
    split = RespSession(KeyValueStore(), max_bulk=8, max_array=8)
    first, closed = split.receive(data[:cut])
    second, close = split.receive(data[cut:])
    assert (first + second, closed or close) == whole


def test_a_parser_without_the_compiled_framer_says_so(framer: str) -> None:
    if _BUILT:
        assert feed_all(RespParser(compiled=True), [cmd("GET", "k")]) == [[b"GET", b"k"]]
    else:
        with pytest.raises(RuntimeError, match="not built"):
            RespParser(compiled=True)


@pytest.mark.parametrize(
    "data",
    [
        b"*2\r\n$03\r\nGET\r\n$1\r\nk\r\n",  # a leading zero: the general parser's
        b"*02\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        b"*+2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        b"*2\r\n$-1\r\n$1\r\nk\r\n",
        b"*2\r\n$3\r\nGETX\r\n$1\r\nk\r\n",  # a bulk longer than it says
        b"*2\r\n$3\r\nGET\r\n:1\r\n",
        b"*1\r\n$4\r\nPING\r\nPING\r\n*1\r\n$4\r\nPING\r\n",  # inline after multibulk, multibulk after
        b"*0\r\n*1\r\n$4\r\nPING\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\na\r\n\r\n",  # a CRLF inside a bulk
        b"*9\r\n$1\r\na\r\n",  # more bulks declared than there are bytes
        b"*99999999999999999999\r\n",
        b"*1\r\n$99999999999999999999\r\n",
        b"*1\r\n$9\r\n" + b"x" * 9 + b"\r\n",  # a bulk over max_bulk below
        b"*9\r\n" + b"$1\r\nx\r\n" * 9,  # an array over max_array below
    ],
)
def test_both_framers_read_unusual_headers_alike(data: bytes) -> None:
    if not _BUILT:
        pytest.skip("resp_server._speedups is not built (or NETLOOP_PURE=1)")
    results = []
    for compiled in (False, True):
        parser = RespParser(max_bulk=8, max_array=8, compiled=compiled)
        results.append((feed_all(parser, [data, b"*1\r\n$4\r\nPING\r\n"]), parser.error))
    assert results[0] == results[1]


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(
            [b"*", b"$", b"\r\n", b"-1", b"0", b"1", b"2", b"3", b"9", b"\n", b" ", b"a", b"PING", b"*1\r\n$1\r\nx\r\n"]
        ),
        max_size=40,
    ),
    st.integers(0, 200),
)
def test_both_framers_frame_protocol_like_bytes_alike(pieces: list[bytes], cut: int) -> None:
    if not _BUILT:
        pytest.skip("resp_server._speedups is not built (or NETLOOP_PURE=1)")
    data = b"".join(pieces)
    results = []
    for compiled in (False, True):
        parser = RespParser(max_bulk=8, max_array=8, compiled=compiled)
        results.append((feed_all(parser, [data[:cut], data[cut:]]), parser.error, parser.in_request))
    assert results[0] == results[1]


def test_repeated_names_and_keys_keep_their_own_bytes(framer: str) -> None:
    # The compiled framer shares a name or key equal to the previous command's: only an equal one.
    commands = [[b"GET", b"a"], [b"GET", b"b"], [b"get", b"b"], [b"SET", b"b", b"b"], [b"SET", b"ba", b"b"], [b"S"]]
    commands += [[b"SET", b""], [b"SET", b"", b""], [b"SET", b"\0"]]
    assert RespParser().feed(b"".join(encode_request(c) for c in commands)) == commands
