"""The API token file: made 0600 in a 0700 dir on first start, read back only when still safe."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from server.core.config import load_settings
from server.core.errors import ConfigError
from server.core.token_file import api_token, load_or_create, read_client_token, with_api_token

NOBODY = 65534


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_first_start_makes_the_token_0600_in_a_new_0700_dir_whatever_the_umask(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sockets" / ".flowmgr-x" / ".api-token"
    old = os.umask(0)  # the image's entry point runs with umask 0000
    try:
        token, created = load_or_create(str(path))
    finally:
        os.umask(old)
    assert created and len(token) >= 40
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert _mode(path.parent.parent) == 0o700  # missing parents too
    assert path.read_text() == token + "\n"
    again, created = load_or_create(str(path))
    assert again == token and not created


def test_default_path_is_in_the_state_dir_and_a_configured_token_wins(tmp_path: Path) -> None:
    settings = load_settings(env={}, socket_dir=str(tmp_path))
    assert settings.token_path == str(tmp_path / ".flowmgr-default" / ".api-token")
    made = api_token(settings)
    assert made.source == settings.token_path and made.created
    configured = load_settings(
        env={"FLOWMGR_TOKEN": "from-env-123"}, socket_dir=str(tmp_path / "b")
    )
    assert api_token(configured).value == "from-env-123"
    assert not (tmp_path / "b").exists()  # nothing written when a token is configured


def test_the_log_says_where_the_token_is_never_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(env={}, socket_dir=str(tmp_path))
    with caplog.at_level(logging.INFO):
        served = with_api_token(settings)
        with_api_token(settings)
    token = served.server.token
    assert token and token not in caplog.text
    assert f"generated in {settings.token_path}" in caplog.text
    assert f"kept in {settings.token_path}" in caplog.text


def _made(tmp_path: Path) -> Path:
    path = tmp_path / "state" / ".api-token"
    load_or_create(str(path))
    return path


def _refused(path: Path, *words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_or_create(str(path))
    text = str(err.value)
    assert str(path) in text and "fix:" in text, text
    for word in words:
        assert word in text, text


def test_a_symlinked_token_file_is_refused(tmp_path: Path) -> None:
    path = _made(tmp_path)
    secret = tmp_path / "elsewhere"
    secret.write_text("a" * 40)
    secret.chmod(0o600)
    path.unlink()
    path.symlink_to(secret)
    _refused(path, "symbolic link")


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(real)
    _refused(tmp_path / "state" / ".api-token", "directory")
    assert not (real / ".api-token").exists()


def test_a_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _made(tmp_path)
    path.chmod(0o644)
    _refused(path, "mode is 644")


def test_a_token_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = _made(tmp_path)
    os.chown(path, NOBODY, NOBODY)
    _refused(path, f"owned by uid {NOBODY}")


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    path = _made(tmp_path)
    os.chown(path.parent, NOBODY, NOBODY)
    _refused(path, f"owned by uid {NOBODY}", "chown")


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777])
def test_a_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = _made(tmp_path)
    path.parent.chmod(mode)
    _refused(path, "writable by other users", "chmod 700")


def test_a_fifo_or_directory_in_its_place_is_refused_without_hanging(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.mkfifo(state / ".api-token", 0o600)
    _refused(state / ".api-token", "not a regular file")
    (state / ".api-token").unlink()
    (state / ".api-token").mkdir(mode=0o700)
    _refused(state / ".api-token")


@pytest.mark.parametrize(
    "content", [b"", b"\n", b"short\n", b"a b c d e f g h i j k l\n", b"\xff" * 40, b"a" * 5000]
)
def test_a_file_without_a_token_is_refused(tmp_path: Path, content: bytes) -> None:
    path = _made(tmp_path)
    path.write_bytes(content)
    _refused(path, "does not hold a token")


def test_an_existing_regular_file_is_never_overwritten(tmp_path: Path) -> None:
    path = _made(tmp_path)
    path.write_text("operator-chosen-token-0123456789\n")
    assert load_or_create(str(path)) == ("operator-chosen-token-0123456789", False)


def test_the_client_reads_the_file_and_says_what_is_wrong(tmp_path: Path) -> None:
    path = _made(tmp_path)
    assert read_client_token(str(path)) == path.read_text().strip()
    assert read_client_token(str(tmp_path / "missing")) is None
    with pytest.raises(ConfigError, match="not a regular file"):
        read_client_token(str(tmp_path))
    path.write_text("")
    with pytest.raises(ConfigError, match="does not hold a token"):
        read_client_token(str(path))


def test_a_configured_token_too_long_to_present_stops_start_up(tmp_path: Path) -> None:
    settings = load_settings(env={"FLOWMGR_TOKEN": "a" * 5000}, socket_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="longer than"):
        api_token(settings)


def test_a_short_configured_token_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(env={"FLOWMGR_TOKEN": "abc"}, socket_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        with_api_token(settings)
    assert "easy to guess" in caplog.text and "abc" not in caplog.text
