"""ActivityList: recent activity and crash reports, newest last."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import RichLog

from flowmgr_tui.formatting import clock
from server.core.events import ActivityLogged, ContainerCrashed

__all__ = ["ActivityList", "activity_line", "crash_lines"]

_TYPE_STYLE = {"container_crash": "bold red", "container_error": "red", "health_warning": "yellow"}


def activity_line(ev: ActivityLogged, names: dict[str, str]) -> Text:
    """`12:00:01 container_stopped web-1: stopped`."""
    who = names.get(ev.container_id or "", (ev.container_id or "")[:12])
    text = Text(f"{clock(ev.at)} ")
    text.append(ev.activity_type, style=_TYPE_STYLE.get(ev.activity_type, "cyan"))
    text.append(f" {who}: {ev.message}" if who else f" {ev.message}")
    return text


def crash_lines(ev: ContainerCrashed, tail: int = 5) -> list[Text]:
    """`CRASH web-1 exit 3: Exited with code 3` plus the last lines it printed."""
    head = Text(f"{clock(ev.at)} ")
    head.append(f"CRASH {ev.name} exit {ev.exit_code}: {ev.error}", style="bold red")
    return [head, *(Text(f"    | {line}", style="bright_black") for line in ev.logs[-tail:])]


class ActivityList(RichLog):
    """A bounded log of activity lines; crash reports get their log tail underneath."""

    def __init__(
        self, *, crash_tail: int = 5, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(
            max_lines=1000, wrap=False, markup=False, highlight=False, id=id, classes=classes
        )
        self.crash_tail = crash_tail

    def add(
        self, items: Iterable[ActivityLogged | ContainerCrashed], names: dict[str, str]
    ) -> None:
        """Append items in the order given."""
        lines: list[Text] = []
        for item in items:
            if isinstance(item, ContainerCrashed):
                lines.extend(crash_lines(item, self.crash_tail))
            elif item.activity_type != "container_crash":  # the crash report says it better
                lines.append(activity_line(item, names))
        if lines:
            # One write per batch: each write measures and scrolls once, and adoption can bring
            # a line for each of hundreds of containers in the batch that fills the table.
            self.write(Text("\n").join(lines))

    @property
    def shown_text(self) -> str:
        """Everything shown (tests read this)."""
        return "\n".join(strip.text for strip in self.lines)
