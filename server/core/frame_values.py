"""How many JSON values a frame body holds, counted on its bytes before it is parsed.

A parsed frame costs its Python objects, not its bytes: 1 MiB of `[{},{},…]` decodes to about
25 MiB. Each value or key beyond the first follows one of `{ [ , :` outside strings, so
counting those bounds the objects `json.loads` could build, even partway through a body it then
refuses. Strings cost about their own length, so they are skipped, not counted.
"""

from __future__ import annotations

import re

__all__ = ["BYTES_PER_VALUE", "MIN_VALUES", "max_values", "too_many_values"]

BYTES_PER_VALUE = 64
"""One value per this many bytes of the frame maximum: the costliest value measured (a
one-key object, `{"":0},`) is ~64 bytes of Python objects per counted character, so values stay
within about 1x the frame maximum on top of the body's own text and strings (~3x in all)."""
MIN_VALUES = 256
"""Floor for small frame maxima (at most ~16 KiB of objects), so that `{}` always fits."""

_CHARS = [b"{", b"[", b",", b":"]
_LONG_STRING = 1024
"""Strings longer than this, without escapes, are skipped with find() instead of the regex."""
_UNITS_PER_MATCH = 64
"""Few enough that the regex engine's own stack (~180 bytes a unit) stays small (~12 KiB)."""
# A string, then more (text outside strings, short string) units, anchored where a string
# starts; a long string ends the run, so that it may be skipped with find(). Possessive
# quantifiers: a string left open fails in one linear pass instead of backtracking, and
# anchoring (match, not search) never restarts inside a string at an escaped quote. The repeat
# of units is greedy, not possessive: before 3.11.5 (Debian 12 ships 3.11.2), a possessive
# repeat of a group that backtracks inside could end at the wrong place (CPython gh-106052):
# a unit "matched" 1024 characters into a long string, and valid frames were refused. Each
# unit starts at a quote, so greedy finds the same units, keeping at most 64 backtrack marks.
_STRING_PATTERN = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_SHORT_STRING = rb'"(?:[^"\\]|\\.){0,%d}+"' % _LONG_STRING
_UNITS = re.compile(
    rb'%s(?:[^"]*+%s){0,%d}' % (_STRING_PATTERN, _SHORT_STRING, _UNITS_PER_MATCH - 1), re.DOTALL
)
_STRING = re.compile(_STRING_PATTERN, re.DOTALL)


def max_values(max_frame_bytes: int) -> int:
    """The most values a frame may hold under this frame maximum."""
    return max(MIN_VALUES, max_frame_bytes // BYTES_PER_VALUE)


def too_many_values(body: bytes | bytearray, limit: int) -> bool:
    """Whether `body` has more than `limit` of `{ [ , :` outside its strings (exactly, when it
    is valid JSON). Counts only as far as it must: most bodies are settled by their length or
    by one pass that includes the strings' own punctuation."""
    if len(body) <= limit or _structural(body) <= limit:
        return False  # an upper bound is already within the limit
    return _outside_strings(body, limit) > limit


def _structural(data: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
    # count() runs at memchr speed and copies nothing.
    return sum(data.count(char, start, end) for char in _CHARS)


def _outside_strings(body: bytes | bytearray, limit: int) -> int:
    """The count outside strings, or some number over `limit` once it is plainly over.

    Text between strings is counted with count(); a long string is skipped with find() (both
    C loops over memory), or, when it holds escapes, with one regex match; short strings go to
    the regex engine a few dozen at a time, so the pieces `re.sub` keeps between them stay few
    even in a body of nothing but short strings. In valid JSON each string (a key or a value)
    follows its own `{ [ , :`, so n strings imply n - 1 of them: junk of strings without
    separators is over the limit as soon as its strings are.
    """
    count = 0
    pos = 0
    with memoryview(body) as view:
        while count <= limit and (start := body.find(b'"', pos)) >= 0:
            count += _structural(body, pos, start)
            # A long string is skipped alone, so it is scanned once.
            end = body.find(b'"', start + 1) + 1
            if body.find(b"\\", start, end) >= 0:  # escapes: only the regex finds its end
                end = match.end() if (match := _STRING.match(body, start)) else 0
            if end - start > _LONG_STRING:
                pos = end
                continue
            if (match := _UNITS.match(body, start)) is None:
                pos = start
                break
            outside, strings = _STRING.subn(b"", view[start : match.end()])
            count += max(_structural(outside), strings - 1)
            pos = match.end()
    if count <= limit:
        # The rest holds no complete string: all of it counts (an unclosed string makes the
        # body invalid JSON there, so over-counting it refuses nothing valid).
        count += _structural(body, pos)
    return count
