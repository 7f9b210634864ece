"""ColumnsScreen: choose which table columns show and in what order."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from flowmgr_tui.keymap import bindings
from flowmgr_tui.widgets.container_table import CLUSTER_COLUMNS

__all__ = ["ColumnsScreen"]

_LABELS = {key: label for key, label, _ in CLUSTER_COLUMNS} | {"node": "Node (cluster only)"}


_HINTS = {
    "toggle_column": "show/hide",
    "move_up": "up",
    "move_down": "down",
    "save": "save",
    "cancel": "cancel",
}


class _ColumnList(OptionList, inherit_bindings=False):
    """An OptionList whose Enter is the screen's (save), not "select"."""

    BINDINGS = [b for b in OptionList.BINDINGS if not (isinstance(b, Binding) and b.key == "enter")]


class ColumnsScreen(ModalScreen[tuple[str, ...] | None]):
    """Dismisses with the shown columns in order, or None (cancelled)."""

    BINDINGS = bindings("columns")

    def __init__(self, chosen: Sequence[str]) -> None:
        super().__init__()
        shown = list(chosen)
        self.order = shown + [key for key in _LABELS if key not in shown]
        """Every column, the shown ones first in their order, then the hidden ones."""
        self.shown = set(shown)

    def compose(self) -> ComposeResult:
        """The list, one line per column: [x] shown, [ ] hidden."""
        with Vertical(classes="dialog columns"):
            yield Label("Columns of the table", classes="dialog-title")
            yield Label("", id="column-keys", classes="dialog-detail")
            yield _ColumnList(*self._options(), id="column-list")

    def on_mount(self) -> None:
        """The first column highlighted; the title says the keys in force (panel.toml's)."""
        self.query_one(_ColumnList).highlighted = 0
        keys: dict[str, list[str]] = {}
        for active in self.active_bindings.values():
            if active.node is self:
                keys.setdefault(active.binding.action, []).append(
                    self.app.get_key_display(active.binding)
                )
        hint = "  ".join(
            f"{'/'.join(keys[action])} {label}"
            for action, label in _HINTS.items()
            if action in keys
        )
        self.query_one("#column-keys", Label).update(hint)

    def _options(self) -> list[Option]:
        return [
            # Text, not a str: "[x]" would be read as markup.
            Option(Text(f"[{'x' if key in self.shown else ' '}] {_LABELS[key]}"), id=key)
            for key in self.order
        ]

    def _redraw(self, highlight: int) -> None:
        view = self.query_one(_ColumnList)
        view.clear_options()
        view.add_options(self._options())
        view.highlighted = highlight

    def _current(self) -> int | None:
        return self.query_one(_ColumnList).highlighted

    def action_toggle_column(self) -> None:
        """Show or hide the highlighted column (the name always shows)."""
        at = self._current()
        if at is None:
            return
        key = self.order[at]
        if key == "name":
            self.notify("the name column always shows", severity="warning")
            return
        self.shown.symmetric_difference_update({key})
        self._redraw(at)

    def _move(self, step: int) -> None:
        at = self._current()
        if at is None or not 0 <= at + step < len(self.order):
            return
        order = self.order
        order[at], order[at + step] = order[at + step], order[at]
        self._redraw(at + step)

    def action_move_up(self) -> None:
        """Move the highlighted column up (left in the table)."""
        self._move(-1)

    def action_move_down(self) -> None:
        """Move it down (right)."""
        self._move(1)

    def action_save(self) -> None:
        """Use the shown columns, in this order."""
        self.dismiss(tuple(key for key in self.order if key in self.shown))

    def action_cancel(self) -> None:
        """Leave the table as it was."""
        self.dismiss(None)
