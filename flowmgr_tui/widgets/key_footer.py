"""KeyFooter: Textual's Footer, rebuilt once per burst of binding changes instead of each time."""

from __future__ import annotations

from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer

__all__ = ["KeyFooter", "SETTLE"]

SETTLE = 0.05
"""Seconds the active bindings must stay put before the keys are rebuilt."""


class KeyFooter(Footer):
    """Rebuilds its keys after the bindings settle.

    Each rebuild mounts a widget per key (~20 here, ~40 ms of styling). Opening a screen
    changes the bindings three times within 0.2 s (mounted, table focused, ...), and
    Footer rebuilds for every one, so the first screen of rows would wait behind footers
    nobody sees. Later changes (focus moves) show one settle period late.
    """

    settle = SETTLE
    _rebuild: Timer | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        self._bindings_ready = True
        if self._rebuild is not None:
            self._rebuild.reset()  # still changing: wait for the last change
            return
        self._rebuild = self.set_timer(self.settle, lambda: self._rebuild_keys(screen))

    def _rebuild_keys(self, screen: Screen[object]) -> None:
        self._rebuild = None
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self.call_after_refresh(self.recompose)
