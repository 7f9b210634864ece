"""The image's entry point decisions, the engine-socket diagnosis, and where `uvicorn main:app`
listens: the pure parts, no engine (the image itself: tests/integration/test_guide_deploy.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from uvicorn.config import Config

from server.api.uvicorn_cli import bind_where_settings_say, uvicorn_cli_options
from server.container_entry import EntryError, parse_gid, parse_umask, plan_groups
from server.core.config import load_settings
from server.core.engine_access import engine_socket_path, socket_access_problem

SOCK = "/var/run/docker.sock"


# ---- the entry point: which groups, and the hostile values it refuses ---------------------


def test_joins_the_group_of_the_socket_found_at_start() -> None:
    plan = plan_groups(SOCK, 105, None, [0])
    assert plan.groups == [105] and plan.level == "INFO"
    assert "joining group 105 of /var/run/docker.sock" in plan.message


def test_keeps_groups_given_with_group_add_but_never_root_from_there() -> None:
    assert plan_groups(SOCK, 105, None, [0, 44, 105]).groups == [44, 105]


def test_never_joins_gid_0_on_its_own() -> None:
    plan = plan_groups(SOCK, 0, None, [0])
    assert plan.groups == [] and plan.level == "ERROR"
    assert "-e FLOWMGR_DOCKER_GID=0" in plan.message and "group 0 (root)" in plan.message


def test_gid_0_only_when_asked_for_and_said_so() -> None:
    plan = plan_groups(SOCK, 0, "0", [0])
    assert plan.groups == [0] and "the root group, as asked" in plan.message


def test_a_missing_socket_is_one_error_line_with_the_mount_to_add() -> None:
    plan = plan_groups(SOCK, None, None, [0])
    assert plan.level == "ERROR" and "-v /var/run/docker.sock:/var/run/docker.sock" in plan.message


def test_a_network_engine_needs_no_group() -> None:
    assert plan_groups(None, None, None, [0]).groups == []


@pytest.mark.parametrize(
    "raw",
    ["", "-1", "abc", "0; id", " 105", "105 ", "1e3", "0x69", "４２", "99999999999", "4294967295"],
)
def test_a_gid_that_is_not_a_gid_is_refused(raw: str) -> None:
    with pytest.raises(EntryError, match="is not a group id"):
        parse_gid(raw)
    if raw:
        with pytest.raises(EntryError):
            plan_groups(SOCK, 105, raw, [0])


def test_the_largest_gid_is_taken() -> None:
    assert parse_gid("4294967294") == 4294967294 and parse_gid("0") == 0


@pytest.mark.parametrize("raw", ["", "8", "0o22", "-022", "00000", "rwx", "0778"])
def test_a_umask_that_is_not_octal_is_refused(raw: str) -> None:
    with pytest.raises(EntryError, match="FLOWMGR_UMASK"):
        parse_umask(raw)


def test_umask_values() -> None:
    assert parse_umask("0000") == 0 and parse_umask("027") == 0o27 and parse_umask("777") == 0o777


# ---- the engine socket: where it is and what keeps the service from it --------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        (None, SOCK),
        ("", SOCK),
        ("unix:///run/docker.sock", "/run/docker.sock"),
        ("unix://", SOCK),
        ("tcp://10.0.0.2:2376", None),
        ("ssh://me@host", None),
    ],
)
def test_engine_socket_path(url: str | None, path: str | None) -> None:
    assert engine_socket_path(url) == path


def test_missing_socket_says_which_mount(tmp_path: Path) -> None:
    problem = socket_access_problem(str(tmp_path / "docker.sock"))
    assert problem and "no Docker socket at" in problem and "-v /var/run/docker.sock:" in problem


def test_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    (tmp_path / "docker.sock").write_text("")
    problem = socket_access_problem(str(tmp_path / "docker.sock"))
    assert problem and "is not a socket" in problem


def test_a_socket_this_process_may_use_is_no_problem(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        assert socket_access_problem(str(path)) is None


# ---- `uvicorn main:app`: uvicorn's options win, else HOST/PORT -----------------------------


@pytest.mark.parametrize(
    ("argv", "given"),
    [
        (["/v/bin/python", "/v/bin/uvicorn", "main:app"], set()),
        (["python", "-m", "uvicorn", "main:app", "--host", "h", "--port=9"], {"--host", "--port"}),
        (["/v/bin/python", "-m", "server"], None),
        (["flowmgr", "--server-only"], None),
    ],
)
def test_uvicorn_cli_options(argv: list[str], given: set[str] | None) -> None:
    assert uvicorn_cli_options(argv) == given


def _config() -> Config:
    return Config("main:app")  # uvicorn's defaults, as its command line builds them


def test_no_options_listen_where_host_and_port_say() -> None:
    settings = load_settings(env={"HOST": "127.0.0.2", "PORT": "9123"})
    config = _config()
    changed = bind_where_settings_say(settings, ["/v/bin/uvicorn", "main:app"], {}, config)
    assert changed == ["host", "port"] and (config.host, config.port) == ("127.0.0.2", 9123)


def test_uvicorns_own_options_win() -> None:
    settings = load_settings(env={"HOST": "127.0.0.2", "PORT": "9123"})
    config = _config()
    argv = ["uvicorn", "main:app", "--host", "0.0.0.0", "--port=8000"]
    assert bind_where_settings_say(settings, argv, {}, config) == []
    config = _config()
    changed = bind_where_settings_say(settings, argv[:2], {"UVICORN_PORT": "7000"}, config)
    assert changed == ["host"]


def test_a_unix_socket_listener_and_programmatic_runs_are_left_alone() -> None:
    settings = load_settings(env={"HOST": "127.0.0.2"})
    config = _config()
    assert (
        bind_where_settings_say(settings, ["uvicorn", "main:app", "--uds", "/x"], {}, config) == []
    )
    assert bind_where_settings_say(settings, ["python", "app.py"], {}, config) == []
    assert bind_where_settings_say(settings, ["uvicorn", "main:app"], {}, None) == []
    assert config.host == "127.0.0.1"
