"""DashboardScreen: the live table of containers plus recent activity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Header, Input, Label

from flowmgr_tui.panel_state import Changes
from flowmgr_tui.widgets.activity_list import ActivityList
from flowmgr_tui.widgets.container_table import COLUMNS, ContainerTable
from flowmgr_tui.widgets.docker_banner import DockerBanner
from flowmgr_tui.widgets.key_footer import KeyFooter
from server.core.events import ActivityLogged, ContainerCrashed, Event

if TYPE_CHECKING:
    from flowmgr_tui.app import FlowMgrApp

__all__ = ["DashboardScreen"]

UPTIME_REFRESH = 20.0
"""Seconds between uptime recomputations (the column shows minutes)."""


class DashboardScreen(Screen[None]):
    """Owns the selected container; every action key acts on it."""

    AUTO_FOCUS = "ContainerTable"

    BINDINGS = [
        Binding("n", "create", "New", id="dash.create", tooltip="Create a container"),
        Binding("s", "act('start')", "Start", id="dash.start", tooltip="Start it"),
        Binding("x", "act('stop')", "Stop", id="dash.stop", tooltip="Stop it"),
        Binding("r", "act('restart')", "Restart", id="dash.restart", tooltip="Restart it"),
        Binding("u", "act('update')", "Update", id="dash.update", tooltip="Update its code"),
        Binding("d", "act('delete')", "Delete", id="dash.delete", tooltip="Delete it (asks)"),
        Binding("slash", "filter", "Filter", id="dash.filter", tooltip="Filter rows as you type"),
        Binding("o", "sort_next", "Sort", id="dash.sort", tooltip="Sort by the next column"),
        Binding("O", "sort_reverse", "Reverse", id="dash.reverse", show=False,
                tooltip="Reverse the order"),
        Binding("escape", "clear_filter", "Clear filter", id="dash.clear", show=False,
                tooltip="Show every row"),
    ]

    def compose(self) -> ComposeResult:
        """Header, banner, filter box, table, activity, footer."""
        yield Header(icon="=")
        yield DockerBanner(id="docker-banner")
        yield Input(placeholder="filter: name, id, image or state", id="filter", compact=True)
        yield ContainerTable(clock=self.fm.clock, id="containers")
        yield Label("", id="table-summary")
        yield ActivityList(id="activity")
        yield KeyFooter()

    @property
    def fm(self) -> FlowMgrApp:
        """The app, typed."""
        from flowmgr_tui.app import FlowMgrApp

        assert isinstance(self.app, FlowMgrApp)
        return self.app

    @property
    def table(self) -> ContainerTable:
        """The container table."""
        return self.query_one(ContainerTable)

    def on_mount(self) -> None:
        """Fill from the state gathered so far; keep uptimes fresh at a slow pace."""
        state = self.fm.state
        self.table.upsert(state.ordered())
        names = self.fm.names()
        merged: list[ActivityLogged | ContainerCrashed] = sorted(
            [*state.activity, *state.crashes], key=lambda e: e.at)
        self.query_one(ActivityList).add(merged[-100:], names)
        self.query_one(DockerBanner).show_state(state.docker_available, state.docker_problem)
        self._summary()
        self.set_interval(UPTIME_REFRESH, self.table.refresh_clock)
        self._ready = True

    def ingest(self, changes: Changes, events: list[Event]) -> None:
        """Apply one batch of core events."""
        if not getattr(self, "_ready", False):
            return  # on_mount reads the state, which already holds these events
        state = self.fm.state
        if changes.removed:
            self.table.remove_containers(changes.removed)
        if changes.rows:
            self.table.upsert(state.containers[c] for c in changes.rows
                              if c in state.containers)
        if changes.activity:
            self.query_one(ActivityList).add(
                (e for e in events if isinstance(e, ActivityLogged | ContainerCrashed)),
                self.fm.names())
        if changes.docker:
            self.query_one(DockerBanner).show_state(state.docker_available, state.docker_problem)
        if changes.rows or changes.removed:
            self._summary()  # a no-op unless the counts changed

    def on_container_table_open_requested(self, event: ContainerTable.OpenRequested) -> None:
        """Enter on a row: the detail view."""
        self.fm.open_detail(event.container_id)

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as the user types."""
        if event.input.id == "filter":
            self.table.set_filter(event.value)
            self._summary()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the filter goes back to the table, keeping the filter (shown below it)."""
        if event.input.id == "filter":
            event.input.remove_class("-visible")
            self.set_focus(self.table)

    def action_filter(self) -> None:
        """Show and focus the filter box."""
        box = self.query_one("#filter", Input)
        box.add_class("-visible")
        box.focus()

    def action_clear_filter(self) -> None:
        """Empty and hide the filter box."""
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("-visible")
        self.table.set_filter("")
        self.table.focus()
        self._summary()

    def action_sort_next(self) -> None:
        """Sort by the next column."""
        keys = [c[0] for c in COLUMNS]
        nxt = keys[(keys.index(self.table.sort_column) + 1) % len(keys)]
        self.table.sort_by(nxt, reverse=False)
        self._summary()

    def action_sort_reverse(self) -> None:
        """Flip the order."""
        self.table.sort_by(self.table.sort_column, reverse=not self.table.sort_reverse)
        self._summary()

    def action_create(self) -> None:
        """Open the create form."""
        self.fm.open_create_form()

    def action_act(self, verb: str) -> None:
        """Run a verb on the selected container."""
        cid = self.table.selected_id
        if cid is None:
            self.notify("no container selected", severity="warning")
            return
        self.fm.runner.request(verb, cid)

    def _summary(self) -> None:
        table = self.table
        total, shown = len(self.fm.state.containers), table.row_count
        arrow = "v" if table.sort_reverse else "^"
        text = f" {shown} of {total} containers | sort: {table.sort_column} {arrow}"
        if table.filter_text:
            text += f" | filter: {table.filter_text!r}"
        label = self.query_one("#table-summary", Label)
        if str(label.content) != text:  # an update re-lays out the screen: only on change
            label.update(text)
