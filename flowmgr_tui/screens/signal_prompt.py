"""SignalPrompt: which signal a kill sends (the core's allow-list); None when cancelled."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from flowmgr_tui.keymap import bindings
from server.core.validation.signals import KILL_SIGNALS

__all__ = ["SignalPrompt", "SIGNAL_HELP"]

SIGNAL_HELP: dict[str, str] = {
    "SIGTERM": "ask it to end (it may clean up first)",
    "SIGKILL": "end it at once (no clean-up)",
    "SIGINT": "interrupt it, as ctrl+c would",
    "SIGHUP": "hang up (many programs reload their configuration)",
    "SIGQUIT": "quit (some programs dump their state)",
    "SIGUSR1": "the flow's own meaning, if any",
    "SIGUSR2": "the flow's own meaning, if any",
}
"""One line per signal the core sends, in its order (the list starts on SIGTERM, the mild one)."""


class SignalPrompt(ModalScreen[str | None]):
    """Up/down and enter pick a signal; escape sends nothing."""

    BINDINGS = bindings("signal")

    def __init__(self, title: str) -> None:
        super().__init__()
        self._title = title

    def compose(self) -> ComposeResult:
        """Title, the signals, a hint."""
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title")
            yield OptionList(
                *(
                    Option(f"{name:<8} {SIGNAL_HELP.get(name, '')}", id=name)
                    for name in KILL_SIGNALS
                ),
                id="signals",
            )
            yield Label("enter: choose (asked again before it is sent)   esc: cancel",
                        classes="dialog-detail")  # fmt: skip

    def on_mount(self) -> None:
        """The list has the keys."""
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Enter (or a click) picks the signal."""
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        """Close without a signal."""
        self.dismiss(None)
