"""ContainerTable: one row per managed container of the panel's state, updated cell by cell."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import (
    CellDoesNotExist,
    Column,
    ColumnKey,
    RowDoesNotExist,
    RowKey,
)

from flowmgr_tui.formatting import health_text, percent, size, state_text, uptime
from flowmgr_tui.state.panel_state import PanelState
from server.core.models import STATES, ContainerSnapshot, ResourceSample

__all__ = ["ContainerTable", "COLUMNS", "NODE_COLUMN", "CLUSTER_COLUMNS", "STOPPED"]

COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("name", "Name", 20),
    ("id", "ID", 12),
    ("image", "Image", 10),
    ("state", "State", 12),
    ("health", "Health", 12),
    ("cpu", "CPU", 6),
    ("mem", "Memory", 7),
    ("net", "Net rx/tx", 12),
    ("uptime", "Up", 5),
    ("socket", "Sock", 4),
)
"""Column key, header label, width. Widths are fixed (an update never re-measures the table),
except that name and image share what the others leave by content (`_fit_columns`)."""
NODE_COLUMN = ("node", "Node", 12)
"""Cluster mode only (a hub over Docker Swarm): the hostname of the node running the flow."""
CLUSTER_COLUMNS = (*COLUMNS[:3], NODE_COLUMN, *COLUMNS[3:])
"""The columns when the core is a cluster hub: the node after the image, before the state."""
_BY_KEY = {c[0]: c for c in CLUSTER_COLUMNS}
_ALL_KEYS = tuple(_BY_KEY)
STOPPED = frozenset({"created", "stopped", "exited", "dead"})
"""States `a` hides (what `docker ps` without -a leaves out)."""

_SHARED = ("name", "image")
"""The columns sized by their content; the others hold short values of known width."""
_SHARED_FLOOR = {"name": 20, "image": 10}
"""Neither shared column is cut below its former fixed width (or its content, if shorter) to
fit the other: the name identifies the row, and 80-column terminals keep what they showed."""
_NAME_ROOM = 20
"""Room left over goes to the name column up to this width; beyond it, the table ends early."""

_JOIN = Text("\n")
_NULL = Style.null()
_STATE_ORDER = {s: i for i, s in enumerate(STATES)}
_RENDERED_KEPT = 20_000
"""Rendered cells kept (a screenful is ~400; sorting and scrolling add new keys)."""


_SORT_VALUES: dict[str, Callable[[ContainerSnapshot], Any]] = {
    "name": lambda s: s.name.lower(),
    "id": lambda s: s.id,
    "image": lambda s: s.image,
    "state": lambda s: _STATE_ORDER.get(s.state, 99),
    "health": lambda s: s.health,
    "cpu": lambda s: s.resources.cpu_percent if s.resources else -1.0,
    "mem": lambda s: s.resources.memory_usage if s.resources else -1,
    "net": lambda s: (
        s.resources.network_rx_bytes + s.resources.network_tx_bytes if s.resources else -1
    ),
    "uptime": lambda s: -(s.started_at.timestamp()) if s.started_at else 1e18,
    "socket": lambda s: s.socket_connected,
    "node": lambda s: (s.node is None, (s.node or "").lower()),
}
"""Column -> the row's value to sort by (made once: a sort of 1,000 rows asks 1,000 times)."""


def _sort_value(snap: ContainerSnapshot, column: str) -> Any:
    return (_SORT_VALUES[column](snap), snap.name.lower())


def _close(shown: ResourceSample | None, new: ResourceSample | None) -> bool:
    """Whether `new` is near enough to the sample on screen to leave the cells alone.

    Idle containers jitter by a few KiB and tenths of a percent every second; redrawing for
    that would repaint the table every second (the DataTable repaints every visible row on any
    cell change), so small moves wait until they add up. The detail graphs show every sample.
    """
    if shown is None or new is None:
        return shown is new
    return (
        abs(new.cpu_percent - shown.cpu_percent) < max(0.5, 0.1 * shown.cpu_percent)
        and abs(new.memory_usage - shown.memory_usage) < max(1024 * 1024, 0.05 * shown.memory_usage)
        and abs(new.network_rx_bytes - shown.network_rx_bytes)
        < max(4096, 0.02 * shown.network_rx_bytes)
        and abs(new.network_tx_bytes - shown.network_tx_bytes)
        < max(4096, 0.02 * shown.network_tx_bytes)
    )


