"""A log follower that falls behind gets a marker line saying how many lines it missed."""

from __future__ import annotations

from server.core.bus import EventBus
from server.core.events import ActivityLogged, Event, LogLineReceived, log_gap_line


def drain(sub: object) -> list[Event]:
    out: list[Event] = []
    while (event := sub.get_nowait()) is not None:  # type: ignore[attr-defined]
        out.append(event)
    return out


def lines(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.container_id, e.line) for e in events if isinstance(e, LogLineReceived)]


async def test_dropped_lines_are_told_before_the_lines_that_follow_them() -> None:
    bus = EventBus()
    sub = bus.subscribe_raw(maxsize=10)
    for i in range(25):
        bus.publish(LogLineReceived(container_id="c", line=f"l{i}"))
    got = lines(drain(sub))
    assert got[0] == ("c", log_gap_line(15))
    assert got[1:] == [("c", f"l{i}") for i in range(15, 25)]
    assert sub.dropped == 15


async def test_each_container_gets_its_own_count_and_other_events_make_no_marker() -> None:
    bus = EventBus()
    sub = bus.subscribe_raw(maxsize=4)
    bus.publish(ActivityLogged(activity_type="x", container_id=None, message="m"))
    bus.publish(LogLineReceived(container_id="a", line="a0"))
    bus.publish(LogLineReceived(container_id="b", line="b0"))
    bus.publish(LogLineReceived(container_id="a", line="a1"))
    for i in range(3):  # drops the activity line, a0 and b0
        bus.publish(LogLineReceived(container_id="c", line=f"c{i}"))
    got = lines(drain(sub))
    markers = sorted(got[:2])
    assert markers == [("a", log_gap_line(1)), ("b", log_gap_line(1))]
    assert got[2:] == [("a", "a1"), ("c", "c0"), ("c", "c1"), ("c", "c2")]
    # a follower that keeps up gets no marker
    bus.publish(LogLineReceived(container_id="a", line="a2"))
    assert lines(drain(sub)) == [("a", "a2")]
