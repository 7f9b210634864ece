"""HelpScreen: every key of the panel on one page, listed from the keymap."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from flowmgr_tui.keymap import KEYS, SCOPES, Key, bindings, key_text

__all__ = ["HelpScreen", "help_text"]

NOTES = """\
Also: up/down, pgup/pgdn move in the table, enter opens the detail view; a click on a header
sorts by it; ctrl+p opens the command palette: every action for every container.

State reads without colour:  + running  - stopped  x exited  ! dead  . created
  ~ restarting  = paused  * action in progress.   Health: ok healthy  !! unhealthy  .. starting
Sock: "on" when the flow is connected to its socket.
Cluster mode (a hub): a Node column (- while the flow has no task) and the node summary (N);
  ? unknown: the flow's node has lost its agent link (the summary says why and for how long).

Your keys, theme, refresh rate, log defaults and columns: panel.toml in $XDG_CONFIG_HOME/flowmgr
  (else ~/.config/flowmgr; or --panel-config PATH). A key is rebound by the names above, e.g.
  [keys.dashboard]  stop = ["x", "ctrl+x"]   (one or two keys; ctrl+c always quits).
  The theme chosen here (ctrl+p, "theme") and the columns (c) are saved into it.
"""


def help_text(table: Sequence[Key] = KEYS) -> str:
    """One section per scope, one line per key as bound now (the config's keys), then the
    notes."""
    lines: list[str] = []
    for scope, heading in SCOPES.items():
        lines.append(f"{heading:<40} [keys.{scope}]")
        seen: set[tuple[str, str]] = set()
        for key in table:
            if key.scope == scope and (key.action, key.help) not in seen:
                seen.add((key.action, key.help))  # ctrl+c, like q, quits: one line for both
                keys = " / ".join(
                    key_text(k.in_force)
                    for k in table
                    if k.scope == scope and k.action == key.action
                )
                name = key.name.split(".", 1)[1]  # its name in panel.toml
                lines.append(f"  {keys:<14} {name:<15} {key.help}")
        lines.append("")
    return "\n".join(lines) + NOTES


class HelpScreen(ModalScreen[None]):
    """Escape, q or ? closes it."""

    BINDINGS = bindings("help")

    def __init__(self, table: Sequence[Key] = KEYS) -> None:
        super().__init__()
        self._table = table
        """The keys in force (the app's, after panel.toml)."""

    def compose(self) -> ComposeResult:
        """The key list."""
        with VerticalScroll(classes="dialog help"):
            yield Label("flowmgr keys", classes="dialog-title")
            yield Static(help_text(self._table), markup=False)

    def action_close(self) -> None:
        """Back to where the user was."""
        self.dismiss(None)
