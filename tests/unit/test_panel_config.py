"""panel.toml: every bad part named by line and left at its default; hostile files read safely;
saving a value keeps the user's other lines and replaces the file atomically."""

from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path

import pytest

from flowmgr_tui import keymap
from flowmgr_tui.panel_config import (
    COLUMN_KEYS,
    LogDefaults,
    PanelConfig,
    default_path,
    load_panel_config,
)
from flowmgr_tui.panel_file import MAX_BYTES, PanelFileError, save_values, set_value
from flowmgr_tui.screens.help import help_text

GOOD = """\
# my panel
theme = "nord"
refresh = 0.5

[keys]
"dashboard.stop" = ["X", "ctrl+x"]   # capital X and ctrl+x
dashboard.filter = "f"

[keys.detail]
tab_logs = "l"

[logs]
tail = 500
wrap = true
timestamps = true
since = "15m"

[table]
columns = ["name", "state", "cpu"]
show_stopped = false
"""


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "panel.toml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def test_a_good_file_sets_everything_typed(tmp_path: Path) -> None:
    cfg = load_panel_config(_write(tmp_path, GOOD))
    assert cfg.problems == ()
    assert cfg.theme == "nord" and cfg.refresh == 0.5
    assert cfg.logs == LogDefaults(tail=500, wrap=True, timestamps=True, since="15m")
    assert cfg.columns == ("name", "state", "cpu") and cfg.show_stopped is False
    assert dict(cfg.keys) == {
        "dashboard.stop": "X,ctrl+x",
        "dashboard.filter": "f",
        "detail.tab_logs": "l",
    }
    stop = next(k for k in cfg.key_table if k.name == "dashboard.stop")
    assert stop.in_force == "X,ctrl+x" and stop.id == "dashboard.x"  # the id stays
    assert keymap.textual_keymap(cfg.key_table)["dashboard.x"] == "X,ctrl+x"
    assert "X / ctrl+x" in help_text(cfg.key_table)


def test_absent_file_means_defaults_and_xdg_decides_where(tmp_path: Path) -> None:
    assert load_panel_config(tmp_path / "nope.toml") == PanelConfig(path=tmp_path / "nope.toml")
    assert default_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/flowmgr/panel.toml")
    assert default_path({}) == Path.home() / ".config" / "flowmgr" / "panel.toml"
    assert PanelConfig().columns == COLUMN_KEYS


def test_bad_values_and_unknown_keys_are_named_with_their_line(tmp_path: Path) -> None:
    text = """\
theme = "no-such-theme"
refresh = 0
colour = "red"

[logs]
tail = "all"
wrap = "yes"
since = "2d"
follow = true

[table]
columns = ["name", "ports"]
"""
    cfg = load_panel_config(_write(tmp_path, text))
    path = tmp_path / "panel.toml"
    lines = {p.split(": ")[0]: p for p in cfg.problems}
    assert set(lines) == {f"{path}:{n}" for n in (1, 2, 3, 6, 7, 8, 9, 12)}, cfg.problems
    assert "theme" in lines[f"{path}:1"] and "no-such-theme" in lines[f"{path}:1"]
    assert "unknown key" in lines[f"{path}:3"] and "unknown key" in lines[f"{path}:9"]
    assert "'ports'" in lines[f"{path}:12"]
    assert cfg.theme is None and cfg.refresh == 0.25 and cfg.logs == LogDefaults()
    assert cfg.columns == COLUMN_KEYS