def _looks_the_same(shown: ContainerSnapshot, new: ContainerSnapshot) -> bool:
    """Whether every cell (and sort value) of `shown`'s row would read the same for `new`.

    Most batches are a second's samples of idle containers: this answers them without
    copying a snapshot or formatting a cell.
    """
    return (
        (new.resources is shown.resources or _close(shown.resources, new.resources))
        and new.state == shown.state
        and new.health == shown.health
        and new.started_at == shown.started_at
        and new.socket_connected == shown.socket_connected
        and new.name == shown.name
        and new.image == shown.image
        and new.node == shown.node
    )


class ContainerTable(DataTable[Any]):
    """Rows keyed by full container id; only cells whose text changed are rewritten."""

    _ordered_columns: list[Column] | None = None
    """`ordered_columns`, once listed (DataTable's own __init__ already asks for it)."""

    class ContainerSelected(Message):
        """The cursor moved onto a container (or off the last one: None)."""

        def __init__(self, container_id: str | None) -> None:
            super().__init__()
            self.container_id = container_id

    class VisibleRowsChanged(Message):
        """The rows on screen may be others now (scroll, resize, sort, filter, rows came or
        went): the screen tells the core which containers to sample at full rate."""

    class OpenRequested(Message):
        """The user chose a container (Enter or a click on the selected row)."""

        def __init__(self, container_id: str) -> None:
            super().__init__()
            self.container_id = container_id

    def __init__(
        self,
        state: PanelState,
        *,
        clock: Callable[[], datetime],
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, name=name, id=id, classes=classes)
        self._state = state
        """Where rows come from; the table keeps only what it drew."""
        self._clock = clock
        self._cells: dict[str, tuple[Any, ...]] = {}
        """Row -> the cells on screen, so an update rewrites only the ones that differ."""
        self._drawn: dict[str, tuple[ContainerSnapshot, str | None]] = {}
        """Row -> the snapshot (its usage held while within `_close`) and busy mark drawn."""
        self.filter_text = ""
        """Rows whose name, id, image or state contain this (case-insensitive) are shown."""
        self.sort_column = "name"
        self.sort_reverse = False
        self._pinned = False
        """Set once the user moves the cursor: from then on it follows its container."""
        self._refit = True
        """Rows came or went, a name or image changed, or the table resized: widths are due."""
        self._rendered: dict[tuple[Any, ...], tuple[object, int, Any]] = {}
        """Cell render key -> (the cell value rendered, at which row index, its lines): see
        `_render_cell`."""
        self._kept: dict[str, tuple[tuple[ContainerSnapshot, str | None], tuple[Any, ...]]] = {}
        """Rows drawn before a filter change, with their cells: reused when unchanged."""
        self._unseen: set[str] = set()
        """Rows rewritten while off screen, without a repaint: see `_patch`."""
        self._seen: tuple[str, ...] = ()
        """The rows on screen when `VisibleRowsChanged` was last posted."""
        self.show_stopped = True
        """Rows of stopped flows (STOPPED) are listed; `a` toggles it."""
        self.marked: set[str] = set()
        """Containers marked (space) for an action on all of them; kept across sorts and
        filters, dropped when the container goes."""
        self._cluster = False
        """The core is a cluster hub: the Node column shows if chosen."""
        self._chosen: tuple[str, ...] = _ALL_KEYS
        """The columns the user chose, in order (node shows in cluster mode only)."""
        self._columns: tuple[tuple[str, str, int], ...] = COLUMNS
        """The columns shown: the chosen ones this core has."""
        self._keys = [c[0] for c in COLUMNS]
        self._pick: tuple[int, ...] = ()
        self._uptime: int | None = None
        self._use_columns()

    def on_mount(self) -> None:
        """Add the fixed-width columns (with the node's when the state is a hub's already)."""
        if self._state.cluster:
            self._cluster = True
            self._use_columns()
        for key, label, width in self._columns:
            self.add_column(label, key=key, width=width)
        self.fixed_columns = 1

    @property
    def column_keys(self) -> list[str]:
        """The keys of the columns shown, in order."""
        return list(self._keys)

    @property
    def shows_nodes(self) -> bool:
        """Whether the core is known to be a cluster hub (the Node column shows if chosen)."""
        return self._cluster

    @property
    def chosen_columns(self) -> tuple[str, ...]:
        """The columns the user chose, in order (node included even on one host)."""
        return self._chosen

    def show_nodes(self) -> None:
        """Add the Node column (once: the core turned out to be a cluster hub)."""
        if not self._cluster:
            self._cluster = True
            self._relay_columns()

    def set_columns(self, chosen: Iterable[str]) -> None:
        """Show these columns in this order (unknown names are skipped; name always shows)."""
        keys = tuple(dict.fromkeys(k for k in chosen if k in _BY_KEY))
        if "name" not in keys:
            keys = ("name", *keys)
        if keys != self._chosen:
            self._chosen = keys
            if self.is_mounted:
                self._relay_columns()
            else:
                self._use_columns()  # on_mount adds them

    def toggle_mark(self, container_id: str) -> None:
        """Mark the row, or unmark it."""
        self.marked.symmetric_difference_update({container_id})
        self._redraw_name(container_id)

    def clear_marks(self) -> None:
        """Unmark every row."""
        marked, self.marked = self.marked, set()
        for cid in marked:
            self._redraw_name(cid)

    def _redraw_name(self, container_id: str) -> None:
        """The name cell anew (marked or not): Text equality ignores the style, so `_patch`
        would not see the change."""
        self._kept.pop(container_id, None)  # a row filtered out is formatted anew when back
        drawn = self._drawn.get(container_id)
        if drawn is None:
            return
        at, cells = self._keys.index("name"), self._cells[container_id]
        cell = self._cells_for(drawn[0])[at]
        self._cells[container_id] = (*cells[:at], cell, *cells[at + 1 :])
        self.update_cell(container_id, "name", cell)

    def _relay_columns(self) -> None:
        """The columns changed: the rows are laid again, each formatted once, as a filter
        change lays them."""
        keep = self.selected_id
        self._use_columns()
        if self.sort_column not in self._keys:
            self.sort_column, self.sort_reverse = "name", False
        self.clear(columns=True)
        self._ordered_columns = None
        self._rendered.clear()
        self._kept.clear()
        for key, label, width in self._columns:
            self.add_column(label, key=key, width=width)
        drawn, self._drawn = self._drawn, {}
        self._cells.clear()
        self._unseen.clear()
        for cid, (snap, mark) in drawn.items():
            self._drawn[cid] = (snap, mark)
            self._cells[cid] = cells = self._cells_for(snap)
            self.add_row(*cells, key=cid)
        self._refit = True
        self._sort_keeping(keep)
        self._fit_columns()

    def _use_columns(self) -> None:
        keys = [k for k in self._chosen if k != "node" or self._cluster]
        self._columns = tuple(_BY_KEY[k] for k in keys)
        self._keys = keys
        self._pick = tuple(_ALL_KEYS.index(k) for k in keys)
        self._uptime = keys.index("uptime") if "uptime" in keys else None

    # --- data in -------------------------------------------------------------------------

    def show_rows(self, container_ids: Iterable[str]) -> None:
        """Draw these containers as the state now has them: add, rewrite changed cells, or
        drop (gone or filtered out); re-sort when the order may change."""
        resort = False
        containers, busy = self._state.containers, self._state.busy
        for cid in container_ids:
            snap = containers.get(cid)
            if snap is None or not self._matches(snap):
                if snap is None:
                    self.marked.discard(cid)
                self._drop_row(cid)
                continue
            drawn = self._drawn.get(cid)
            old = drawn[0] if drawn is not None else None
            mark = busy.get(cid)
            if drawn is not None and old is not None:
                if drawn[1] == mark and _looks_the_same(old, snap):
                    continue  # nothing on screen would change: skip formatting entirely
                if snap.resources is not old.resources and _close(old.resources, snap.resources):
                    snap = replace(snap, resources=old.resources)
            self._drawn[cid] = (snap, mark)
            if old is None:
                self._add(snap)
                resort = True
            else:
                resort |= self._patch(snap) and (
                    _sort_value(old, self.sort_column) != _sort_value(snap, self.sort_column)
                )
        if resort:
            self.apply_sort()
        if self._refit:
            self._fit_columns()
            self._rows_moved()

    def refresh_clock(self) -> None:
        """Rewrite the uptime cells whose text changed (minutes: a third of the rows at most
        per tick). Only that cell is formatted: formatting whole rows at 1,000 rows was a
        50-90 ms burst every tick, the panel's busiest second when idle (bench/RESULTS.md)."""
        at = self._uptime
        if at is None:
            return  # the column is hidden
        now, (top, bottom) = self._clock(), self._on_screen()
        rows, column = self._row_locations, ColumnKey("uptime")
        for cid, (snap, _) in self._drawn.items():
            cells = self._cells[cid]
            text = _uptime_text(snap, now)
            if cells[at].plain == text:
                continue
            cell = Text(text)
            self._cells[cid] = (*cells[:at], cell, *cells[at + 1 :])
            index = rows.get(RowKey(cid))
            if index is not None and top <= index < bottom:
                self.update_cell(cid, column, cell)
            else:
                self._data[RowKey(cid)][column] = cell
                self._unseen.add(cid)

    def set_filter(self, text: str) -> None:
        """Show only matching rows, in sort order, the cursor on its container if it stays.

        The rows are laid again from scratch: DataTable removes a row in time linear in the
        rows (its index map is rebuilt), so dropping 1,000 one by one took seconds, while
        adding 1,000 and one sort takes milliseconds."""
        text = text.strip().lower()
        if text == self.filter_text:
            return
        self.filter_text = text
        self._relay_rows()

    def set_show_stopped(self, show: bool) -> None:
        """List (or leave out) the rows of stopped flows, as a filter does."""
        if show != self.show_stopped:
            self.show_stopped = show
            self._relay_rows()

    def _relay_rows(self) -> None:
        keep, busy, containers = self.selected_id, self._state.busy, self._state.containers
        kept = self._kept
        kept.update({cid: (drawn, self._cells[cid]) for cid, drawn in self._drawn.items()})
        for gone in kept.keys() - containers.keys():
            del kept[gone]
        self.marked.intersection_update(containers.keys())
        self.clear()
        self._cells.clear()
        self._drawn.clear()
        self._unseen.clear()
        for cid, snap in containers.items():
            if not self._matches(snap):
                continue
            mark, was = busy.get(cid), kept.get(cid)
            if was is not None and was[0][1] == mark and _looks_the_same(was[0][0], snap):
                self._drawn[cid], cells = was  # as drawn before: no formatting
            else:
                self._drawn[cid], cells = (snap, mark), self._cells_for(snap)
            self._cells[cid] = cells
            self.add_row(*cells, key=cid)
        self._refit = True
        self._sort_keeping(keep)  # the cursor: on its container (pinned) or the top row
        self._fit_columns()

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by `column`; the same column again flips the order."""
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self.apply_sort()

    def apply_sort(self) -> None:
        """Reorder rows, keeping the cursor on the same container."""
        self._sort_keeping(self.selected_id)

    def _sort_keeping(self, keep: str | None) -> None:
        # By the name column, which always shows: each row's name cell is its own object,
        # so the cell identifies the row (names alone may repeat across nodes).
        data, name = self._data, ColumnKey("name")
        values = {
            id(data[RowKey(cid)][name]): _sort_value(snap, self.sort_column)
            for cid, (snap, _) in self._drawn.items()
        }
        self.sort("name", key=lambda cell: values[id(cell)], reverse=self.sort_reverse)
        self._unseen.clear()  # sorting repaints every row anew
        if self._pinned and keep is not None and keep in self._cells:
            self.move_cursor(row=self.get_row_index(keep), animate=False)
        elif not self._pinned:
            self.move_cursor(row=0, animate=False)
        self._rows_moved()

    # --- data out ------------------------------------------------------------------------

    @property
    def selected_id(self) -> str | None:
        """Full id of the container under the cursor."""
        if not self._cells or self.row_count == 0:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except (CellDoesNotExist, RowDoesNotExist):
            return None

    def select(self, container_id: str) -> None:
        """Move the cursor to a container's row if it is shown."""
        if container_id in self._cells:
            self._pinned = True
            self.move_cursor(row=self.get_row_index(container_id), animate=False)

    @property
    def shown_ids(self) -> list[str]:
        """Ids of the rows on display, in table order."""
        return [str(row.key.value) for row in self.ordered_rows]

    @property
    def visible_ids(self) -> list[str]:
        """Ids of the rows on screen now, top to bottom."""
        top, bottom = self._on_screen()
        keys = map(self._row_locations.get_key, range(top, min(bottom, self.row_count)))
        return [str(key.value) for key in keys if key is not None]

    def shows(self, container_id: str) -> bool:
        """Whether the container has a row (it may be scrolled off screen)."""
        return container_id in self._cells

    def cell_text(self, container_id: str, column: str) -> str:
        """The plain text of one cell (tests and the tmux harness read this)."""
        return str(self._cells[container_id][self._keys.index(column)])

    # --- handlers ------------------------------------------------------------------------

    def on_resize(self) -> None:
        """Share the new width (DataTable's own resize handler runs as well)."""
        self._refit = True
        self._fit_columns()
        self._rows_moved()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Rows scrolled into view that changed while off screen are painted anew."""
        super().watch_scroll_y(old_value, new_value)
        self._rows_moved()

    def on_key(self) -> None:
        """Any key on the table pins the cursor to the container under it."""
        self._pinned = True

    def on_click(self) -> None:
        """So does a click."""
        self._pinned = True

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Tell the screen which container is selected."""
        event.stop()
        self.post_message(self.ContainerSelected(self.selected_id))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a row opens its detail."""
        event.stop()
        self.post_message(self.OpenRequested(str(event.row_key.value)))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by that column."""
        event.stop()
        self.sort_by(str(event.column_key.value))

    # --- helpers -------------------------------------------------------------------------

    @property
    def ordered_columns(self) -> list[Column]:
        """The columns in screen order, listed once: they never move after mount (widths
        change in place), while DataTable lists them anew for every row added and every line
        painted (a third of a 1,000-row filter's time)."""
        if self._ordered_columns is None or len(self._ordered_columns) != len(self.columns):
            self._ordered_columns = super().ordered_columns
        return self._ordered_columns

    def _on_screen(self) -> tuple[int, int]:
        """The row indexes [top, bottom) the table's height shows at its scroll offset."""
        top = max(0, self.scroll_offset.y)  # rounded, as the lines are rendered
        height = self.size.height - (self.header_height if self.show_header else 0)
        return top, top + max(0, height)

    def _rows_moved(self) -> None:
        """The rows on screen may be others: repaint those that changed unseen, and tell
        the screen when the set differs from the one last told."""
        seen = tuple(self.visible_ids)
        if self._unseen and not self._unseen.isdisjoint(seen):
            self._unseen.clear()
            self._update_count += 1  # the keys of DataTable's render caches: all anew
            self.refresh()
        if seen != self._seen:
            self._seen = seen
            self.post_message(self.VisibleRowsChanged())

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """Only the virtual size: every column has a set width and every row one line, so
        DataTable's measuring of each new row's cells (~0.3 ms a row) decides nothing."""
        super()._update_dimensions(())

    def _matches(self, snap: ContainerSnapshot) -> bool:
        if not self.show_stopped and snap.state in STOPPED:
            return False
        if not self.filter_text:
            return True
        hay = f"{snap.name} {snap.id[:12]} {snap.image} {snap.state} {snap.health}".lower()
        if snap.node is not None:  # cluster mode: a node's flows by its hostname
            hay = f"{hay} {snap.node.lower()}"
        return self.filter_text in hay

    def _cells_for(self, snap: ContainerSnapshot) -> tuple[Any, ...]:
        res = snap.resources
        net = "-" if res is None else (f"{size(res.network_rx_bytes)}/{size(res.network_tx_bytes)}")
        # Text, never str: DataTable parses a str cell as markup (costly on every first paint,
        # and an image name is not markup).
        # A marked row's name is reversed (readable without colour); the summary counts them.
        every = (
            Text(snap.name, style="bold reverse" if snap.id in self.marked else "bold"),
            Text(snap.short_id),
            Text(snap.image),
            Text(snap.node or "-"),  # a flow with no task (yet) runs nowhere
            state_text(snap.state, self._state.busy.get(snap.id)),
            health_text(snap.health),
            Text(percent(res.cpu_percent if res else None)),
            Text(size(res.memory_usage if res else None)),
            Text(net),
            Text(_uptime_text(snap, self._clock())),
            Text("on" if snap.socket_connected else "--"),
        )
        return tuple(every[i] for i in self._pick)

    def _fit_columns(self) -> None:
        """Give name and image their content's width out of what the other columns leave.

        Runs when rows come or go, a name or image changes, or the table resizes (never for a
        usage update): one pass over the shown rows' two cells, and a redraw only when a width
        actually changes.
        """
        self._refit = False
        keys, columns = self._keys, self._columns
        want = {
            key: max(
                [len(label), *(cells[keys.index(key)].cell_len for cells in self._cells.values())]
            )
            for key, label, _ in columns
            if key in _SHARED
        }
        others = sum(w for key, _, w in columns if key not in _SHARED)
        # Room for the two: the width less the others, every cell's padding and the vertical
        # scrollbar (reserved, so widths do not change when enough rows arrive to need it).
        room = self.size.width - others - 2 * self.cell_padding * len(columns)
        room -= self.styles.scrollbar_size_vertical
        widths = _share(want, max(room, 0))
        changed = False
        for key, width in widths.items():
            column = self.columns.get(ColumnKey(key))
            if column is not None and column.width != width:
                column.width = width
                changed = True
        if changed:
            # DataTable's render caches do not key on a column's width: drop them (the update
            # count is in every cell's key) and let it re-measure the virtual width.
            self._clear_caches()
            self._rendered.clear()
            self._update_count += 1
            self._require_update_dimensions = True
            self.refresh()

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> Any:
        """DataTable renders every visible cell again after any `update_cell` (its caches key
        on a table-wide update count), so one idle container's CPU moving past `_close`
        repainted all 40 rows from scratch. Cells whose value object is the one rendered
        before, at the same width and style, reuse their lines; at another row index (a
        sort, a filter, a row above came or went) only the row in their styles' meta (what a
        click reads) is rewritten: ~10 us a cell instead of Rich's ~180 us here."""
        if row_index < 0 or column_index < 0:  # the header and row labels: DataTable's own
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        value = self._data[row_key][column_key]
        key = (
            row_key,
            column_key,
            base_style,
            width,
            cursor,
            hover,
            self._show_hover_cursor,
            self._pseudo_class_state,
            self.app.theme,
        )
        hit = self._rendered.get(key)
        if hit is not None and hit[0] is value:
            if hit[1] == row_index:
                return hit[2]
            lines = _moved(hit[2], Style.from_meta({"row": row_index, "column": column_index}))
        else:
            lines = None
            if isinstance(value, Text) and self.rows[row_key].height == 1:
                lines = self._render_text_cell(
                    value, row_index, column_index, base_style, width, cursor, hover
                )
            if lines is None:
                lines = super()._render_cell(
                    row_index, column_index, base_style, width, cursor, hover
                )
        if len(self._rendered) > _RENDERED_KEPT:
            self._rendered.clear()  # rows went or changed often: start again, not grow
        self._rendered[key] = (value, row_index, lines)
        return lines

    def _render_text_cell(
        self,
        value: Text,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool,
        hover: bool,
    ) -> list[list[Segment]] | None:
        """What DataTable's `_render_cell` draws for a one-line Text cell, without Rich's
        generic renderer (Styled(Padding(Text)) through `Console.render_lines`): ~40 us a
        cell instead of ~200 us here, so a screenful of new rows (a sort, a filter, a page
        down) paints within a frame. None when it is not plain (DataTable renders it);
        tests/tui/test_table_scale.py checks the two agree cell for cell."""
        component, post = self._get_styles_to_render_cell(
            False,
            False,
            row_index < self.fixed_rows or column_index < self.fixed_columns,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index})
        return one_line_cell(
            self.app.console, value, width, self.cell_padding, pre + component, post
        )

    def _add(self, snap: ContainerSnapshot) -> None:
        cells = self._cells_for(snap)
        self._cells[snap.id] = cells
        self._refit = True
        self.add_row(*cells, key=snap.id)

    def _patch(self, snap: ContainerSnapshot) -> bool:
        """Rewrite only the cells whose text differs; return whether any did.

        A row off screen takes its new cells without a repaint (`update_cell` would repaint
        every visible row): it is marked unseen, and painted anew when scrolled to."""
        new = self._cells_for(snap)
        old = self._cells[snap.id]
        if new == old:
            return False
        self._cells[snap.id] = new
        top, bottom = self._on_screen()
        index = self._row_locations.get(RowKey(snap.id))
        shown = index is not None and top <= index < bottom
        data = self._data[RowKey(snap.id)]
        for (key, _, _), before, after in zip(self._columns, old, new, strict=True):
            if before != after:
                if shown:
                    self.update_cell(snap.id, key, after)
                else:
                    data[ColumnKey(key)] = after
                if key in _SHARED:
                    self._refit = True
        if not shown:
            self._unseen.add(snap.id)
        return True

    def _drop_row(self, container_id: str) -> None:
        self._drawn.pop(container_id, None)
        self._unseen.discard(container_id)
        if self._cells.pop(container_id, None) is not None:
            self._refit = True
            self.remove_row(container_id)


