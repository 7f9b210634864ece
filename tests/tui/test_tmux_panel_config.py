"""End to end in tmux: `flowmgr --panel-config` names a bad line on its first screen, its
rebound keys act and show in the help, and the mouse key really stops mouse reporting in the
terminal (tmux's own flags say so) and turns it back on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server.core.config import Settings
from tests.tui.helpers import BUSYBOX
from tests.tui.test_tmux_e2e import FLOWMGR, Tmux, tmux

pytestmark = [pytest.mark.docker, pytest.mark.tui]

__all__ = ["tmux"]  # the fixture, imported for this module's tests

PANEL = """\
# my keys
[keys.app]
toggle_mouse = "f2"
help = "f1"

[keys.dashboard]
stop = "ctrl+c"
filter = "f"
"""


def _toast(screen: str) -> str:
    """The notification's text (its lines start after the toast's left bar)."""
    return "".join(ln.split("\u258c", 1)[1] for ln in screen.splitlines() if "\u258c" in ln)


def _squashed(text: str) -> str:
    """Without white space: the toast wraps lines where it likes."""
    return re.sub(r"[\s\u2500]+", "", text)  # and the rule the toast lies over


def _mouse(tmux: Tmux) -> str:
    """Whether the program in the pane asked the terminal for mouse events (tmux's flag)."""
    return tmux.run("display", "-p", "-t", "panel", "#{mouse_any_flag}").strip()


async def test_panel_config_in_a_real_terminal(
    settings: Settings, tmp_path: Path, tmux: Tmux
) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "socket_dir": settings.socket_dir,
                "docker": {
                    "instance": settings.docker.instance,
                    "network": settings.docker.network,
                    "default_image": BUSYBOX,
                },
            }
        )
    )
    panel = tmp_path / "panel.toml"
    panel.write_text(PANEL)
    cmd = (
        f"env TERM=xterm-256color CONFIG_FILE={config} {FLOWMGR} --panel-config {panel} "
        f"--log-file {tmp_path / 'panel.log'}"
    )
    tmux.run("new-session", "-d", "-s", "panel", "-x", "140", "-y", "40", cmd)
    tmux.run("resize-window", "-t", "panel", "-x", "140", "-y", "40")
    screen = await tmux.wait_for(lambda s: "containers | sort:" in s, "the table")
    screen = await tmux.wait_for(lambda s: "panel.toml: defaults used for" in s, "the notice")
    told = f"{panel}:7: keys.dashboard.stop: ctrl+c always quits"
    assert _squashed(told) in _squashed(_toast(screen))
    assert _mouse(tmux) == "1"
    tmux.keys("F2")
    await tmux.wait_for(lambda s: "Mouse released" in s, "the release notice")
    assert _mouse(tmux) == "0"
    tmux.keys("F2")
    await tmux.wait_for(lambda s: "the panel has the mouse again" in s, "the capture notice")
    assert _mouse(tmux) == "1"
    tmux.keys("F1")
    screen = await tmux.wait_for(lambda s: "flowmgr keys" in s, "the help")
    # (the notices may cover the line's right part)
    assert re.search(r"^\W*f\s+filter\b", screen, re.MULTILINE), screen
    tmux.keys("Escape", "q")
    log = (tmp_path / "panel.log").read_text()
    assert "keys.dashboard.stop: ctrl+c always quits" in log
