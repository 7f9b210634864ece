"""End to end: `flowmgr` started as a user would, in tmux, driven by keys, read by capture-pane."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import socketio

from server.core.config import Settings
from server.core.token_file import read_client_token
from tests.conftest import RUN_ID
from tests.tui.helpers import BUSYBOX

pytestmark = [pytest.mark.docker, pytest.mark.tui]

FLOWMGR = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "flowmgr"
WAIT = 40.0


class Tmux:
    """One private tmux server (its own socket name) holding one session."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name, "-f", "/dev/null"]  # no user config: a known size

    def run(self, *args: str) -> str:
        out = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=20)
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "panel")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "panel", *keys)

    async def wait_for(self, cond: Callable[[str], bool], what: str) -> str:
        """Poll the screen until `cond` holds (a terminal has no events to await)."""
        try:
            async with asyncio.timeout(WAIT):
                while not cond(text := self.screen()):
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(f"no {what} on screen after {WAIT}s:\n{self.screen()}") from None
        return text


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    """A private tmux server, killed at the end."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed")
    t = Tmux(f"flowmgr-{RUN_ID}")
    try:
        yield t
    finally:
        t.run("kill-server")


def _table(screen: str) -> str:
    """The screen above the table's summary line."""
    return screen.split(" containers | sort:")[0]


def _config(settings: Settings, path: Path) -> Path:
    data = {
        "socket_dir": settings.socket_dir,
        "log_level": "DEBUG",
        "docker": {
            "instance": settings.docker.instance,
            "network": settings.docker.network,
            "default_image": BUSYBOX,
            "stop_timeout": 2,
        },
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


async def test_flowmgr_in_tmux_lists_filters_stops_and_serves(
    settings: Settings,
    tmp_path: Path,
    tmux: Tmux,
    docker_client: docker.DockerClient,
    unique_name: Callable[[str], str],
) -> None:
    names = [unique_name("tmuxa"), unique_name("tmuxb")]
    for name in names:
        await asyncio.to_thread(
            docker_client.containers.run,
            BUSYBOX,
            name=name,
            detach=True,
            network_mode="none",
            labels={"flowmgr.managed": "true", "flowmgr.instance": settings.docker.instance},
        )
    config = _config(settings, tmp_path / "config.json")
    cmd = (
        f"env TERM=xterm-256color CONFIG_FILE={config} {FLOWMGR} --serve --host 127.0.0.1 "
        f"--port 0 --log-file {tmp_path / 'panel.log'}"
    )
    tmux.run("new-session", "-d", "-s", "panel", "-x", "120", "-y", "40", cmd)
    tmux.run("resize-window", "-t", "panel", "-x", "120", "-y", "40")

    screen = await tmux.wait_for(lambda s: all(n in s for n in names), "both containers")
    screen = await tmux.wait_for(lambda s: "serving http://127.0.0.1:" in s, "the API address")
    port = re.search(r"serving http://127\.0\.0\.1:(\d+)", screen)
    assert port is not None
    health = await asyncio.to_thread(
        lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port[1]}/health", timeout=10))
    )
    assert health["status"] == "healthy"
    sio = socketio.AsyncClient()
    # No token configured: the serving panel made one in its token file (issue 11)
    token = read_client_token(settings.token_path)
    await sio.connect(f"http://127.0.0.1:{port[1]}", auth={"token": token}, wait_timeout=10)
    try:
        await tmux.wait_for(lambda s: "| 1 client" in s, "the client count in the header")
    finally:
        await sio.disconnect()

    tmux.keys("/")
    tmux.keys("-l", names[1][-12:])  # typed literally: the filter narrows as it goes
    # The table only: the activity below may name the other container (an adopted container
    # without the manager's socket dir logs a container_error since issue 11).
    await tmux.wait_for(
        lambda s: names[1] in _table(s) and names[0] not in _table(s), "only the filtered row"
    )
    tmux.keys("Enter")  # back to the table, filter kept; the cursor is on the only row
    # The filter box closes when the table has the keys again: wait for that, not a delay.
    await tmux.wait_for(lambda s: s.splitlines()[1].strip().startswith("Name"), "the box closed")
    tmux.keys("x")
    await tmux.wait_for(
        lambda s: any(names[1] in line and "- stopped" in line for line in s.splitlines()),
        "the row stopped",
    )
    container = await asyncio.to_thread(docker_client.containers.get, names[1])
    assert container.status == "exited"

    tmux.keys("?")
    await tmux.wait_for(lambda s: "flowmgr keys" in s, "the help screen")
    tmux.keys("Escape")
    await tmux.wait_for(lambda s: "flowmgr keys" not in s, "help closed")
    tmux.keys("q")
    await tmux.wait_for(
        lambda s: "panel" not in tmux.run("list-sessions") or s == "", "the panel to exit"
    )