def _uptime_text(snap: ContainerSnapshot, now: datetime) -> str:
    return uptime(snap.started_at, now) if snap.state == "running" else "-"


def one_line_cell(
    console: Console, cell: Text, width: int, pad: int, pre: Style, post: Style
) -> list[list[Segment]] | None:
    """`cell` as `console.render_lines(Styled(Padding(cell, (0, pad)), pre, post), options
    of `width` x 1, no wrap)` renders it, for plain one-line text (no newline, tab or wide
    character, left-justified, cropped); None otherwise."""
    plain, inner = cell.plain, width - 2 * pad
    if (
        inner < 1
        or "\n" in plain
        or "\t" in plain
        or cell_len(plain) != len(plain)
        or cell.justify not in (None, "default", "left")
        or cell.overflow not in (None, "fold", "crop")
    ):
        return None
    line = cell.copy()
    line.truncate(inner, overflow=cell.overflow or "fold")
    # Joined, as Text's own rendering does: the cell's style becomes a span of the line.
    segments = Segment.adjust_line_length(list(_JOIN.join([line]).render(console)), inner, _NULL)
    side = Segment(" " * pad, _NULL)
    out = []
    for text, style, control in [side, *segments, side] if pad else segments:
        if pre:
            style = pre + style
        if post:
            style = style + post if style else post
        out.append(Segment(text, style, control))
    return [out]


