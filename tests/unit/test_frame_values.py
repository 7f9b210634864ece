"""The value cap: hostile 1 MiB frames are refused before parsing, legit ones still decode,
and either way decoding stays within 4x the frame maximum (tracemalloc peak)."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.errors import FrameError
from server.core.frame_values import MIN_VALUES, max_values, too_many_values
from server.core.frames import decode_body
from tests.fuzz.amplification import at_the_cap, legit, uncapped

MIB = 1 << 20
LIMIT = max_values(MIB)
_PEAK_BOUND = 4 * MIB
"""Before the cap, 1 MiB of `[{},{},…]` peaked at 25x (bench/RESULTS.md)."""


def _peak_of_decoding(body: bytes) -> tuple[dict[str, Any] | FrameError, int]:
    tracemalloc.start()
    try:
        try:
            outcome: dict[str, Any] | FrameError = decode_body(body, MIB)
        except FrameError as err:
            outcome = err
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_limit_follows_the_frame_maximum() -> None:
    assert LIMIT == 16_384
    assert max_values(4096) == MIN_VALUES


@pytest.mark.parametrize("name", list(uncapped(MIB)))
def test_hostile_frames_are_refused_before_parsing(name: str) -> None:
    outcome, peak = _peak_of_decoding(uncapped(MIB)[name])
    assert isinstance(outcome, FrameError)
    assert f"more than {LIMIT} JSON values" in str(outcome)
    # Refused by counting, not by parsing: well under the 4x a parse may take.
    assert peak < MIB // 2, f"{peak} bytes traced while refusing {name}"


@pytest.mark.parametrize("name", list(at_the_cap(MIB, LIMIT)))
def test_frames_at_the_cap_decode_within_4x(name: str) -> None:
    body = at_the_cap(MIB, LIMIT)[name]
    outcome, peak = _peak_of_decoding(body)
    assert isinstance(outcome, dict), outcome
    assert peak < _PEAK_BOUND, f"{peak / MIB:.2f}x traced decoding {name}"
    # One more value and the same shape is refused.
    with pytest.raises(FrameError, match="JSON values"):
        decode_body(body.replace(b'"a":[', b'"a":[0,', 1), MIB)


@pytest.mark.parametrize("name", list(legit(MIB)))
def test_legit_frames_still_decode(name: str) -> None:
    body = legit(MIB)[name]
    assert len(body) <= MIB
    outcome, peak = _peak_of_decoding(body)
    assert isinstance(outcome, dict), outcome
    assert peak < _PEAK_BOUND


def _reference(value: Any) -> int:
    """`{ [ , :` that json.dumps writes for `value`, from the value itself."""
    if isinstance(value, dict):
        return 1 + len(value) + max(len(value) - 1, 0) + sum(map(_reference, value.values()))
    if isinstance(value, list):
        return 1 + max(len(value) - 1, 0) + sum(map(_reference, value))
    return 0


_TRICKY_TEXT = st.text(alphabet=st.sampled_from('{[,:]}"\\ aé\n\u2603'), max_size=12)
_VALUES = st.recursive(
    st.none() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TRICKY_TEXT, inner, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(_TRICKY_TEXT, _VALUES, max_size=6), st.booleans())
def test_the_count_is_exact_outside_strings(message: dict[str, Any], ascii_only: bool) -> None:
    # Strings full of quotes, backslashes and punctuation must not count; containers must.
    body = json.dumps(message, ensure_ascii=ascii_only).encode()
    count = _reference(message)
    assert not too_many_values(body, count)
    assert too_many_values(body, count - 1)


_PUNCTUATION = '{[,:]} "\\ é'


@pytest.mark.parametrize(
    "message",
    [
        {"text": _PUNCTUATION * 20_000},  # one long string, escapes and all
        {"text": "plain, long: {text} [without escapes]" * 1_000, "n": [1, 2]},
        {"k": ["x" * 1_023, "y" * 1_024, "z,:" * 400, '"' * 1_025]},  # around the long-string size
        {"list": [{"s": f"{i}:{_PUNCTUATION}"} for i in range(2_000)]},  # many short strings
        {"mixed": [_PUNCTUATION * (i % 3 * 600) for i in range(300)]},
    ],
    ids=["long_escaped", "long_plain", "near_the_long_size", "many_short", "mixed"],
)
def test_the_count_is_exact_around_long_strings(message: dict[str, Any]) -> None:
    body = json.dumps(message, ensure_ascii=False).encode()
    count = _reference(message)
    assert not too_many_values(body, count)
    assert too_many_values(body, count - 1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "body",
    [
        b'{"a":"' + b',\\"' * (MIB // 3 - 4),  # never closed: escaped quote after escaped quote
        b'{"a":"' + b",\\" * (MIB // 2 - 8) + b'"',  # the last quote is escaped too
        b'"a,"' * (MIB // 4),  # strings without separators: not JSON
    ],
    ids=["open_string_of_escaped_quotes", "open_string_of_commas", "strings_without_separators"],
)
def test_broken_strings_are_counted_in_one_pass(body: bytes) -> None:
    # A search restarting at every escaped quote would take hours here (quadratic).
    with pytest.raises(FrameError):
        decode_body(body, MIB)
