"""DashboardScreen: the live table of containers plus recent activity."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Header, Input, Label

from flowmgr_tui.keymap import BULK_VERBS, bindings
from flowmgr_tui.messages import (
    ContainerActionRequested,
    ContainersActionRequested,
    CreateFormRequested,
    PreferenceChanged,
)
from flowmgr_tui.state.panel_state import Changes, PanelState
from flowmgr_tui.widgets.activity_list import ActivityList
from flowmgr_tui.widgets.container_table import ContainerTable
from flowmgr_tui.widgets.docker_banner import DockerBanner
from flowmgr_tui.widgets.key_footer import KeyFooter
from flowmgr_tui.widgets.node_summary import NodeSummary, safe_name
from server.core.events import ActivityLogged, ContainerCrashed, Event, NodeStatusReported

__all__ = ["DashboardScreen"]

UPTIME_REFRESH = 20.0
"""Seconds between uptime recomputations (the column shows minutes)."""
ROWS_EVERY = 0.25
"""While new rows keep coming (adoption brings a batch every 40 ms), they are drawn at most
this often: each batch of new rows re-sorts the table and repaints the screen (~40 ms of CPU
here at 1,000 rows), so 1,000 flows adopted ten at a time cost ~4 s drawn as they came."""
WATCH_DELAY = 0.2
"""Seconds the rows on screen must hold before the core is told (a scroll is many steps)."""
NOTICE_NAMES = 5
"""Nodes named in one notice of lost (or returned) agent links; the rest are counted."""


class DashboardScreen(Screen[None]):
    """Owns the selected container; every action key asks the app to act on it."""

    AUTO_FOCUS = "ContainerTable"

    BINDINGS = bindings("dashboard")

    def __init__(
        self,
        state: PanelState,
        *,
        clock: Callable[[], datetime],
        watch: Callable[[list[str]], None] | None = None,
        columns: Sequence[str] = (),
        show_stopped: bool = True,
    ) -> None:
        super().__init__()
        self._columns = tuple(columns)
        """The table's columns as panel.toml chose them (empty: all)."""
        self._show_stopped = show_stopped
        self.state = state
        """What the screen shows; the app folds events into it and calls `show_changes`."""
        self._clock = clock
        self._activity_due: list[ActivityLogged | ContainerCrashed] = []
        """Activity of batches whose rows were drawn first, in order, for the next write."""
        self._activity_scheduled = False
        self._watch = watch
        """Told the containers on screen (the rows shown, or the open detail view's): the
        core samples those at full rate and the rest at its background rate."""
        self._watched: list[str] | None = None
        self._watch_due = False
        self._rows_due: set[str] = set()
        """Rows changed since they were last drawn (see ROWS_EVERY)."""
        self._rows_waiting = False
        self._rows_at = -ROWS_EVERY
        """time.monotonic() of the last draw of rows."""
        self._nodes_down: set[str] = set()
        """Nodes whose lost agent link a notice told (their return is told too)."""

    def compose(self) -> ComposeResult:
        """Header, banner, filter box, table, activity, footer."""
        yield Header(icon="=")
        yield DockerBanner(id="docker-banner")
        yield NodeSummary(self.state, clock=self._clock, id="nodes")
        yield Input(placeholder="filter: name, id, image or state", id="filter", compact=True)
        table = ContainerTable(self.state, clock=self._clock, id="containers")
        if self._columns:
            table.set_columns(self._columns)
        table.show_stopped = self._show_stopped
        yield table
        yield Label("", id="table-summary")
        yield ActivityList(id="activity")
        yield KeyFooter()

    @property
    def table(self) -> ContainerTable:
        """The container table."""
        return self.query_one(ContainerTable)

    def on_mount(self) -> None:
        """Fill from the state gathered so far; keep uptimes fresh at a slow pace."""
        state = self.state
        self.table.show_rows(s.id for s in state.ordered())
        self.query_one(ActivityList).add(self._merged_activity(), state.names())
        self.query_one(DockerBanner).show_state(state.docker_available, state.docker_problem)
        self.query_one(NodeSummary).redraw()
        self._summary()
        self.set_interval(UPTIME_REFRESH, self.table.refresh_clock)
        self._ready = True

    def show_changes(self, changes: Changes, events: Sequence[Event]) -> None:
        """Redraw what one batch of events (or a busy mark) changed."""
        if not getattr(self, "_ready", False):
            return  # on_mount reads the state, which already holds these events
        if not self.query(ContainerTable):
            return  # the app is closing: its widgets go before the last batches arrive
        state = self.state
        if state.cluster and not self.table.shows_nodes:
            self.table.show_nodes()
        if changes.removed or changes.rows:
            self._draw_rows(changes)
        if state.cluster and (changes.nodes or changes.rows or changes.removed or changes.samples):
            self.query_one(NodeSummary).redraw()
        if changes.nodes:
            self._tell_nodes([e for e in events if isinstance(e, NodeStatusReported)])
        if changes.recalled:  # history from before the panel opened: the list, rebuilt
            self._activity_due.clear()
            for activity in self.query(ActivityList):
                activity.clear()
                activity.add(self._merged_activity(), state.names())
        elif changes.activity:
            self._activity_due.extend(
                e for e in events if isinstance(e, ActivityLogged | ContainerCrashed)
            )
            if not (changes.rows or changes.removed):
                self._write_activity()
            elif not self._activity_scheduled:
                # Rows first: the table's repaint does not wait for these lines (adoption
                # brings one per container without a channel in the batch that fills it).
                self._activity_scheduled = True
                self.call_after_refresh(self._write_activity)
        if changes.docker:
            self.query_one(DockerBanner).show_state(state.docker_available, state.docker_problem)

    def _tell_nodes(self, reports: list[NodeStatusReported]) -> None:
        """One notice per batch for the nodes whose agent link went down (their flows turn
        `unknown`), and one for those back."""
        lost: dict[str, NodeStatusReported] = {}
        back: dict[str, NodeStatusReported] = {}
        for ev in reports:
            if ev.agent == "connected":
                lost.pop(ev.node_id, None)
                if ev.node_id in self._nodes_down:
                    back[ev.node_id] = ev
            else:
                back.pop(ev.node_id, None)
                lost[ev.node_id] = ev
        self._nodes_down.difference_update(back)
        self._nodes_down.update(lost)
        if lost:
            self.notify(
                _node_notice(list(lost.values()), "lost its agent link", "lost their agent link")
                + ": its flows show ? unknown until it is back",
                title="Cluster node down",
                severity="error",
                timeout=10,
                markup=False,
            )
        if back:
            self.notify(
                _node_notice(list(back.values()), "is back", "are back"),
                title="Cluster node back",
                markup=False,
            )

    def _draw_rows(self, changes: Changes) -> None:
        """Draw the rows now, or, when new ones come less than ROWS_EVERY after the last
        draw, with the next ones at the end of that interval."""
        self._rows_due.update(changes.removed)
        self._rows_due.update(changes.rows)
        if self._rows_waiting:
            return
        wait = self._rows_at + ROWS_EVERY - time.monotonic()
        table = self.table
        if wait > 0 and not all(table.shows(cid) for cid in changes.rows):
            self._rows_waiting = True
            self.set_timer(wait, self._draw_due)
        else:
            self._draw_due()

    def _draw_due(self) -> None:
        self._rows_waiting = False
        if not self.query(ContainerTable):
            return  # the app is closing
        due, self._rows_due = self._rows_due, set()
        self.table.show_rows(due)
        self._rows_at = time.monotonic()
        self._summary()  # a no-op unless the counts changed

    def _merged_activity(self) -> list[ActivityLogged | ContainerCrashed]:
        """The newest 100 activity lines and crashes, oldest first."""
        state = self.state
        merged: list[ActivityLogged | ContainerCrashed] = sorted(
            [*state.activity, *state.crashes], key=lambda e: e.at
        )
        return merged[-100:]

    def _write_activity(self) -> None:
        self._activity_scheduled = False
        due, self._activity_due = self._activity_due, []
        for activity in self.query(ActivityList):  # none once the app is closing
            activity.add(due, self.state.names())

    # --- what is on screen, for the core's sampler --------------------------------------

    def on_container_table_visible_rows_changed(
        self, event: ContainerTable.VisibleRowsChanged
    ) -> None:
        """Scrolled, resized, sorted, filtered, or rows came or went."""
        event.stop()
        self._watch_soon()

    def on_screen_suspend(self) -> None:
        """Another screen is over this one (a detail view: its container is what shows)."""
        self._watch_soon()

    def on_screen_resume(self) -> None:
        """Back on top: the rows are what shows again."""
        self._watch_soon()

    def _watch_soon(self) -> None:
        if self._watch is not None and not self._watch_due:
            self._watch_due = True
            self.set_timer(WATCH_DELAY, self._tell_watched)

    def _tell_watched(self) -> None:
        self._watch_due = False
        if self._watch is None or not self.is_attached or not self.query(ContainerTable):
            return  # the app is closing
        top = self.app.screen
        detail = getattr(top, "container_id", None) if top is not self else None
        ids = [detail] if isinstance(detail, str) else self.table.visible_ids
        if ids != self._watched:
            self._watched = ids
            self._watch(ids)

    def sort_by(self, column: str) -> None:
        """Sort the table by a column, ascending (the palette asks for it)."""
        self.table.sort_by(column, reverse=False)
        self._summary()

    def on_container_table_open_requested(self, event: ContainerTable.OpenRequested) -> None:
        """Enter on a row: the detail view."""
        event.stop()
        self.post_message(ContainerActionRequested("open", event.container_id))

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
        keys = self.table.column_keys
        at = keys.index(self.table.sort_column) if self.table.sort_column in keys else -1
        nxt = keys[(at + 1) % len(keys)]
        self.table.sort_by(nxt, reverse=False)
        self._summary()

    def action_sort_reverse(self) -> None:
        """Flip the order."""
        self.table.sort_by(self.table.sort_column, reverse=not self.table.sort_reverse)
        self._summary()

    def action_toggle_nodes(self) -> None:
        """Show or hide the node summary (cluster mode)."""
        summary = self.query_one(NodeSummary)
        if not self.state.cluster:
            self.notify("one host: no cluster nodes to show", severity="information")
            return
        summary.hidden_by_user = not summary.hidden_by_user
        summary.redraw()

    def action_create(self) -> None:
        """Open the create form."""
        self.post_message(CreateFormRequested())

    def action_toggle_stopped(self) -> None:
        """Show or hide the rows of stopped flows."""
        self.table.set_show_stopped(not self.table.show_stopped)
        self._summary()

    def action_toggle_mark(self) -> None:
        """Mark or unmark the selected row, then move to the next one."""
        table = self.table
        cid = table.selected_id
        if cid is None:
            return
        table.toggle_mark(cid)
        table.action_cursor_down()
        self._summary()

    def action_clear_marks(self) -> None:
        """Unmark every row."""
        self.table.clear_marks()
        self._summary()

    def action_columns(self) -> None:
        """Choose and order the columns; the choice is applied and saved."""
        from flowmgr_tui.screens.columns import ColumnsScreen

        def chosen(columns: tuple[str, ...] | None) -> None:
            if columns is not None and columns != self.table.chosen_columns:
                self.table.set_columns(columns)
                self._summary()
                self.post_message(PreferenceChanged("table.columns", list(columns)))

        self.app.push_screen(ColumnsScreen(self.table.chosen_columns), chosen)

    def action_act(self, verb: str) -> None:
        """Run a verb on the marked rows (bulk verbs; one question), else the selected one."""
        table = self.table
        if table.marked and verb in BULK_VERBS:
            shown = [cid for cid in table.shown_ids if cid in table.marked]
            hidden = sorted(table.marked.difference(shown), key=self.state.name_of)
            self.post_message(ContainersActionRequested(verb, shown + hidden))
            return
        cid = self.table.selected_id
        if cid is None:
            self.notify("no container selected", severity="warning")
            return
        self.post_message(ContainerActionRequested(verb, cid))

    def _summary(self) -> None:
        table = self.table
        total, shown = len(self.state.containers), table.row_count
        arrow = "v" if table.sort_reverse else "^"
        text = f" {shown} of {total} containers | sort: {table.sort_column} {arrow}"
        if table.filter_text:
            text += f" | filter: {table.filter_text!r}"
        if not table.show_stopped:
            text += " | stopped hidden (a)"
        if table.marked:
            text += f" | {len(table.marked)} marked"
        label = self.query_one("#table-summary", Label)
        if str(label.content) != text:  # an update re-lays out the screen: only on change
            label.update(text)


def _node_notice(reports: list[NodeStatusReported], one: str, many: str) -> str:
    """`node worker-2 lost its agent link (heartbeat_timeout)`, or several nodes named."""
    if len(reports) == 1:
        ev = reports[0]
        why = f" ({safe_name(ev.reason, 40)})" if ev.reason else ""
        return f"node {safe_name(ev.node, 40)} {one}{why}"
    names = ", ".join(safe_name(ev.node, 30) for ev in reports[:NOTICE_NAMES])
    more = len(reports) - NOTICE_NAMES
    if more > 0:
        names += f" and {more} more"
    return f"{len(reports)} nodes {many}: {names}"
