"""FlowMgrApp: wiring only: the backend, the event bridge, the state, screens and the palette.

Nothing in the package imports this module: screens get the data they show and post messages
(flowmgr_tui/messages.py) that are handled here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import datetime
from typing import Protocol

from textual.app import App

from flowmgr_tui.actions import ActionRunner
from flowmgr_tui.backend import Backend
from flowmgr_tui.bridge import CoreEvents, EventBridge
from flowmgr_tui.commands import ContainerCommands
from flowmgr_tui.formatting import describe_error
from flowmgr_tui.host_stats import HostSample, probe_host
from flowmgr_tui.keymap import bindings, textual_keymap
from flowmgr_tui.messages import (
    ContainerActionRequested,
    ContainersActionRequested,
    CreateFormRequested,
    HelpRequested,
    HistoryRequested,
    PreferenceChanged,
    SortRequested,
)
from flowmgr_tui.panel_config import PanelConfig
from flowmgr_tui.panel_prefs import PanelPrefs
from flowmgr_tui.screens.dashboard import DashboardScreen
from flowmgr_tui.state.panel_state import Changes, PanelState, ShowsChanges
from server.core.events import DockerConnectionLost, DockerConnectionRestored, Event, now

__all__ = ["FlowMgrApp", "Service"]

logger = logging.getLogger(__name__)

RECALL = 200
"""Journalled activity lines and crashes the panel reads once its core has started."""
RETRY_MAX = 30.0
"""Longest wait between attempts to start a core whose engine does not answer."""


class Service(Protocol):
    """Something that runs beside the panel on its loop (the embedded API server)."""

    async def run(self) -> None:
        """Serve until asked to stop."""
        ...

    def request_stop(self) -> None:
        """Begin a graceful stop; `run` returns when done."""
        ...

    def status(self) -> str:
        """One line for the header: where it listens, how many clients."""
        ...


class FlowMgrApp(App[None]):
    """The panel; the same screens whether the backend is local or remote."""

    CSS_PATH = "app.tcss"
    TITLE = "flowmgr"
    COMMANDS = App.COMMANDS | {ContainerCommands}
    BINDINGS = bindings("app")

    def __init__(
        self,
        backend: Backend,
        *,
        start_backend: bool = False,
        clock: Callable[[], datetime] = now,
        mode: str = "local",
        server_status: Callable[[], str] | None = None,
        services: Sequence[Service] = (),
        default_image: str = "",
        bridge_interval: float = 0.25,
        host_probe: Callable[[], HostSample] = probe_host,
        host_interval: float = 2.0,
        starting: Awaitable[None] | None = None,
        panel: PanelConfig | None = None,
    ) -> None:
        super().__init__()
        self.panel = panel or PanelConfig()
        """panel.toml as read at start (keys, theme, log defaults, columns)."""
        self.keys = self.panel.key_table
        """keymap.KEYS with the config's keys in force: the help screen lists these."""
        self.set_keymap(textual_keymap(self.keys))
        if self.panel.theme:
            self.theme = self.panel.theme
        self.prefs = PanelPrefs(self, self.panel)
        """Saves the theme and columns into panel.toml; holds the mouse's state."""
        self.backend = backend
        self.clock = clock
        """Time source for uptimes (snapshot tests freeze it)."""
        self.mode = mode
        """Shown in the header: "local", or the server URL in remote mode."""
        self.default_image = default_image
        self.host_probe = host_probe
        """Reads host CPU/memory for the detail view (snapshot tests pass a fixed one)."""
        self.host_interval = host_interval
        self._starting = starting
        """A `backend.start()` already under way (the entry point overlaps it with imports)."""
        self._start_backend = start_backend or starting is not None
        self._services = list(services)
        if server_status is None and self._services:
            server_status = self._services[0].status
        self._server_status = server_status
        # Subscribe before reading the snapshot, so no event falls between the two.
        self.bridge = EventBridge(
            backend.bus, min_interval=bridge_interval, warming=self._start_backend
        )
        # A core we are about to start has not looked yet: no banner until it has.
        self.state = PanelState(backend.snapshot(), backend.docker_available or self._start_backend)
        """The panel's one copy of the containers: screens render from it."""
        self.state.seed(backend.recent_activity(), backend.recent_crashes())
        self.runner = ActionRunner(self, backend, self.state, self._mark_busy)
        self.dashboard = DashboardScreen(
            self.state,
            clock=clock,
            watch=self._watch_stats,
            columns=self.panel.columns,
            show_stopped=self.panel.show_stopped,
        )
        self._watch_failed = False

    def on_mount(self) -> None:
        """Show the dashboard, start pumping events, start the core when asked to."""
        self.push_screen(self.dashboard)
        self.bridge.start(self)
        self.prefs.start()
        self._update_subtitle()
        if self._server_status is not None:
            self.set_interval(2.0, self._update_subtitle)
        if self._start_backend or self._services:
            self.run_worker(
                self._start_core(), name="start core", group="core", exit_on_error=False
            )

    def on_core_events(self, message: CoreEvents) -> None:
        """Fold events into the state and let the open screens redraw what changed."""
        events = self.state.fresh(message.events)
        self._show(self.state.apply(events), events)

    def _watch_stats(self, container_ids: list[str]) -> None:
        """The containers on screen: the core samples them at full rate (the rest slower)."""
        try:
            self.backend.watch_stats("panel", container_ids)
        except Exception as err:  # the rows still show; their samples come at the slow rate
            if not self._watch_failed:  # once: this runs on every scroll
                self._watch_failed = True
                logger.warning("could not tell the core what is on screen: %s", describe_error(err))

    def _mark_busy(self, container_id: str, doing: str | None) -> None:
        self._show(self.state.set_busy(container_id, doing), ())

    def _show(self, changes: Changes, events: Sequence[Event]) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, ShowsChanges):  # the dashboard and the detail view
                screen.show_changes(changes, events)

    # --- what screens and the palette ask for --------------------------------------------

    def on_container_action_requested(self, message: ContainerActionRequested) -> None:
        """Open a container's detail view, or run a verb on it."""
        if message.verb == "open":
            self.open_detail(message.container_id)
        elif message.verb == "shell":
            from flowmgr_tui.shell_runner import shell_into

            self.run_worker(
                shell_into(self, self.backend, self.state, message.container_id),
                name="shell",
                group="shell",
                exclusive=True,
                exit_on_error=False,
            )
        else:
            self.runner.request(message.verb, message.container_id)

    def on_containers_action_requested(self, message: ContainersActionRequested) -> None:
        """A verb on several containers (the marked rows): asked once."""
        self.runner.request_many(message.verb, message.container_ids)

    def on_preference_changed(self, message: PreferenceChanged) -> None:
        """Save what the user changed in the panel into panel.toml."""
        self.prefs.save(message.dotted, message.value)

    def action_toggle_mouse(self) -> None:
        """Release the mouse to the terminal (text can be selected), or take it back."""
        key = next(k for k in self.keys if k.action == "toggle_mouse").in_force
        self.prefs.toggle_mouse(key.split(",")[0])

    def on_create_form_requested(self, _: CreateFormRequested) -> None:
        """Push the create form."""
        # Screens past the dashboard are imported on first use: a faster first screen.
        from flowmgr_tui.screens.create_form import CreateForm

        self.push_screen(CreateForm(self.backend, self.default_image))

    def on_help_requested(self, _: HelpRequested) -> None:
        """Show every key (the palette asks for it)."""
        self.action_help()

    def on_history_requested(self, _: HistoryRequested) -> None:
        """Open the history screen (the palette asks for it)."""
        self.action_history()

    def on_sort_requested(self, message: SortRequested) -> None:
        """Sort the dashboard's table (the palette asks for it)."""
        self.dashboard.sort_by(message.column)

    def open_detail(self, container_id: str) -> None:
        """Push the detail view of one container."""
        from flowmgr_tui.screens.container_detail import ContainerDetailScreen

        self.push_screen(
            ContainerDetailScreen(
                container_id,
                state=self.state,
                backend=self.backend,
                clock=self.clock,
                host_probe=self.host_probe,
                host_interval=self.host_interval,
                # The probe reads the machine the panel runs on: a remote manager's host is
                # elsewhere, so say whose totals these are.
                host_title="This machine" if self.mode.startswith("remote") else "Host",
            )
        )

    def action_help(self) -> None:
        """Show every key."""
        from flowmgr_tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.keys))

    def action_history(self) -> None:
        """The journal's events; from a detail view, filtered to its flow."""
        from flowmgr_tui.screens.container_detail import ContainerDetailScreen
        from flowmgr_tui.screens.history import HistoryScreen

        screen = self.screen
        if not isinstance(screen, DashboardScreen | ContainerDetailScreen):
            return  # over a dialog, the help or the history itself: nothing to open
        flow = ""
        if isinstance(screen, ContainerDetailScreen):
            cid = screen.container_id  # a deleted flow by its full id: its journal stays
            flow = self.state.name_of(cid) if cid in self.state.containers else cid
        self.push_screen(HistoryScreen(self.backend, self.state, clock=self.clock, flow=flow))

    # --- helpers -------------------------------------------------------------------------

    def _update_subtitle(self) -> None:
        extra = f" | {self._server_status()}" if self._server_status else ""
        self.sub_title = f"{self.mode}{extra}"

    async def action_quit(self) -> None:
        """Stop the services gracefully (clients are told goodbye), then leave."""
        for service in self._services:
            service.request_stop()
        workers = [w for w in self.workers if w.group == "services"]
        # Best effort: a service that does not stop in time is cancelled with the app.
        with suppress(Exception):
            async with asyncio.timeout(5):
                for worker in workers:
                    await worker.wait()
        self.exit()

    async def _start_core(self) -> None:
        """Start the backend (if ours to start), then the services beside it."""
        if self._start_backend:
            await self._start_backend_with_retry()
            # The state was seeded before the core started: what it recalled is read now.
            self.run_worker(self._recall(), name="recall", group="recall", exit_on_error=False)
        for service in self._services:
            self.run_worker(service.run(), name="service", group="services", exit_on_error=False)
        self._update_subtitle()

    async def _recall(self) -> None:
        """The newest activity and crash reports of the core's journal (from before the panel
        opened, surviving a manager restart) into the state, after the first rows."""
        from flowmgr_tui.history_pages import ACTIVITY_TYPES, HistoryPager, to_activity
        from flowmgr_tui.history_query import HistoryFilter

        pager = HistoryPager(self.backend, HistoryFilter(types=ACTIVITY_TYPES), RECALL)
        try:
            rows = await pager.older()
        except Exception as err:  # no journal (off, or an older server): live activity only
            logger.info("no activity history from the core: %s", describe_error(err))
            return
        names = self.state.names()
        items = [item for row in rows if (item := to_activity(row, names)) is not None]
        if items:
            self._show(self.state.recall(items), ())

    async def _start_backend_with_retry(self) -> None:
        """While the backend cannot start, show why and retry with backoff."""
        delay, failed = 1.0, False
        starting, self._starting = self._starting, None
        while True:
            try:
                await (starting if starting is not None else self.backend.start())
            except Exception as err:  # shown in the banner and retried; never fatal
                logger.warning(
                    "core did not start (%s); retrying in %.0fs", describe_error(err), delay
                )
                self.post_message(CoreEvents([DockerConnectionLost(reason=describe_error(err))]))
                failed, starting = True, None
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.bridge.warming = False
            if self.backend.docker_available:
                if failed or not self.state.docker_available:
                    self.post_message(CoreEvents([DockerConnectionRestored()]))
            else:
                self.post_message(CoreEvents([DockerConnectionLost(reason="no answer yet")]))
            return
