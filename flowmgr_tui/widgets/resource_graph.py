"""ResourceGraph: a caption over bars drawn against a fixed, labelled scale."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Label

from flowmgr_tui.graph_scale import Scale, bar_rows

__all__ = ["ResourceGraph", "ScalePlot"]

GRAPH_ROWS = 4
AXIS_LABEL = 6
"""Cells for the axis values (`512.0M`), so the four graphs' axes line up."""


class ScalePlot(Widget):
    """Bars with a y axis: the scale's top value on the first row, 0 on the last.

    Drawn only when its data or size changes (the detail view sets data once per sample).
    """

    COMPONENT_CLASSES = {"scale-plot--bar", "scale-plot--axis"}
    DEFAULT_CSS = f"""
    ScalePlot {{ height: {GRAPH_ROWS}; }}
    ScalePlot > .scale-plot--bar {{ color: $success; }}
    ScalePlot > .scale-plot--axis {{ color: $text-muted; }}
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._values: list[float] = []
        self._scale: Scale | None = None

    def plot(self, values: Sequence[float], scale: Scale | None) -> None:
        """New data; None: no scale known yet (axis and bars stay empty)."""
        self._values, self._scale = list(values), scale
        self.refresh()

    def render(self) -> RenderResult:
        """The axis column, then one column per sample (newest on the right)."""
        height, scale = self.size.height, self._scale
        if scale is None or height <= 0:
            return Text("")
        axis_w = max(len(scale.top_label), AXIS_LABEL)
        rows = bar_rows(self._values, scale.top, self.size.width - axis_w - 1, height)
        axis_style = self.get_component_rich_style("scale-plot--axis")
        bar_style = self.get_component_rich_style("scale-plot--bar")
        out = Text(no_wrap=True, overflow="crop")
        for i, row in enumerate(rows):
            label = scale.top_label if i == 0 else "0" if i == height - 1 else ""
            tick = "┤" if label else "│"
            if i:
                out.append("\n")
            out.append(f"{label:>{axis_w}}{tick}", axis_style)
            out.append(row, bar_style)
        return out

    @property
    def scale(self) -> Scale | None:
        """The scale drawn against (None before one is known)."""
        return self._scale

    @property
    def rows(self) -> list[str]:
        """The bars as drawn, top row first, without the axis (tests read them)."""
        scale = self._scale
        if scale is None:
            return []
        width = self.size.width - max(len(scale.top_label), AXIS_LABEL) - 1
        return bar_rows(self._values, scale.top, width, self.size.height)


class ResourceGraph(Vertical):
    """`Memory: 8.7M of 512.0M limit (1.7%)` above bars on a 0 - 512.0M axis."""

    DEFAULT_CSS = f"""
    ResourceGraph {{ height: {GRAPH_ROWS + 1}; }}
    """

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._title = title

    def compose(self) -> ComposeResult:
        """Caption and graph."""
        yield Label(f"{self._title}: -", classes="graph-caption")
        yield ScalePlot()

    def show(self, values: Sequence[float], caption: str, scale: Scale | None) -> None:
        """Replace the data (the caller keeps the bounded window) and the scale."""
        self.query_one(Label).update(f"{self._title}: {caption}")
        self.query_one(ScalePlot).plot(values, scale)

    @property
    def caption(self) -> str:
        """The caption as shown (tests read it)."""
        return str(self.query_one(Label).content)

    @property
    def scale(self) -> Scale | None:
        """The scale drawn against (tests read it)."""
        return self.query_one(ScalePlot).scale