@pytest.mark.parametrize(
    ("binding", "why"),
    [
        ('"dashboard.stop" = "r"', "already dashboard.restart's"),  # bound twice
        ('"dashboard.stop" = "q"', "already app.quit's"),  # the app's key, active too
        ('"dashboard.explode" = "z"', "no such action"),
        ('"app.quit" = "ctrl+c"', "ctrl+c always quits"),
        ('"dashboard.stop" = ["ctrl+c", "z"]', "ctrl+c always quits"),
        ('"dashboard.stop" = ["a", "b", "c"]', "a list of two"),
        ('"dashboard.stop" = []', "a list of two"),
        ('"dashboard.stop" = ["z", "z"]', "the same key twice"),
        ('"dashboard.stop" = "ctrl+nope"', "not a key name"),
        ('"dashboard.stop" = "hyperspace+x"', "not a key name"),
        ('"dashboard.stop" = 7', "one key or a list of two"),
        ('"dashboard.stop" = "\\u0007"', "not a key name"),
        ('"dashboard.stop" = "enter"', "enter moves, focuses or opens the palette"),
        ('"app.help" = ["f1", "ctrl+p"]', "ctrl+p moves"),
    ],
)
def test_hostile_bindings_are_refused_and_the_default_stays(
    tmp_path: Path, binding: str, why: str
) -> None:
    cfg = load_panel_config(_write(tmp_path, f"# keys\n[keys]\n{binding}\n"))
    assert len(cfg.problems) == 1 and why in cfg.problems[0], cfg.problems
    assert cfg.problems[0].startswith(f"{tmp_path / 'panel.toml'}:3: ")
    assert dict(cfg.keys) == {}
    table = cfg.key_table
    assert next(k for k in table if k.name == "dashboard.stop").in_force == "x"
    assert [k for k in table if k.name == "app.quit"][-1].in_force == "ctrl+c"


def test_a_swap_of_two_keys_is_no_clash_and_ctrl_c_still_quits(tmp_path: Path) -> None:
    cfg = load_panel_config(
        _write(tmp_path, '[keys]\n"dashboard.stop" = "r"\n"dashboard.restart" = "x"\n')
    )
    assert cfg.problems == ()
    quits = [k for k in cfg.key_table if k.action == "quit"]
    assert [k.in_force for k in quits] == ["q", "ctrl+c"]
    assert keymap.clashes(cfg.key_table) == []


def test_every_action_has_one_name_so_later_verbs_are_configurable() -> None:
    names = [k.name for k in keymap.configurable().values()]
    assert len(names) == len(set(names))
    for scope in ("dashboard", "detail"):
        for verb in keymap.VERBS.values():
            if verb.key:  # unpause has none: p on a paused flow unpauses it
                assert f"{scope}.{verb.name}" in keymap.configurable()


def test_not_toml_is_one_problem_with_its_line_and_no_content(tmp_path: Path) -> None:
    secret = "root:$6$s3cr3tHASH:19000:0:99999:7:::"
    path = _write(tmp_path, f"theme = 'nord'\n{secret}\n")
    cfg = load_panel_config(path)
    assert cfg.writable is False and cfg.theme is None
    (problem,) = cfg.problems
    assert "line 2" in problem and "s3cr3t" not in problem and "99999" not in problem


def test_a_link_to_a_system_file_is_read_but_never_shown_or_written(tmp_path: Path) -> None:
    target = Path("/etc/shadow") if os.access("/etc/shadow", os.R_OK) else Path("/etc/passwd")
    link = tmp_path / "panel.toml"
    link.symlink_to(target)
    before = target.read_bytes()
    cfg = load_panel_config(link)
    assert cfg.writable is False and len(cfg.problems) == 1
    for line in before.decode(errors="replace").splitlines():
        for field in line.split(":")[1:2]:  # the hash (shadow) or "x" (passwd)
            if len(field) > 3:
                assert field not in cfg.problems[0]
    with pytest.raises(PanelFileError, match="not saved"):
        save_values(link, {"theme": '"nord"'})
    assert target.read_bytes() == before and link.is_symlink()


def test_a_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "panel.toml"
    with path.open("wb") as file:  # 100 MB, sparse: cheap to make
        file.truncate(100 * 1024 * 1024)
    cfg = load_panel_config(path)
    assert cfg.writable is False
    assert f"larger than {MAX_BYTES // 1024} KiB" in cfg.problems[0]


def test_bad_utf8_names_its_line(tmp_path: Path) -> None:
    cfg = load_panel_config(_write(tmp_path, b'theme = "nord"\n# caf\xe9\n'))
    assert cfg.writable is False and ":2: not UTF-8" in cfg.problems[0]


