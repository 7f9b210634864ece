"""StateDir's checks on the way to the flows' socket directories (no engine needed)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.config import load_settings
from server.core.errors import ConfigError, FlowSocketError
from server.core.state_dir import StateDir

NOBODY = 65534


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(f"/tmp/fm/sd-{uuid.uuid4().hex[:8]}")
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _state(socket_dir: Path, instance: str = "i") -> StateDir:
    return StateDir(load_settings(env={}, socket_dir=str(socket_dir), docker__instance=instance))


def test_a_link_on_the_way_is_followed_only_when_root_or_the_manager_owns_it(base: Path) -> None:
    real = base / "real"
    real.mkdir()
    (base / "trusted").symlink_to(real)
    state = _state(base / "trusted" / "s")
    state.prepare()
    assert (real / "s" / ".flowmgr-i").is_dir()
    (base / "foreign").symlink_to(real)
    os.lchown(base / "foreign", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="symbolic link owned by uid 65534"):
        _state(base / "foreign" / "s").prepare()


def test_a_parent_owned_by_another_user_refuses_start(base: Path) -> None:
    theirs = base / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        _state(theirs / "s").prepare()


def test_a_socket_dir_owned_by_another_user_refuses_start(base: Path) -> None:
    sock = base / "s"
    sock.mkdir()
    os.chown(sock, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=f"chown {os.geteuid()}"):
        _state(sock).prepare()


def test_an_instance_with_a_slash_is_a_config_error(base: Path) -> None:
    with pytest.raises(ConfigError, match="docker.instance"):
        _state(base / "s", instance="a/../../b").prepare()


def test_names_that_are_not_one_path_component_are_refused(base: Path) -> None:
    state = _state(base / "s")
    state.prepare()
    for name in ("..", ".", "a/b", "", ".hidden"):
        with pytest.raises(FlowSocketError):
            state.make_flow_dir(name)
        with pytest.raises(FlowSocketError):
            state.verify_flow_dir(os.path.join(state.path, name), name)


def test_verify_wants_exactly_the_managers_directory_for_that_name(base: Path) -> None:
    state = _state(base / "s")
    state.prepare()
    state.make_flow_dir("a")
    state.make_flow_dir("b")
    state.verify_flow_dir(f"{state.path}/a", "a")
    state.verify_flow_dir(f"{state.path}//a/", "a")  # the same path, spelled as Docker may
    for source in (
        f"{state.path}/b",
        str(base),
        None,
        f"{state.path}/a/../b",
        f"{state.path}/b/../a",
    ):
        with pytest.raises(FlowSocketError, match="not the manager's directory"):
            state.verify_flow_dir(source, "a")
