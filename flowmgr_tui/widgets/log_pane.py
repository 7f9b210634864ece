"""LogPane: a followed container's output with tail length, since, timestamps, pause, search,
wrap, and saving what it shows."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Label, RichLog

from flowmgr_tui.keymap import bindings
from flowmgr_tui.log_save import SaveError, question, save_lines
from flowmgr_tui.panel_config import LogDefaults
from flowmgr_tui.screens.confirm import ConfirmScreen
from flowmgr_tui.screens.path_prompt import PathPrompt
from server.core.container_info import parse_time

__all__ = ["LogPane", "LogLine", "TAIL_CHOICES", "SINCE_CHOICES", "split_stamp"]

TAIL_CHOICES: tuple[int, ...] = (100, 500, 2000, 20)
"""`t` cycles through these tail lengths."""
SINCE_CHOICES: tuple[tuple[float | None, str], ...] = (
    (None, "all"),
    (60.0, "1 m"),
    (300.0, "5 m"),
    (900.0, "15 m"),
    (3600.0, "1 h"),
)
"""`S` cycles through these: load the lines of the last N seconds (None: the tail)."""
_SINCE_SECONDS: dict[str, float | None] = {"1m": 60.0, "5m": 300.0, "15m": 900.0, "1h": 3600.0}
"""panel.toml's `logs.since` values (panel_config.SINCE_CHOICES; "all": the tail)."""


class LogLine(NamedTuple):
    """One line and when the engine (or, live, the manager) saw it; None: not known."""

    at: datetime | None
    text: str


def split_stamp(line: str) -> LogLine:
    """A `timestamps` line (`<RFC 3339> text`) as a LogLine; a line without one kept whole."""
    stamp, sep, text = line.partition(" ")
    at = parse_time(stamp) if sep and stamp[:1].isdigit() else None
    return LogLine(at, text) if at is not None else LogLine(None, line)


