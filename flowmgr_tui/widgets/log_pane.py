"""LogPane: a followed container's output with tail length, pause, search and wrap."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Label, RichLog

from flowmgr_tui.keymap import bindings

__all__ = ["LogPane", "TAIL_CHOICES"]

TAIL_CHOICES: tuple[int, ...] = (100, 500, 2000, 20)
"""`t` cycles through these tail lengths."""


class LogPane(Vertical):
    """Keeps up to `max_lines` lines; shows those matching the search, unless paused."""

    BINDINGS = bindings("logs")

    paused: reactive[bool] = reactive(False)
    """While paused, new lines are kept but not shown."""
    wrap: reactive[bool] = reactive(False)
    tail: reactive[int] = reactive(TAIL_CHOICES[0])
    """How many old lines to load when following starts."""
    search: reactive[str] = reactive("")

    class TailChanged(Message):
        """The user asked for a different tail length: the screen reloads."""

        def __init__(self, tail: int) -> None:
            super().__init__()
            self.tail = tail

    def __init__(
        self, *, max_lines: int = 5000, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.max_lines = max_lines
        self.lines: deque[str] = deque(maxlen=max_lines)
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
        self._redraw()

    def load(self, lines: Iterable[str]) -> None:
        """Replace everything with a fresh tail."""
        self.lines.clear()
        self.lines.extend(lines)
        self._redraw()

    def append(self, lines: Iterable[str]) -> None:
        """Add live lines; shown at once unless paused or filtered out."""
        views = self.query(RichLog)
        if not views:  # not composed yet (or being removed): kept, drawn on mount
            self.lines.extend(lines)
            return
        view = views.first()
        for line in lines:
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
        """Load more (or fewer) old lines."""
        i = TAIL_CHOICES.index(self.tail) if self.tail in TAIL_CHOICES else -1
        self.tail = TAIL_CHOICES[(i + 1) % len(TAIL_CHOICES)]
        self._status()
        self.post_message(self.TailChanged(self.tail))

    def action_search(self) -> None:
        """Focus the search box."""
        self.query_one("#log-search", Input).focus()

    def _shows(self, line: str) -> bool:
        return not self.search or self.search.lower() in line.lower()

    def _text(self, line: str) -> Text:
        text = Text(line)
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
        parts = [f"tail {self.tail}", "held (f follows)" if self.paused else "following"]
        if self._held:
            parts.append(f"{self._held} new")
        if self.wrap:
            parts.append("wrap")
        self.query_one("#log-status", Label).update(" | ".join(parts))
