"""The activity lines of flow messages: one per message up to a rate, then a count.

Every message a flow sends is published (and journalled) as `message_received`, whatever its
rate; its activity line repeats it for the people reading the activity log. A flow that sends
thousands of messages a second would otherwise fill that log (and the journal, and every
client) with a second and third copy of each message and push every other line out of the
panel's memory within a second. So each flow gets `flow.message_activity_per_second` lines per
second in each direction; the messages past that are counted into one line at the end of the
second ("N more messages received from flow X in the last second, not logged one by one").
Nothing goes unsaid: the count is logged, the messages themselves are all published.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from server.core.bus import EventBus
from server.core.events import ActivityLogged
from server.core.masking import mask_value

__all__ = ["MessageActivity", "Direction"]

Direction = Literal["message_sent", "message_received"]

_WORDS: dict[Direction, tuple[str, str]] = {
    "message_sent": ("Message sent to flow", "sent to flow"),
    "message_received": ("Message received from flow", "received from flow"),
}


@dataclass(eq=False)
class _Budget:
    """One flow, one direction: the current second's lines and what was not logged."""

    started: float = float("-inf")
    """Loop time the current second began."""
    logged: int = 0
    skipped: int = 0
    timer: asyncio.TimerHandle | None = None


def masked(message: dict[str, Any]) -> Any:
    """The message as an activity line shows it (secret-looking values masked)."""
    try:
        return mask_value(message)
    except RecursionError:
        return "<message nested too deeply to show>"


class MessageActivity:
    """Publishes the activity lines of the flows' messages, `per_second` at most per flow and
    direction (0: every message gets its line)."""

    def __init__(self, bus: EventBus, per_second: int) -> None:
        self._bus = bus
        self.per_second = per_second
        self._budgets: dict[tuple[str, Direction], _Budget] = {}

    def line(
        self, container_id: str, direction: Direction, message: dict[str, Any], at: datetime
    ) -> None:
        """One message went `direction`: its line, or one more for the count."""
        if not self.per_second:
            self._publish(container_id, direction, message, at)
            return
        key = (container_id, direction)
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = _Budget()
        clock = asyncio.get_running_loop().time()
        if clock - budget.started >= 1.0:
            self._say_skipped(key)
            budget.started, budget.logged = clock, 0
        if budget.logged < self.per_second:
            budget.logged += 1
            self._publish(container_id, direction, message, at)
            return
        budget.skipped += 1
        if budget.timer is None:  # said at the end of the second, even if no message follows
            budget.timer = asyncio.get_running_loop().call_at(
                budget.started + 1.0, self._say_skipped, key
            )

    def forget(self, container_id: str) -> None:
        """The flow's channel closed: say what is counted, forget its budgets."""
        for direction in _WORDS:
            key = (container_id, direction)
            if key in self._budgets:
                self._say_skipped(key)
                del self._budgets[key]

    def _publish(
        self, container_id: str, direction: Direction, message: dict[str, Any], at: datetime
    ) -> None:
        self._bus.publish(
            ActivityLogged(
                activity_type=direction,
                container_id=container_id,
                at=at,
                message=f"{_WORDS[direction][0]} {container_id[:12]}",
                details={"message": masked(message)},
            )
        )

    def _say_skipped(self, key: tuple[str, Direction]) -> None:
        budget = self._budgets.get(key)
        if budget is None:
            return
        if budget.timer is not None:
            budget.timer.cancel()
            budget.timer = None
        if not budget.skipped:
            return
        count, budget.skipped = budget.skipped, 0
        container_id, direction = key
        plural = "message" if count == 1 else "messages"
        self._bus.publish(
            ActivityLogged(
                activity_type=direction,
                container_id=container_id,
                message=(
                    f"{count} more {plural} {_WORDS[direction][1]} {container_id[:12]} in the "
                    f"last second, not logged one by one (flow.message_activity_per_second = "
                    f"{self.per_second})"
                ),
                details={"not_logged": count, "per_second": self.per_second},
            )
        )
