"""Saving the log pane's lines: no silent overwrite, no silent symlink, clear errors (pure I/O)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flowmgr_tui.log_save import SaveError, question, save_lines


def test_a_new_file_is_written_private(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    assert question(str(path)) is None
    assert save_lines(str(path), ["a", "DB_PASSWORD=***", ""]) == 3
    assert path.read_text() == "a\nDB_PASSWORD=***\n\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_file_needs_confirming(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    path.write_text("keep me\n")
    assert question(str(path)) == f"{path} exists: overwrite it?"
    with pytest.raises(SaveError, match="appeared meanwhile"):
        save_lines(str(path), ["new"])  # unconfirmed: refused by the open itself
    assert path.read_text() == "keep me\n"
    save_lines(str(path), ["new"], confirmed=True)
    assert path.read_text() == "new\n"


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_is_never_followed_unconfirmed(tmp_path: Path, dangling: bool) -> None:
    target = tmp_path / "target"
    if not dangling:
        target.write_text("precious\n")
    link = tmp_path / "link.log"
    link.symlink_to(target)
    assert question(str(link)) == f"{link} is a symlink to {target}: write there?"
    with pytest.raises(SaveError):
        save_lines(str(link), ["x"])
    assert target.exists() is not dangling
    if not dangling:
        assert target.read_text() == "precious\n"
    save_lines(str(link), ["x"], confirmed=True)  # the user said yes
    assert target.read_text() == "x\n" and link.is_symlink()


def test_directories_and_unwritable_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SaveError, match="is a directory"):
        question(str(tmp_path))
    with pytest.raises(SaveError, match="is a directory"):
        save_lines(str(tmp_path), ["x"], confirmed=True)
    with pytest.raises(SaveError, match="directory does not exist"):
        save_lines(str(tmp_path / "nope" / "x.log"), ["x"])
    (tmp_path / "file").write_text("")
    with pytest.raises(SaveError, match="not a directory"):
        save_lines(str(tmp_path / "file" / "x.log"), ["x"])
    with pytest.raises(SaveError, match="cannot write /sys/"):  # refused even to root
        save_lines("/sys/flowmgr-test.log", ["x"])
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SaveError, match="permission denied"):
            save_lines(str(locked / "x.log"), ["x"])