def _moved(lines: list[list[Segment]], meta: Style) -> list[list[Segment]]:
    """A cell's rendered lines with `meta` (its new row and column) over each style's meta:
    what a fresh render at that place gives, since nothing else in a cell depends on its row
    (no zebra stripes, no fixed rows)."""
    restyled: dict[Style | None, Style] = {}
    out = []
    for line in lines:
        new_line = []
        for seg in line:
            style = restyled.get(seg.style)
            if style is None:
                style = restyled[seg.style] = (seg.style or Style()) + meta
            new_line.append(Segment(seg.text, style, seg.control))
        out.append(new_line)
    return out


def _share(want: dict[str, int], room: int) -> dict[str, int]:
    """Widths for the shared columns, out of `room` but never less than their former fixed
    widths together (a narrow terminal scrolls sideways, as it did): each its content when all
    fit (spare to the name, up to `_NAME_ROOM`); else each keeps its floor (or less content)
    and the rest goes to the image first, so a short `flow:latest` is whole when the name has
    room to spare."""
    floors = {key: _SHARED_FLOOR[key] for key in want}  # the image column may be hidden
    room = max(room, sum(floors.values()))
    if sum(want.values()) <= room:
        out = dict(want)
        out["name"] = max(out["name"], min(_NAME_ROOM, room - sum(want.values()) + out["name"]))
        return out
    out = {key: min(w, floors[key]) for key, w in want.items()}
    left = room - sum(out.values())
    for key in [k for k in ("image", "name") if k in want]:
        grant = max(0, min(want[key] - out[key], left))
        out[key] += grant
        left -= grant
    return out
