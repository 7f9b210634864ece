"""PanelPrefs: panel.toml's part in the running app: its problems told, the theme and the
columns saved when the user changes them, the mouse released to the terminal and back."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from textual.app import App
from textual.theme import Theme

from flowmgr_tui.panel_config import PanelConfig
from flowmgr_tui.panel_file import save_values

__all__ = ["PanelPrefs"]

logger = logging.getLogger(__name__)

PROBLEMS_SHOWN = 6
"""Problems the first screen's notice lists; the log has them all."""


class PanelPrefs:
    """Owned by the app; saves run in its `preferences` worker group, one at a time."""

    def __init__(self, app: App[Any], panel: PanelConfig) -> None:
        self._app = app
        self._panel = panel
        self._saving = asyncio.Lock()
        self.mouse_released = False
        """The terminal has the mouse (`m`): text can be selected; the panel sees no clicks."""

    def start(self) -> None:
        """Tell what the file could not set; save the theme whenever the user changes it."""
        app, problems = self._app, self._panel.problems
        app.theme_changed_signal.subscribe(app, self._theme_changed)
        if not problems:
            return
        for problem in problems:
            logger.warning("panel config: %s", problem)
        more = len(problems) - PROBLEMS_SHOWN
        app.notify(
            "\n".join(problems[:PROBLEMS_SHOWN]) + (f"\n(and {more} more in the log)" * (more > 0)),
            title="panel.toml: defaults used for",
            severity="warning",
            timeout=20,
            markup=False,
        )

    def _theme_changed(self, theme: Theme) -> None:
        if theme.name != (self._panel.theme or ""):
            self.save("theme", theme.name)

    def save(self, dotted: str, value: object) -> None:
        """Write one value into panel.toml (a worker); a refusal is told, the change holds."""
        path = self._panel.path
        if path is None:
            return  # no config file given (tests, embedding): nothing is kept

        async def save() -> None:
            try:
                async with self._saving:  # one read-modify-write of the file at a time
                    await asyncio.to_thread(save_values, path, {dotted: json.dumps(value)})
            except Exception as err:  # the change holds for this run; the user is told
                logger.warning("%s not saved in %s: %s", dotted, path, err)
                self._app.notify(str(err), title=f"{dotted} not saved", severity="warning")

        self._app.run_worker(
            save(), name=f"save {dotted}", group="preferences", exit_on_error=False
        )

    def toggle_mouse(self, key: str) -> None:
        """Release the mouse to the terminal, or take it back; `key` is the one that does it."""
        self.mouse_released = not self.mouse_released
        driver = self._app._driver
        switch = "_disable_mouse_support" if self.mouse_released else "_enable_mouse_support"
        if driver is not None and hasattr(driver, switch):  # Textual's drivers: no public API
            getattr(driver, switch)()
        if self.mouse_released:
            self._app.notify(
                f"the terminal selects text now; {key} gives the mouse back",
                title="Mouse released",
                timeout=6,
            )
        else:
            self._app.notify("the panel has the mouse again", title="Mouse", timeout=3)
