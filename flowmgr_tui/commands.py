"""Command palette: every action for every container, built from the panel's state."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from flowmgr_tui.actions import VERBS

if TYPE_CHECKING:
    from flowmgr_tui.app import FlowMgrApp

__all__ = ["ContainerCommands"]


class ContainerCommands(Provider):
    """`Stop web-1`, `Open web-1`, `Create a container`, `Sort by CPU`..."""

    def _commands(self) -> list[tuple[str, str, object]]:
        from flowmgr_tui.app import FlowMgrApp
        from flowmgr_tui.widgets.container_table import COLUMNS

        app = self.app
        assert isinstance(app, FlowMgrApp)
        fm: FlowMgrApp = app
        out: list[tuple[str, str, object]] = [
            ("Create a container", "open the create form", fm.open_create_form),
            ("Help: keys", "every key of the panel", fm.action_help),
        ]
        for snap in fm.state.ordered():
            out.append((f"Open {snap.name}", f"graphs, logs, messages ({snap.state})",
                        partial(fm.action_container, "open", snap.id)))
            for verb in VERBS.values():
                out.append((f"{verb.label} {snap.name}", f"{snap.short_id}, {snap.state}",
                            partial(fm.action_container, verb.name, snap.id)))
        for key, label, _ in COLUMNS:
            out.append((f"Sort by {label}", "order the table", partial(self._sort, key)))
        return out

    def _sort(self, column: str) -> None:
        from flowmgr_tui.screens.dashboard import DashboardScreen

        for screen in self.app.screen_stack:
            if isinstance(screen, DashboardScreen):
                screen.table.sort_by(column, reverse=False)

    async def discover(self) -> Hits:
        """Everything, when nothing is typed yet."""
        for text, help_text, callback in self._commands():
            yield DiscoveryHit(text, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        """Fuzzy-match every command."""
        matcher = self.matcher(query)
        for text, help_text, callback in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback,  # type: ignore[arg-type]
                          text=text, help=help_text)
