"""ConfirmScreen: a yes/no question; dismisses with True only on an explicit yes."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from flowmgr_tui.keymap import bindings

__all__ = ["ConfirmScreen"]


class ConfirmScreen(ModalScreen[bool]):
    """`y` / Enter on Yes confirms; `n` / Escape cancels."""

    BINDINGS = bindings("confirm")

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self._question = question
        self._detail = detail

    def compose(self) -> ComposeResult:
        """Question, detail, two buttons (No focused: the safe default)."""
        with Vertical(classes="dialog"):
            yield Label(self._question, classes="dialog-title")
            if self._detail:
                yield Label(self._detail, classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        """Focus No."""
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Either button answers."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Answer from the keyboard."""
        self.dismiss(yes)
