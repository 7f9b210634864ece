"""KeyFooter: one rebuild per burst of binding changes, and the keys still follow the focus."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Footer, Input

from flowmgr_tui.widgets.key_footer import KeyFooter
from tests.tui.helpers import until

pytestmark = pytest.mark.tui


class _Counting:
    builds = 0

    def compose(self) -> Any:
        if self._bindings_ready:  # type: ignore[attr-defined]
            type(self).builds += 1
        return super().compose()  # type: ignore[misc]


class _CountingKeyFooter(_Counting, KeyFooter):
    settle = 0.5  # the burst below fits in it even on a loaded machine


class _CountingFooter(_Counting, Footer):
    pass


class _Pane(Widget, can_focus=True):
    BINDINGS = [Binding("p", "noop", "Pane key")]


class _Box(Input):
    BINDINGS = [Binding("ctrl+b", "noop", "Box key")]


class _App(App[None]):
    def __init__(self, footer: type[Footer]) -> None:
        super().__init__()
        self.footer = footer

    def compose(self) -> ComposeResult:
        yield _Pane(id="pane")
        yield _Box(id="box")
        yield self.footer()


def _keys(app: _App) -> str:
    return " ".join(str(k.render()) for k in app.query("FooterKey"))


async def _builds_for_a_burst(footer: type[_Counting]) -> tuple[int, int]:
    """Rebuilds for the first keys, then for five focus moves 10 ms apart."""
    footer.builds = 0
    app = _App(footer)  # type: ignore[arg-type]
    async with app.run_test(size=(80, 10)) as pilot:
        await until(pilot, lambda: "Pane key" in _keys(app), "the first keys", timeout=5)
        await pilot.pause(0.3)
        first = footer.builds
        for target in ("#box", "#pane", "#box", "#pane", "#box"):
            app.query_one(target).focus()
            await asyncio.sleep(0.01)
        await until(pilot, lambda: "Box key" in _keys(app), "the input's keys", timeout=5)
        await pilot.pause(0.3)
        assert "Pane key" not in _keys(app)
        return first, footer.builds - first


async def test_a_burst_of_binding_changes_rebuilds_the_keys_once() -> None:
    assert await _builds_for_a_burst(_CountingKeyFooter) == (1, 1)
    # What it saves: Textual's own footer rebuilds for (nearly) every change.
    first, burst = await _builds_for_a_burst(_CountingFooter)
    assert first >= 1 and burst >= 3
