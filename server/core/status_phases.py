"""When each flow's periodic status is reported: at its own phase of the interval.

The interval is cut into slots of about `SLOT_SECONDS`; a flow's slot comes from its id, so it is
the same every interval (every flow once per interval, the contract) and 1,000 flows are spread
evenly instead of all reported in one burst."""

from __future__ import annotations

import math
import zlib

__all__ = ["SLOT_SECONDS", "MAX_SLOTS", "slot_count", "slot_of"]

SLOT_SECONDS = 1.0
"""About how long one slot lasts: a second's reports go out together."""
MAX_SLOTS = 3600
"""A very long interval gets longer slots rather than a wake-up each second for nothing."""


def slot_count(interval: float) -> int:
    """How many slots `interval` seconds are cut into (at least one)."""
    return max(1, min(MAX_SLOTS, math.ceil(interval / SLOT_SECONDS - 1e-9)))


def slot_of(container_id: str, slots: int) -> int:
    """The slot of a flow: stable for its id, spread evenly over `slots` (ids are random)."""
    return zlib.crc32(container_id.encode()) % slots
