"""MessagePane: a flow's messages both ways, and a JSON editor that checks before sending."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Label, RichLog, TextArea

from flowmgr_tui.formatting import clock
from flowmgr_tui.keymap import bindings
from flowmgr_tui.state.panel_state import FlowMessage

__all__ = ["MessagePane", "parse_message"]


def parse_message(raw: str) -> dict[str, Any]:
    """The editor's text as a JSON object, or ValueError saying where it is wrong."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f"a message must be a JSON object {{...}}, not {type(value).__name__}")
    return value


class MessagePane(Vertical):
    """`<-` marks what the flow sent, `->` what was sent to it."""

    BINDINGS = bindings("messages")

    class SendRequested(Message):
        """The editor holds a valid JSON object to send."""

        def __init__(self, message: dict[str, Any]) -> None:
            super().__init__()
            self.message = message

    def compose(self) -> ComposeResult:
        """History, editor, error line, send button."""
        yield RichLog(max_lines=500, wrap=True, markup=False, highlight=False, id="msg-log")
        yield TextArea('{"type": "ping"}', id="msg-editor", soft_wrap=True)
        with Horizontal(classes="msg-bar"):
            yield Button("Send (ctrl+s)", id="msg-send", variant="primary", compact=True)
            yield Label("", id="msg-error", classes="field-error")

    def add(self, messages: Iterable[FlowMessage]) -> None:
        """Append messages in the order given."""
        log = self.query_one("#msg-log", RichLog)
        for m in messages:
            arrow, style = ("<-", "green") if m.direction == "in" else ("->", "cyan")
            line = Text(f"{clock(m.at)} ")
            line.append(arrow, style=style)
            line.append(" " + json.dumps(m.message, ensure_ascii=False))
            log.write(line)

    def show_error(self, text: str) -> None:
        """Put a problem under the editor (empty clears it)."""
        label = self.query_one("#msg-error", Label)
        label.update(text)
        label.set_class(bool(text), "-visible")

    @property
    def error_text(self) -> str:
        """The problem shown under the editor (tests read this)."""
        return str(self.query_one("#msg-error", Label).content)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """The Send button."""
        event.stop()
        self.action_send()

    def action_send(self) -> None:
        """Validate, then ask the screen to send."""
        try:
            message = parse_message(self.query_one(TextArea).text)
        except ValueError as err:
            self.show_error(str(err))
            return
        self.show_error("")
        self.post_message(self.SendRequested(message))
