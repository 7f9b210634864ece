"""JSON bodies that decode into as many Python objects as their size allows, and legit ones.

Shared by tests/unit/test_frame_values.py, the frame fuzz and bench/fuzz_frames.py.
"""

from __future__ import annotations

import json

__all__ = ["uncapped", "at_the_cap", "legit"]

# Costliest first: Python objects per byte of body (measured, see bench/RESULTS.md).
_ITEMS = {
    "empty objects": b"{}",
    "empty lists": b"[]",
    "one-key objects": b'{"":0}',
    "one-element lists": b"[0]",
    "objects holding an object": b'{"":{}}',
    "floats": b"1.5",
    "ints": b"0",
    "empty strings": b'""',
}
_PROSE = b"Flows send logs, numbers: and {bracketed} [notes], like this one; "


def _values(item: bytes) -> int:
    """Values (and keys) one item adds to a list: its own `{ [ , :` and the comma after it."""
    return sum(item.count(char) for char in (b"{", b"[", b",", b":")) + 1


def uncapped(size: int) -> dict[str, bytes]:
    """`{"a":[item,item,…]}` of about `size` bytes, per item shape: far over any value cap."""
    out = {
        name: b'{"a":[' + b",".join([item] * ((size - 10) // (len(item) + 1))) + b"]}"
        for name, item in _ITEMS.items()
    }
    out["object with short keys"] = (
        b"{" + b",".join(b'"%d":0' % i for i in range(size // 12)) + b"}"
    )
    return out


def at_the_cap(size: int, max_values: int) -> dict[str, bytes]:
    """As many items as `max_values` allows, then one long string fills the body to `size`
    bytes (strings are not capped: they cost their length again, once decoded)."""
    out: dict[str, bytes] = {}
    for name, item in _ITEMS.items():
        items = b",".join([item] * ((max_values - 4) // _values(item)))
        pad = size - len(items) - len(b'{"a":[],"pad":""}')
        out[name] = b'{"a":[' + items + b'],"pad":"' + b"x" * pad + b'"}'
    return out


def legit(size: int) -> dict[str, bytes]:
    """Frames a flow might really send: prose (its punctuation inside one string), a JSON
    document embedded as a string, and 10,000 numbers."""
    prose = (_PROSE * (size // len(_PROSE) + 1))[: size - len(b'{"text":""}')]
    doc = json.dumps({"rows": [{"id": i, "tags": ["a", "b"]} for i in range(size // 64)]})
    return {
        "prose in one string": b'{"text":"' + prose + b'"}',
        "embedded JSON document": json.dumps({"document": doc}).encode(),
        "10,000 numbers": json.dumps({"n": list(range(10_000_000, 10_010_000))}).encode(),
    }
