"""HelpScreen: every key of the panel on one page."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

__all__ = ["HelpScreen", "HELP_TEXT"]

HELP_TEXT = """\
Containers (dashboard)
  up/down, pgup/pgdn   move          enter   open the detail view
  /                    filter        esc     clear the filter
  o / O                sort by next column / reverse   (or click a header)
  n                    create a container (form)
  s  x  r              start, stop, restart the selected container
  u                    update its code (asks for a path)
  d                    delete it (asks first)

Detail view
  1 2 3 4              overview (graphs), logs, messages, activity
  esc                  back to the list
  s x r u d            the same actions on this container
  logs:     p pause   w wrap   t tail length   / search
  messages: ctrl+s send the JSON in the editor (checked first)

Everywhere
  ctrl+p               command palette: every action for every container
  ?                    this help          q / ctrl+c   quit

State reads without colour:  + running  - stopped  x exited  ! dead  . created
  ~ restarting  = paused  * action in progress.   Health: ok healthy  !! unhealthy  .. starting
Sock: "on" when the flow is connected to its socket.
"""


class HelpScreen(ModalScreen[None]):
    """Escape, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close",
                        tooltip="Close help")]

    def compose(self) -> ComposeResult:
        """The key list."""
        with VerticalScroll(classes="dialog help"):
            yield Label("flowmgr keys", classes="dialog-title")
            yield Static(HELP_TEXT, markup=False)

    def action_close(self) -> None:
        """Back to where the user was."""
        self.dismiss(None)
