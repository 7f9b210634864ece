"""PathPrompt: ask for a path (a flow's new code, where to save logs); None when cancelled."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from flowmgr_tui.keymap import bindings

__all__ = ["PathPrompt"]


class PathPrompt(ModalScreen[str | None]):
    """An absolute path, checked before the dialog closes."""

    BINDINGS = bindings("path")

    def __init__(
        self,
        title: str,
        prompt: str,
        *,
        ok_label: str = "Update",
        value: str = "",
        placeholder: str = "/srv/flows/my-flow",
    ) -> None:
        super().__init__()
        self._title = title
        self._prompt = prompt
        self._ok_label = ok_label
        self._value = value
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        """Title, input, error line, buttons."""
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            yield Label(self._prompt)
            yield Input(self._value, placeholder=self._placeholder, id="path")
            yield Label("", id="path-error", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self._ok_label, variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter submits."""
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """The first button submits, Cancel closes."""
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        """Close without a path."""
        self.dismiss(None)

    def _submit(self) -> None:
        path = self.query_one("#path", Input).value.strip()
        if not path.startswith("/"):
            self.query_one("#path-error", Label).update("an absolute path is needed (/...)")
            return
        self.dismiss(path)