def test_a_fifo_or_a_directory_does_not_hang_or_crash(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    assert "not a regular file" in load_panel_config(fifo).problems[0]
    assert load_panel_config(tmp_path).problems  # a directory
    assert "not a usable path" in load_panel_config(f"{tmp_path}/a\0b").problems[0]
    (tmp_path / "locked.toml").write_text("theme = 'nord'\n")
    (tmp_path / "locked.toml").chmod(0)
    if os.getuid() != 0:  # root reads it anyway
        assert "cannot be read" in load_panel_config(tmp_path / "locked.toml").problems[0]


def test_saving_keeps_comments_and_other_keys_and_is_atomic(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    save_values(path, {"theme": '"dracula"', "table.columns": '["name", "id"]'})
    text = path.read_text()
    assert "# my panel" in text and "# capital X and ctrl+x" in text
    assert 'theme = "dracula"' in text and 'columns = ["name", "id"]' in text
    cfg = load_panel_config(path)
    assert cfg.problems == () and cfg.theme == "dracula" and cfg.columns == ("name", "id")
    assert cfg.logs.tail == 500  # the rest as it was
    assert [p.name for p in tmp_path.iterdir()] == ["panel.toml"]  # no temporary file left


def test_saving_into_a_missing_file_and_a_multiline_value(tmp_path: Path) -> None:
    path = tmp_path / "new" / "panel.toml"
    save_values(path, {"table.columns": '["name"]'})
    save_values(path, {"theme": '"nord"'})
    assert tomllib.loads(path.read_text()) == {"theme": "nord", "table": {"columns": ["name"]}}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = 'x = 1\n[table]\ncolumns = [\n  "name",\n  "id",\n]\n# end\n'
    new = set_value(text, "table.columns", '["name"]')
    assert new == 'x = 1\n[table]\ncolumns = ["name"]\n# end\n'
    assert set_value("[a]\nb = 1\n", "theme", '"x"') == 'theme = "x"\n[a]\nb = 1\n'


def test_a_dotfiles_link_to_a_toml_file_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "panel.toml"
    real.parent.mkdir()
    real.write_text("# kept\nrefresh = 1\n")
    link = tmp_path / "panel.toml"
    link.symlink_to(real)
    save_values(link, {"theme": '"nord"'})
    assert link.is_symlink() and real.read_text() == '# kept\nrefresh = 1\ntheme = "nord"\n'


def test_the_readme_example_is_a_clean_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## The panel's keys, look and table (panel.toml)")[1]
    example = section.split("```toml\n")[1].split("```")[0]
    cfg = load_panel_config(_write(tmp_path, example))
    assert cfg.problems == () and cfg.theme == "nord"
    assert dict(cfg.keys) == {"dashboard.stop": "x,ctrl+x"}


def test_a_file_of_thousands_of_bad_keys_is_told_briefly_and_fast(tmp_path: Path) -> None:
    lines = "".join(f"junk{i} = {i}\n" for i in range(15_000))  # ~250 KiB
    assert len(lines) < MAX_BYTES
    started = time.monotonic()
    cfg = load_panel_config(_write(tmp_path, lines))
    assert time.monotonic() - started < 5
    assert len(cfg.problems) == 51 and cfg.problems[-1].endswith("14950 more problems not listed")
    assert cfg.problems[49].startswith(f"{tmp_path / 'panel.toml'}:50: junk49:")


@pytest.mark.parametrize("text", ["a = " + "[" * 100_000, "a = " + "{b = " * 40_000])
def test_deep_nesting_is_refused_not_a_crash(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    cfg = load_panel_config(path)
    assert cfg.writable is False and "nested too deeply" in cfg.problems[0]
    with pytest.raises(PanelFileError, match="not saved"):
        save_values(path, {"theme": '"nord"'})


def test_the_default_keys_clash_only_where_the_help_closes_itself() -> None:
    """A key added to the table (by any change) that another active key already has fails here:
    Textual would run only one of the two."""
    every = keymap.rebind({name: key.keys for name, key in keymap.configurable().items()})
    found = {(a.name, b.name, key) for a, b, key in keymap.clashes(every)}
    assert found == {
        ("app.quit", "help.close", "q"),  # the help's own q and ? close it, on purpose
        ("app.help", "help.close", "question_mark"),
    }
