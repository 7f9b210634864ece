"""ResourceGraph: a titled Sparkline over a bounded window of samples."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline

__all__ = ["ResourceGraph"]


class ResourceGraph(Vertical):
    """`CPU 3.2% (max 12.0%)` above a sparkline of the last N values."""

    DEFAULT_CSS = """
    ResourceGraph { height: 4; }
    ResourceGraph Sparkline { height: 3; }
    """

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._title = title

    def compose(self) -> ComposeResult:
        """Caption and graph."""
        yield Label(f"{self._title}: -", classes="graph-caption")
        yield Sparkline([], summary_function=max)

    def show(self, values: Sequence[float], caption: str) -> None:
        """Replace the data (the caller keeps the bounded window)."""
        self.query_one(Label).update(f"{self._title}: {caption}")
        self.query_one(Sparkline).data = list(values)

    @property
    def caption(self) -> str:
        """The caption as shown (tests read it)."""
        return str(self.query_one(Label).content)