class LogPane(Vertical):
    """Keeps up to `max_lines` lines; shows those matching the search, unless paused."""

    BINDINGS = bindings("logs")

    paused: reactive[bool] = reactive(False)
    """While paused, new lines are kept but not shown."""
    wrap: reactive[bool] = reactive(False)
    tail: reactive[int] = reactive(TAIL_CHOICES[0])
    """How many old lines to load when following starts."""
    search: reactive[str] = reactive("")
    timestamps: reactive[bool] = reactive(False)
    """Each line shown after its time (UTC)."""
    since: reactive[float | None] = reactive(None)
    """Load the last N seconds instead of the tail (None: the tail)."""

    class TailChanged(Message):
        """The user asked for a different tail length: the screen reloads."""

        def __init__(self, tail: int) -> None:
            super().__init__()
            self.tail = tail

    class SinceChanged(Message):
        """The user chose another "since" preset: the screen reloads."""

        def __init__(self, since: float | None) -> None:
            super().__init__()
            self.since = since

    def __init__(
        self,
        *,
        max_lines: int = 5000,
        save_dir: str | None = None,
        defaults: LogDefaults | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        if defaults is not None:  # panel.toml's [logs]: how the pane opens
            self.set_reactive(LogPane.tail, defaults.tail)
            self.set_reactive(LogPane.wrap, defaults.wrap)
            self.set_reactive(LogPane.timestamps, defaults.timestamps)
            self.set_reactive(LogPane.since, _SINCE_SECONDS.get(defaults.since))
        self.max_lines = max_lines
        self.save_dir = save_dir
        """Where the save prompt proposes a file (the panel's machine; None: the working
        directory, else the home directory when that is gone)."""
        self.lines: deque[LogLine] = deque(maxlen=max_lines)
        """Everything received (bounded), matching or not."""
        self._held = 0

    def compose(self) -> ComposeResult:
        """Status line, search box, log."""
        with Horizontal(classes="log-toolbar"):
            yield Label("", id="log-status")
            yield Input(placeholder="search (/)", id="log-search", compact=True)
        yield RichLog(
            max_lines=self.max_lines, wrap=False, markup=False, highlight=False, id="log-view"
        )

    def on_mount(self) -> None:
        """Show what arrived before the view was there, and the status."""
        # not in compose: reading a reactive there runs its watchers before the log exists
        self.query_one(RichLog).wrap = self.wrap
        self._redraw()

    def load(self, lines: Iterable[LogLine | str]) -> None:
        """Replace everything with a fresh tail."""
        self.lines.clear()
        self.lines.extend(_line(x) for x in lines)
        self._redraw()

    def append(self, lines: Iterable[LogLine | str]) -> None:
        """Add live lines; shown at once unless paused or filtered out (a search keeps
        following: new matching lines arrive while it is active)."""
        views = self.query(RichLog)
        if not views:  # not composed yet (or being removed): kept, drawn on mount
            self.lines.extend(_line(x) for x in lines)
            return
        view = views.first()
        for line in map(_line, lines):
            self.lines.append(line)
            if self.paused:
                self._held += 1
            elif self._shows(line):
                view.write(self._text(line))
        if self.paused:
            self._status()

    @property
    def shown_text(self) -> str:
        """The lines currently visible in the log (tests read this)."""
        return "\n".join(strip.text for strip in self.query_one(RichLog).lines)

    def shown_lines(self) -> list[str]:
        """The kept lines the search lets through, as shown (with their times when on),
        unwrapped, without those a pause holds back: what `ctrl+s` saves."""
        kept = list(self.lines)[: len(self.lines) - self._held]
        return [self._shown(line) for line in kept if self._shows(line)]

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as the search term is typed."""
        event.stop()
        self.search = event.value

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter leaves the search box and keeps the filter."""
        event.stop()
        self.query_one(RichLog).focus()

    def watch_search(self) -> None:
        self._redraw()

    def watch_timestamps(self) -> None:
        self._redraw()

    def watch_wrap(self, wrap: bool) -> None:
        self.query_one(RichLog).wrap = wrap
        self._redraw()

    def watch_paused(self, paused: bool) -> None:
        if not paused:
            self._held = 0
            self._redraw()
        self._status()

    def action_toggle_pause(self) -> None:
        """Pause or resume scrolling."""
        self.paused = not self.paused

    def action_toggle_wrap(self) -> None:
        """Wrap long lines or cut them."""
        self.wrap = not self.wrap

    def action_cycle_tail(self) -> None:
        """Load more (or fewer) old lines (and leave a "since" preset)."""
        i = TAIL_CHOICES.index(self.tail) if self.tail in TAIL_CHOICES else -1
        self.tail = TAIL_CHOICES[(i + 1) % len(TAIL_CHOICES)]
        self.since = None
        self._status()
        self.post_message(self.TailChanged(self.tail))

    def action_cycle_since(self) -> None:
        """Load the lines of the last 1 m, 5 m, 15 m, 1 h, or the tail again."""
        values = [v for v, _ in SINCE_CHOICES]
        i = values.index(self.since) if self.since in values else 0
        self.since = values[(i + 1) % len(values)]
        self._status()
        self.post_message(self.SinceChanged(self.since))

    def action_toggle_timestamps(self) -> None:
        """Show each line's time, or not."""
        self.timestamps = not self.timestamps
        self._status()

    def action_save(self) -> None:
        """Ask for a path, then write the shown lines there."""
        lines = self.shown_lines()  # what is shown now, not what arrives while asking
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        prompt = PathPrompt(
            "Save the shown log lines",
            f"{len(lines)} lines, as shown (secrets masked), to a file on this machine:",
            ok_label="Save",
            value=os.path.join(self.save_dir or _here(), f"flowmgr-logs-{stamp}.log"),
            placeholder="/tmp/flow.log",
        )
        self.app.push_screen(prompt, lambda path: self._save(path, lines) if path else None)

    def action_search(self) -> None:
        """Focus the search box."""
        self.query_one("#log-search", Input).focus()

    def _save(self, path: str, lines: list[str], confirmed: bool = False) -> None:
        self.run_worker(self._write(path, lines, confirmed), group="log-save", exit_on_error=False)

    async def _write(self, path: str, lines: list[str], confirmed: bool) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._save(path, lines, True)

        try:
            ask = None if confirmed else await asyncio.to_thread(question, path)
            if ask is not None:
                self.app.push_screen(
                    ConfirmScreen(ask, "The log lines would replace it."), answered
                )
                return
            n = await asyncio.to_thread(save_lines, path, lines, confirmed=confirmed)
        except SaveError as err:
            self.notify(str(err), title="Not saved", severity="error")
            return
        self.notify(f"{n} lines saved to {path}", title="Logs saved")

    def _shows(self, line: LogLine) -> bool:
        return not self.search or self.search.lower() in line.text.lower()

    def _shown(self, line: LogLine) -> str:
        if not self.timestamps:
            return line.text
        at = line.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if line.at else " " * 19
        return f"{at} {line.text}"

    def _text(self, line: LogLine) -> Text:
        text = Text(self._shown(line))
        if self.search:
            text.highlight_words([self.search], style="reverse", case_sensitive=False)
        return text

    def _redraw(self) -> None:
        if not self.is_mounted:
            return
        view = self.query_one(RichLog)
        view.clear()
        for line in self.lines:
            if self._shows(line):
                view.write(self._text(line))
        self._status()

    def _status(self) -> None:
        if not self.is_mounted:
            return
        since = dict(SINCE_CHOICES).get(self.since)
        parts = [f"since {since}" if self.since else f"tail {self.tail}"]
        parts.append("held (f follows)" if self.paused else "following")
        if self._held:
            parts.append(f"{self._held} new")
        if self.wrap:
            parts.append("wrap")
        if self.timestamps:
            parts.append("times UTC")
        self.query_one("#log-status", Label).update(" | ".join(parts))


def _line(item: LogLine | str) -> LogLine:
    return item if isinstance(item, LogLine) else LogLine(None, item)


def _here() -> str:
    try:
        return os.getcwd()
    except OSError:  # the working directory was removed: propose the home directory
        return os.path.expanduser("~")
