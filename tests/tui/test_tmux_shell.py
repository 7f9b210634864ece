"""`e` end to end, in tmux as a user types it: a shell in a real flow, locally and through
`flowmgr --connect` against a real service; a command's output seen, back in the table."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from server.core.config import Settings
from server.core.manager import ContainerManager
from server.core.models import CreateSpec
from tests.conftest import IMAGES
from tests.integration.api_harness import TEST_TOKEN, running_service, with_test_token
from tests.tui.test_tmux_e2e import FLOWMGR, Tmux
from tests.tui.test_tmux_e2e import tmux as tmux  # the fixture

pytestmark = [pytest.mark.docker, pytest.mark.tui]


async def _running_flow(settings: Settings, name: str) -> str:
    """A flow of the flow image (it has bash), made and started by a manager that then
    stops: the panel or the service adopts it."""
    async with ContainerManager(settings) as manager:
        snap = await manager.create_container(CreateSpec(name=name, image=IMAGES["flow"]))
        await manager.start_container(snap.id)
        return snap.id


def _start(tmux: Tmux, cmd: str) -> None:
    """The panel in a 120x40 window: sized before it starts (it draws to the size it sees)."""
    tmux.run("new-session", "-d", "-s", "panel", "-x", "120", "-y", "40", f"sleep 1; exec {cmd}")
    tmux.run("resize-window", "-t", "panel", "-x", "120", "-y", "40")


def _config(settings: Settings, path: Path) -> Path:
    data = {
        "socket_dir": settings.socket_dir,
        "docker": {
            "instance": settings.docker.instance,
            "network": settings.docker.network,
            "stop_timeout": 2,
        },
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


async def _shell_round_trip(tmux: Tmux, name: str) -> None:
    """From the table: `e`, a command with a fresh marker, its output, `exit`, the table."""
    await tmux.wait_for(lambda s: name in s and "running" in s, "the running flow")
    tmux.keys("e")
    await tmux.wait_for(lambda s: " containers | sort:" not in s, "the shell (panel suspended)")
    n = random.randrange(10_000, 99_999)
    # the typed line shows `$((n+1))`; only the shell's output shows the sum
    tmux.keys("-l", f"echo hello-$(({n}+1))-${{BASH_VERSION:+bash}}")
    tmux.keys("Enter")
    await tmux.wait_for(lambda s: f"hello-{n + 1}-bash" in s, "the command's output, from bash")
    tmux.keys("-l", "exit 7")
    tmux.keys("Enter")
    await tmux.wait_for(
        lambda s: " containers | sort:" in s and name in s, "the table again after the shell"
    )
    await tmux.wait_for(lambda s: "exited with code 7" in s, "how the shell ended")
    tmux.keys("q")


async def test_e_opens_a_shell_in_a_flow_and_returns(
    settings: Settings, tmp_path: Path, tmux: Tmux, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("shell")
    await _running_flow(settings, name)
    config = _config(settings, tmp_path / "config.json")
    cmd = (
        f"env TERM=xterm-256color CONFIG_FILE={config} {FLOWMGR} "
        f"--log-file {tmp_path / 'panel.log'}"
    )
    _start(tmux, cmd)
    await _shell_round_trip(tmux, name)


async def test_e_opens_a_shell_through_a_remote_panel(
    settings: Settings, tmp_path: Path, tmux: Tmux, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("rsh")
    await _running_flow(settings, name)
    async with running_service(with_test_token(settings)) as svc:
        cmd = (
            f"env TERM=xterm-256color FLOWMGR_TOKEN={TEST_TOKEN} {FLOWMGR} --connect {svc.url} "
            f"--log-file {tmp_path / 'panel.log'}"
        )
        _start(tmux, cmd)
        await _shell_round_trip(tmux, name)
        shells = svc.app.sio.namespace_handlers["/"].shells
        assert shells.count() == 0
