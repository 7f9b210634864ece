"""HistoryScreen: the journal's events, filtered by flow, event type and time, newest last;
older pages load on demand. Reads happen in a worker, only while this screen is open."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Label, Static

from flowmgr_tui.backend import Backend
from flowmgr_tui.formatting import describe_error
from flowmgr_tui.history_pages import HistoryPager, HistoryRow
from flowmgr_tui.history_query import FilterError, HistoryFilter, parse_filter
from flowmgr_tui.keymap import bindings
from flowmgr_tui.state.panel_state import PanelState
from flowmgr_tui.widgets.key_footer import KeyFooter

__all__ = ["HistoryScreen", "FILTERS"]

FILTERS: dict[str, str] = {
    "flow": "flow: name or id",
    "types": "types: activity_log, container_crashed, ...",
    "from": "from: 12:00, 2026-01-01 12:00, 2h",
    "to": "to: (now)",
}
"""Filter box id suffix -> its placeholder."""
PAGE = 100
DETAIL_LINES = 10
"""Lines of the selected event's payload shown under the table."""
_EVENT_STYLE = {
    "container_crashed": "bold red",
    "container_health_warning": "yellow",
    "engine_status": "magenta",
    "activity_log": "cyan",
    "message_received": "green",
}


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%m-%d %H:%M:%S") if at else "-"


class HistoryScreen(Screen[None]):
    """Escape goes back; enter in a filter box applies the filters."""

    BINDINGS = bindings("history")
    AUTO_FOCUS = "#history-table"

    def __init__(
        self,
        backend: Backend,
        state: PanelState,
        *,
        clock: Callable[[], datetime],
        flow: str = "",
        page_size: int = PAGE,
    ) -> None:
        super().__init__()
        self._backend = backend
        self.state = state
        """For flow names (the journal keeps ids)."""
        self._clock = clock
        self._flow = flow
        self.page_size = page_size
        self.pager: HistoryPager | None = None
        """The current filter's pages (None until the first load starts or while the filters
        do not parse)."""
        self.rows: list[HistoryRow] = []
        """Shown, oldest first."""
        self.problem = ""
        """The last error shown (a filter that does not parse, a failed read), or ""."""

    def compose(self) -> ComposeResult:
        """Filter boxes, a status line, the table."""
        yield Header(icon="=")
        with Horizontal(id="history-filters"):
            for key, hint in FILTERS.items():
                value = self._flow if key == "flow" else ""
                yield Input(value, placeholder=hint, id=f"history-{key}", compact=True)
        yield Label("", id="history-status")
        table: DataTable[str | Text] = DataTable(id="history-table", cursor_type="row")
        table.add_column("seq", key="seq")
        table.add_column("time (UTC)", key="time")
        table.add_column("flow", key="flow")
        table.add_column("event", key="event")
        table.add_column("what", key="what")
        yield table
        yield Static("", id="history-detail", markup=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        """The newest page with the filters given."""
        self.apply_filters()

    # --- filters -------------------------------------------------------------------------

    def _box(self, key: str) -> Input:
        return self.query_one(f"#history-{key}", Input)

    def apply_filters(self) -> None:
        """Parse the boxes; on success load the newest page, else say what is wrong."""
        for key in FILTERS:
            self._box(key).remove_class("-invalid")
        try:
            flt = parse_filter(
                flow=self._box("flow").value,
                types=self._box("types").value,
                since=self._box("from").value,
                until=self._box("to").value,
                names=self.state.names(),
                clock=self._clock,
            )
        except FilterError as err:
            box = {"from": "from", "to": "to"}.get(err.field, err.field)
            self._box(box).add_class("-invalid")
            self.pager = None
            self._say(str(err), error=True)
            return
        self.pager = HistoryPager(self._backend, flt, self.page_size)
        self.rows = []
        self._load(self.pager, fresh=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in a box: apply every box, then back to the table."""
        event.stop()
        self.apply_filters()
        if not self.problem:
            self.query_one("#history-table").focus()

    # --- loading -------------------------------------------------------------------------

    @work(group="history", exclusive=True, exit_on_error=False)
    async def _load(self, pager: HistoryPager, *, fresh: bool) -> None:
        self._say("reading the journal...")
        try:
            page = await pager.older()
        except Exception as err:  # shown in the screen: the journal may be off or unreachable
            self._say(f"history unavailable: {describe_error(err)}", error=True)
            return
        if pager is not self.pager:
            return  # the filters changed meanwhile
        self.rows = [*page, *self.rows]
        self._fill(keep_top=0 if fresh else len(page))
        self._status()

    def _fill(self, keep_top: int) -> None:
        """Rebuild the table (older rows go on top); the cursor stays on the row it was on, or
        goes to the newest on a fresh load."""
        table: DataTable[str | Text] = self.query_one("#history-table", DataTable)
        at = table.cursor_row
        table.clear()
        names = self.state.names()
        for row in self.rows:
            cid = row.container_id or ""
            table.add_row(
                str(row.seq),
                _when(row.at),
                names.get(cid, cid[:12]) or "-",
                Text(row.event, style=_EVENT_STYLE.get(row.event, "")),
                row.summary,
                key=str(row.seq),
            )
        if self.rows:
            target = len(self.rows) - 1 if keep_top == 0 else at + keep_top
            table.move_cursor(row=min(target, len(self.rows) - 1), scroll=True)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The selected event's whole payload under the table (a crash's log tail, say)."""
        key = event.row_key.value
        row = next((r for r in reversed(self.rows) if str(r.seq) == key), None)
        detail = self.query_one("#history-detail", Static)
        if row is None:
            detail.update("")
            return
        body = json.dumps(row.data, indent=1, ensure_ascii=False, default=str)
        lines = body.replace("\\n", "\n    ").splitlines()
        more = f"\n... {len(lines) - DETAIL_LINES} more lines" if len(lines) > DETAIL_LINES else ""
        detail.update(f"#{row.seq} {row.event}\n" + "\n".join(lines[:DETAIL_LINES]) + more)

    def _status(self) -> None:
        pager = self.pager
        if pager is None:
            return
        n = len(self.rows)
        if n == 0:
            text = "no journalled event matches these filters"
        else:
            span = f"seq {self.rows[0].seq}-{self.rows[-1].seq}"
            more = "all loaded" if pager.done else "o: older page"
            text = f"{n} events ({span}), newest last | {more} | journal at seq {pager.last_seq}"
        self._say(text)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.problem = text if error else ""
        label = self.query_one("#history-status", Label)
        label.set_class(error, "-error")
        label.update(text)

    # --- actions -------------------------------------------------------------------------

    def action_older(self) -> None:
        """The page before the oldest shown."""
        pager = self.pager
        if pager is None or pager.done:
            self.notify("no older events", timeout=2)
            return
        self._load(pager, fresh=False)

    def action_reload(self) -> None:
        """The newest events again, with the filters as typed."""
        self.apply_filters()

    def action_filters(self) -> None:
        """Into the filter boxes."""
        self._box("flow").focus()

    def action_back(self) -> None:
        """Back to where the user was."""
        self.dismiss()

    @property
    def current_filter(self) -> HistoryFilter | None:
        """What the rows shown were read with."""
        return self.pager.filter if self.pager else None
