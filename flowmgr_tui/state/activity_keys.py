"""One activity line or crash report, recognised whichever way it arrived: live from the core,
or read back from the journal (where a crash's time went through an epoch float)."""

from __future__ import annotations

from collections.abc import Sequence

from server.core.events import ActivityLogged, ContainerCrashed

__all__ = ["Activity", "activity_key", "merge_activity"]

Activity = ActivityLogged | ContainerCrashed


def activity_key(item: Activity) -> tuple[object, ...]:
    """Equal for the live event and its journalled copy."""
    # Milliseconds: an epoch float (a crash's time on the wire) may not give the microsecond back.
    ms = round(item.at.timestamp() * 1000)
    if isinstance(item, ContainerCrashed):
        return ("crash", item.container_id, item.exit_code, ms)
    return ("activity", item.container_id, item.activity_type, item.message, ms)


def merge_activity(*sources: Sequence[Activity]) -> list[Activity]:
    """One list, oldest first, each item once: the journal's page and what the panel heard live
    overlap (the live ones may be newer than the page, or not journalled when it was off)."""
    seen: dict[tuple[object, ...], Activity] = {}
    for source in sources:
        for item in source:
            seen.setdefault(activity_key(item), item)
    return sorted(seen.values(), key=lambda item: item.at)
