"""Command palette: every action for every container, from the keymap and the panel's state."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message

from flowmgr_tui.keymap import VERBS, palette_keys
from flowmgr_tui.messages import (
    ContainerActionRequested,
    CreateFormRequested,
    HelpRequested,
    HistoryRequested,
    SortRequested,
)
from flowmgr_tui.state.panel_state import PanelState
from flowmgr_tui.widgets.container_table import CLUSTER_COLUMNS, COLUMNS

__all__ = ["ContainerCommands", "HasPanelState", "PALETTE_MESSAGES"]

PALETTE_MESSAGES: dict[str, Callable[..., Message]] = {
    "create": CreateFormRequested,
    "help": HelpRequested,
    "history": HistoryRequested,
}
"""Keymap action -> the message the palette posts for it."""

_PAUSE_VERBS = frozenset({"pause", "unpause"})


@runtime_checkable
class HasPanelState(Protocol):
    """The app the palette runs in: it holds the state the palette lists."""

    state: PanelState


class ContainerCommands(Provider):
    """`Stop web-1`, `Open web-1`, `Create a container`, `Sort by CPU`...; each posts a
    message to the app, which runs it."""

    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        panel = self.app
        assert isinstance(panel, HasPanelState)
        post, act = self._post, ContainerActionRequested
        out: list[tuple[str, str, Callable[[], object]]] = [
            (key.palette, key.help, partial(post, PALETTE_MESSAGES[key.action]))
            for key in palette_keys()
        ]
        for snap in panel.state.ordered():
            out.append(
                (
                    f"Open {snap.name}",
                    f"graphs, logs, messages ({snap.state})",
                    partial(post, act, "open", snap.id),
                )
            )
            if snap.state == "running":
                out.append(
                    (
                        f"Shell in {snap.name}",
                        "bash, else sh, in its container",
                        partial(post, act, "shell", snap.id),
                    )
                )
            for verb in VERBS.values():
                if verb.name in _PAUSE_VERBS and (snap.state == "paused") != (
                    verb.name == "unpause"
                ):
                    continue  # "Pause web-1" or "Unpause web-1", whichever it can do
                out.append(
                    (
                        f"{verb.label} {snap.name}",
                        f"{snap.short_id}, {snap.state}",
                        partial(post, act, verb.name, snap.id),
                    )
                )
        for key, label, _ in CLUSTER_COLUMNS if panel.state.cluster else COLUMNS:
            out.append((f"Sort by {label}", "order the table", partial(post, SortRequested, key)))
        return out

    def _post(self, message: Callable[..., Message], *args: str) -> None:
        """Made when chosen, not per listed command (the palette lists ~1,400 at 200 rows)."""
        self.app.post_message(message(*args))

    async def discover(self) -> Hits:
        """Everything, when nothing is typed yet."""
        for text, help_text, callback in self._commands():
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        """Fuzzy-match every command."""
        matcher = self.matcher(query)
        for text, help_text, callback in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, text=text, help=help_text)
