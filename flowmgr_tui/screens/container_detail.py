"""ContainerDetailScreen: one container's graphs, live logs, messages, activity and config."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Header, Label, TabbedContent, TabPane

from flowmgr_tui.backend import Backend
from flowmgr_tui.formatting import (
    describe_error,
    health_text,
    percent,
    size,
    state_text,
    uptime_exact,
)
from flowmgr_tui.graph_scale import (
    counter_rates,
    cpu_scale,
    host_cpu_scale,
    host_memory_scale,
    memory_scale,
    rate_scale,
)
from flowmgr_tui.history_pages import (
    ACTIVITY_TYPES,
    HistoryPager,
    to_activity,
)
from flowmgr_tui.history_query import HistoryFilter
from flowmgr_tui.host_stats import HostSample
from flowmgr_tui.keymap import bindings
from flowmgr_tui.messages import ContainerActionRequested
from flowmgr_tui.state.activity_keys import merge_activity
from flowmgr_tui.state.panel_state import HISTORY_SAMPLES, Changes, PanelState
from flowmgr_tui.widgets.activity_list import ActivityList
from flowmgr_tui.widgets.config_view import ConfigView
from flowmgr_tui.widgets.docker_banner import DockerBanner
from flowmgr_tui.widgets.key_footer import KeyFooter
from flowmgr_tui.widgets.log_pane import LogLine, LogPane, split_stamp
from flowmgr_tui.widgets.message_pane import MessagePane
from flowmgr_tui.widgets.resource_graph import ResourceGraph
from server.core.events import ActivityLogged, ContainerCrashed, Event, LogLineReceived
from server.core.models import ContainerSnapshot, ResourceSample

__all__ = ["ContainerDetailScreen", "HOST_INTERVAL"]

HOST_INTERVAL = 2.0
"""Seconds between host CPU/memory samples while this screen is open."""
ACTIVITY_PAGE = 200
"""Journalled activity and crash reports the Activity tab loads when first shown."""


class ContainerDetailScreen(Screen[None]):
    """Follows the container's logs while open and stops following when closed."""

    BINDINGS = bindings("detail")

    def __init__(
        self,
        container_id: str,
        *,
        state: PanelState,
        backend: Backend,
        clock: Callable[[], datetime],
        host_probe: Callable[[], HostSample],
        host_interval: float = HOST_INTERVAL,
        host_title: str = "Host",
    ) -> None:
        super().__init__()
        self.container_id = container_id
        """Full id of the container shown."""
        self.state = state
        """What the screen shows; the app folds events into it and calls `show_changes`."""
        self._backend = backend
        """For its logs and messages (the rest comes from the state)."""
        self._clock = clock
        self._host_probe = host_probe
        self.host_interval = host_interval
        self._host_title = host_title
        """Whose CPU and memory `host_probe` reads: the manager's host, unless remote."""
        self._host_cpu: deque[float] = deque(maxlen=HISTORY_SAMPLES)
        self._host_mem: deque[float] = deque(maxlen=HISTORY_SAMPLES)
        """Bytes in use, drawn against the host's total."""
        self._followed: str | None = None
        self._early_lines: list[LogLine] | None = []

    def compose(self) -> ComposeResult:
        """Summary line over four tabs."""
        yield Header(icon="=")
        yield DockerBanner(id="docker-banner")
        yield Label("", id="detail-summary")
        with TabbedContent(initial="overview"):
            with TabPane("Graphs 1", id="overview"):
                with Grid(id="graphs"):
                    yield ResourceGraph("CPU", id="graph-cpu")
                    yield ResourceGraph("Memory", id="graph-mem")
                    yield ResourceGraph("Net rx", id="graph-net-rx")
                    yield ResourceGraph("Net tx", id="graph-net-tx")
                    yield ResourceGraph("Disk read", id="graph-blk-read")
                    yield ResourceGraph("Disk write", id="graph-blk-write")
                    yield ResourceGraph(f"{self._host_title} CPU", id="graph-host-cpu")
                    yield ResourceGraph(f"{self._host_title} memory", id="graph-host-mem")
                yield Label("", id="detail-info")
            with TabPane("Logs 2", id="logs"):
                panel = getattr(self.app, "panel", None)  # panel.toml, when the app has one
                yield LogPane(id="log-pane", defaults=panel.logs if panel is not None else None)
            with TabPane("Messages 3", id="messages"):
                yield MessagePane(id="message-pane")
            with TabPane("Activity 4", id="activity"):
                yield ActivityList(crash_tail=20, id="detail-activity")
            with TabPane("Config 5", id="inspect"):
                yield ConfigView(id="detail-config")
        yield KeyFooter()

    def on_mount(self) -> None:
        """Fill from the state, then start following logs and sampling the host."""
        state = self.state
        self.query_one(DockerBanner).show_state(state.docker_available, state.docker_problem)
        self._show_snapshot()
        self._show_graphs()
        self.query_one(MessagePane).add(state.messages.get(self.container_id, ()))
        self.query_one(ActivityList).add(self._heard_activity(), state.names())
        self.journal_read = False
        """Whether the Activity tab holds the journal's page (read when the tab is first shown,
        so opening the view costs no journal read)."""
        self._follow(self.query_one(LogPane).tail)
        self._sample_host()
        self._ready = True

    def on_unmount(self) -> None:
        """Stop following; the app runs it since this screen's workers are gone."""
        if self._followed is not None:
            self.app.run_worker(
                self._backend.unfollow_logs(self._followed), group="core", exit_on_error=False
            )

    def show_changes(self, changes: Changes, events: Sequence[Event]) -> None:
        """Redraw what one batch of events (or a busy mark) changed for this container."""
        if not getattr(self, "_ready", False):
            return  # on_mount reads the state, which already holds these events
        if not self.is_attached:
            return  # the app is quitting: its widgets are being removed under it
        cid = self.container_id
        if cid in changes.removed:
            self.notify(f"{self._display_name()} was removed", severity="warning")
            self.dismiss()
            return
        if cid in changes.rows:
            self._show_snapshot()
        if cid in changes.samples:
            self._show_graphs()
        if changes.docker:
            state = self.state
            self.query_one(DockerBanner).show_state(state.docker_available, state.docker_problem)
        lines = [
            LogLine(e.at, e.line)
            for e in events
            if isinstance(e, LogLineReceived) and e.container_id == cid
        ]
        if lines:
            if self._early_lines is not None:
                self._early_lines.extend(lines)
            else:
                self.query_one(LogPane).append(lines)
        if cid in changes.messages:
            box = self.state.messages.get(cid, ())
            new = [m for m in box if any(m.at == e.at for e in events)]
            self.query_one(MessagePane).add(new)
        if changes.recalled and not self.journal_read:  # the core's history, read at its start
            pane = self.query_one(ActivityList)
            pane.clear()
            pane.add(self._heard_activity(), self.state.names())
        elif changes.activity:
            mine = [
                e
                for e in events
                if isinstance(e, ActivityLogged | ContainerCrashed) and e.container_id == cid
            ]
            self.query_one(ActivityList).add(mine, self.state.names())

    def _heard_activity(self) -> list[ActivityLogged | ContainerCrashed]:
        """This container's activity and crashes the panel holds in memory, oldest first."""
        state = self.state
        history: list[ActivityLogged | ContainerCrashed] = [*state.activity, *state.crashes]
        return sorted(
            (e for e in history if e.container_id == self.container_id), key=lambda e: e.at
        )

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """The Activity tab, first shown: read the journal for it."""
        if event.pane.id == "activity" and not self.journal_read:
            self.journal_read = True
            self._load_activity()
        elif event.pane.id == "inspect":  # read each time it is shown: a restart may change it
            self._load_config()

    # --- workers -------------------------------------------------------------------------

    @work(group="activity", exclusive=True, exit_on_error=False)
    async def _load_activity(self) -> None:
        """The journal's newest page of this flow's activity and crash reports (they outlive a
        manager restart), merged with what the panel heard live meanwhile."""
        flt = HistoryFilter(container_id=self.container_id, types=ACTIVITY_TYPES)
        pager = HistoryPager(self._backend, flt, page_size=ACTIVITY_PAGE)
        pane = self.query_one(ActivityList)
        try:
            rows = await pager.older()
        except Exception as err:  # what the panel heard stays shown; say why there is no more
            pane.write(Text(f"[journal unavailable: {describe_error(err)}]", style="yellow"))
            return
        names = self.state.names()
        journal = [item for row in rows if (item := to_activity(row, names)) is not None]
        pane.clear()
        pane.add(merge_activity(journal, self._heard_activity()), names)

    @work(group="config", exclusive=True, exit_on_error=False)
    async def _load_config(self) -> None:
        view = self.query_one(ConfigView)
        try:
            cfg = await self._backend.inspect_container(self.container_id)
        except Exception as err:  # shown in the tab; the rest of the screen works on
            view.show_error(describe_error(err))
            return
        view.show(cfg)

    @work(group="logs", exclusive=True, exit_on_error=False)
    async def _follow(self, tail: int) -> None:
        pane = self.query_one(LogPane)
        since = pane.since  # a "since" preset loads every line of it the pane can keep
        self._early_lines = []
        try:
            if self._followed is None:
                self._followed = await self._backend.follow_logs(self.container_id)
            got = await self._backend.get_logs(
                self.container_id,
                tail=pane.max_lines if since else tail,
                since=since,
                timestamps=True,
            )
        except Exception as err:  # shown in the pane: logs are optional, the screen works on
            pane.load([f"[logs unavailable: {describe_error(err)}]"])
            self._early_lines = None
            return
        old = [split_stamp(line) for line in got]
        early, self._early_lines = self._early_lines or [], None
        # Lines that arrived while the tail loaded may repeat its end: keep only new ones.
        recent = {line.text for line in old[-len(early) :]} if early else set()
        pane.load([*old, *(line for line in early if line.text not in recent)])

    @work(group="host-stats", exclusive=True, exit_on_error=False)
    async def _sample_host(self) -> None:
        probe = self._host_probe
        await asyncio.to_thread(probe)  # primes psutil's CPU counter
        while True:
            await asyncio.sleep(self.host_interval)
            h = await asyncio.to_thread(probe)
            self._host_cpu.append(h.cpu_percent)
            self._host_mem.append(float(h.memory_used))
            cpu, mem = host_cpu_scale(h.cores), host_memory_scale(h.memory_total)
            self.query_one("#graph-host-cpu", ResourceGraph).show(
                self._host_cpu, f"{h.cpu_percent:.1f}% of {cpu.top_label} ({cpu.legend})", cpu
            )
            self.query_one("#graph-host-mem", ResourceGraph).show(
                self._host_mem,
                f"{size(h.memory_used)} of {mem.top_label} {mem.legend} ({h.memory_percent:.0f}%)",
                mem,
            )

    # --- handlers and actions ------------------------------------------------------------

    def on_log_pane_tail_changed(self, event: LogPane.TailChanged) -> None:
        """Reload with the new tail length."""
        self._follow(event.tail)

    def on_log_pane_since_changed(self, event: LogPane.SinceChanged) -> None:
        """Reload the lines of the chosen span."""
        self._follow(self.query_one(LogPane).tail)

    def on_message_pane_send_requested(self, event: MessagePane.SendRequested) -> None:
        """Send the checked JSON in a worker."""
        self._send(event.message)

    @work(group="commands", exit_on_error=False)
    async def _send(self, message: dict[str, object]) -> None:
        pane = self.query_one(MessagePane)
        try:
            await self._backend.send_message(self.container_id, message)
        except Exception as err:  # the typed error is shown under the editor
            pane.show_error(describe_error(err))
            self.notify(describe_error(err), title="Send failed", severity="error")
        else:
            self.notify(f"sent to {self._display_name()}", title="Message", timeout=2)

    def action_back(self) -> None:
        """Back to the list."""
        self.dismiss()

    def action_tab(self, tab: str) -> None:
        """Switch tabs; the logs tab takes focus so its keys work at once."""
        self.query_one(TabbedContent).active = tab
        focus = {
            "logs": "#log-view",
            "messages": "#msg-editor",
            "activity": "#detail-activity",
            "inspect": "#detail-config",
        }
        if tab in focus:
            self.query_one(focus[tab]).focus()

    def action_act(self, verb: str) -> None:
        """Run a verb on this container."""
        self.post_message(ContainerActionRequested(verb, self.container_id))

    # --- helpers -------------------------------------------------------------------------

    def _snap(self) -> ContainerSnapshot | None:
        return self.state.containers.get(self.container_id)

    def _display_name(self) -> str:
        return self.state.name_of(self.container_id)

    def _show_snapshot(self) -> None:
        snap = self._snap()
        if snap is None:
            return
        now = self._clock()
        up = now - snap.started_at if snap.started_at and snap.state == "running" else None
        line = Text.assemble(
            (snap.name, "bold"),
            f"  {snap.short_id}  {snap.image}  ",
            state_text(snap.state, self.state.busy.get(snap.id)),
            "  ",
            health_text(snap.health),
            f"  up {uptime_exact(up)}  sock ",
            "on" if snap.socket_connected else "off",
        )
        self.query_one("#detail-summary", Label).update(line)
        ports = ", ".join(f"{h}->{c}" for c, h in snap.ports.items()) or "none"
        last = (
            snap.last_communication.isoformat(timespec="seconds")
            if snap.last_communication
            else "never"
        )
        exit_code = "" if snap.exit_code is None else f"   exit code: {snap.exit_code}"
        self.query_one("#detail-info", Label).update(
            f"created: {snap.created.isoformat(timespec='seconds')}   ports: {ports}{exit_code}\n"
            f"socket: {snap.socket_path}   last message: {last}"
        )

    def _show_graphs(self) -> None:
        hist = self.state.history.get(self.container_id, ())
        snap = self._snap()
        res = snap.resources if snap else None
        last = res or (hist[-1] if hist else None)  # a stopped one keeps its last scale
        cpu = [s.cpu_percent for s in hist]
        peak = max(cpu, default=0.0)
        scale = cpu_scale(peak)
        self.query_one("#graph-cpu", ResourceGraph).show(
            cpu,
            f"{percent(res.cpu_percent if res else None)} of {scale.top_label} "
            f"({scale.legend}; max {peak:.1f}%)",
            scale,
        )
        self._show_io(hist)
        mem = [float(s.memory_usage) for s in hist]
        if last is None:
            self.query_one("#graph-mem", ResourceGraph).show(mem, "-", None)
            return
        scale = memory_scale(last.memory_limit)
        used = f"{size(res.memory_usage)} ({res.memory_percent:.1f}%) " if res else "- "
        self.query_one("#graph-mem", ResourceGraph).show(
            mem, f"{used}of {scale.top_label} {scale.legend}", scale
        )

    def _show_io(self, hist: Sequence[ResourceSample]) -> None:
        """Network and block I/O as rates between samples; the two directions of each share
        one scale, so rx and tx (read and write) bars compare at a glance."""
        times = [s.timestamp.timestamp() for s in hist]
        pairs = (
            (("net-rx", "network_rx_bytes"), ("net-tx", "network_tx_bytes")),
            (("blk-read", "disk_read_bytes"), ("blk-write", "disk_write_bytes")),
        )
        for pair in pairs:
            series = [counter_rates(times, [getattr(s, f) for s in hist]) for _, f in pair]
            peak = max((max(r, default=0.0) for r in series), default=0.0)
            scale = rate_scale(peak)
            for (gid, _), rates in zip(pair, series, strict=True):
                now = f"{size(int(rates[-1]))}/s" if rates else "-"
                top = size(int(max(rates, default=0.0)))
                self.query_one(f"#graph-{gid}", ResourceGraph).show(
                    rates, f"{now} of {scale.top_label}/s ({scale.legend}; max {top}/s)", scale
                )
