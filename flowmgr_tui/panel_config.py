"""PanelConfig: the user's keys, theme, refresh rate, log defaults and columns (panel.toml).

A bad file never stops the panel: what cannot be used is named (file and line) in
`PanelConfig.problems`, and its default is used instead. Reading and writing the file is
panel_file.py's.
"""

from __future__ import annotations

import os
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.keys import Keys, _character_to_key
from textual.theme import BUILTIN_THEMES

from flowmgr_tui import keymap
from flowmgr_tui.panel_file import key_lines, line_of, read_text, shown_value

__all__ = [
    "PanelConfig",
    "LogDefaults",
    "SINCE_CHOICES",
    "COLUMN_KEYS",
    "default_path",
    "load_panel_config",
    "parse_panel_config",
]

SINCE_CHOICES = ("1m", "5m", "15m", "1h", "all")
"""`logs.since` presets."""
COLUMN_KEYS = (
    "name",
    "id",
    "image",
    "node",
    "state",
    "health",
    "cpu",
    "mem",
    "net",
    "uptime",
    "socket",
)
"""Every column the table can show, in its default order (node: cluster mode only)."""
REFRESH_RANGE = (0.05, 5.0)
"""Seconds between screen updates from the core, at least and at most."""
TAIL_RANGE = (1, 100_000)
PROBLEMS_KEPT = 50
"""Problems listed at most (the rest are counted): a file of junk is told in a few lines."""
TEXTUAL_KEYS = frozenset(
    {"tab", "shift+tab", "up", "down", "left", "right", "home", "end", "pageup", "pagedown"}
    | {"enter", "ctrl+p", "ctrl+q"}
)
"""Keys the tables, lists and focus use (and the palette, Textual's quit): a panel action bound to
one would never run where they act, so only its own default may use one."""
_MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})
_KEY_NAMES = frozenset(k.value for k in Keys) | {"space", "enter", "tab", "backspace"}


@dataclass(frozen=True, slots=True)
class LogDefaults:
    """How a log pane opens (`[logs]`)."""

    tail: int = 100
    """Lines loaded when the pane opens."""
    wrap: bool = False
    """Long lines wrapped."""
    timestamps: bool = False
    """Each line's time shown."""
    since: str = "all"
    """Only lines newer than this (one of SINCE_CHOICES)."""


@dataclass(frozen=True, slots=True)
class PanelConfig:
    """What panel.toml sets; defaults for whatever it does not (or sets wrongly)."""

    path: Path | None = None
    """The file it came from (None: no file, nothing is saved)."""
    keys: Mapping[str, str] = field(default_factory=dict)
    """Action name (keymap.Key.name) -> its keys, comma-separated, at most two."""
    theme: str | None = None
    """Textual theme name; None: Textual's default."""
    refresh: float = 0.25
    """Seconds between screen updates from the core's events."""
    logs: LogDefaults = field(default_factory=LogDefaults)
    columns: tuple[str, ...] = COLUMN_KEYS
    """The table's columns, in order (COLUMN_KEYS' names; name is always among them)."""
    show_stopped: bool = True
    """The table lists stopped flows (`a` toggles it)."""
    problems: tuple[str, ...] = ()
    """One message per unusable part, naming the file and line."""
    writable: bool = True
    """The file was read whole (or is absent): the panel may write its theme and columns."""

    @property
    def key_table(self) -> tuple[keymap.Key, ...]:
        """keymap.KEYS with these keys in force."""
        return keymap.rebind(self.keys)


def default_path(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/flowmgr/panel.toml`, else `~/.config/flowmgr/panel.toml`."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "flowmgr" / "panel.toml"


def load_panel_config(path: str | Path | None = None) -> PanelConfig:
    """Read and check the file (absent: all defaults). Blocking: call before the loop runs or
    in a thread."""
    target = Path(path) if path is not None else default_path()
    text, problem = read_text(target)
    if problem:
        return PanelConfig(path=target, problems=(problem,), writable=False)
    if text is None:
        return PanelConfig(path=target)
    return parse_panel_config(text, target)


def parse_panel_config(text: str, path: Path) -> PanelConfig:
    """Check the text key by key; each bad key is named with its line and left at default."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # its message names the line and column
        return PanelConfig(
            path=path, problems=(f"{path}: not TOML: {err}; defaults used",), writable=False
        )
    except RecursionError:  # tomllib recurses per nesting level: `a = [[[[...`
        return PanelConfig(
            path=path, problems=(f"{path}: nested too deeply; defaults used",), writable=False
        )
    checker = _Checker(text, path)
    values = checker.top(data)
    return PanelConfig(path=path, problems=checker.told(), **values)


class _Checker:
    """Turns the parsed file into PanelConfig fields, writing down what is wrong where."""

    def __init__(self, text: str, path: Path) -> None:
        self._lines = key_lines(text)  # once: a hostile file may hold thousands of bad keys
        self._path = path
        self.problems: list[str] = []
        self._more = 0

    def bad(self, dotted: str, why: str) -> None:
        if len(self.problems) >= PROBLEMS_KEPT:
            self._more += 1
            return
        line = line_of(self._lines, dotted)
        where = f"{self._path}:{line}" if line else str(self._path)
        self.problems.append(f"{where}: {dotted}: {why}")

    def told(self) -> tuple[str, ...]:
        """The problems, the ones past PROBLEMS_KEPT counted."""
        more = [f"{self._path}: {self._more} more problems not listed"] if self._more else []
        return (*self.problems, *more)

    def top(self, data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        sections = {"keys": self.keys, "logs": self.logs, "table": self.table}
        for name, value in data.items():
            if name in sections:
                if isinstance(value, dict):
                    out.update(sections[name](value))
                else:
                    self.bad(name, "must be a table ([" + name + "])")
            elif name == "theme":
                if isinstance(value, str) and value in BUILTIN_THEMES:
                    out["theme"] = value
                else:
                    themes = ", ".join(sorted(BUILTIN_THEMES))
                    self.bad(name, f"{shown_value(value)} is not a theme; one of: {themes}")
            elif name == "refresh":
                low, high = REFRESH_RANGE
                if _is_number(value) and low <= value <= high:
                    out["refresh"] = float(value)
                else:
                    self.bad(name, f"{shown_value(value)}: seconds from {low} to {high}")
            else:
                self.bad(name, "unknown key (known: theme, refresh, [keys], [logs], [table])")
        return out

    def keys(self, table: dict[str, Any]) -> dict[str, Any]:
        known = keymap.configurable()
        chosen: dict[str, str] = {}
        for name, value in _flatten(table).items():
            dotted = f"keys.{name}"
            if name not in known:
                self.bad(dotted, "no such action (the help screen, ?, lists them by scope)")
                continue
            keys, why = _key_list(value)
            taken = sorted(
                TEXTUAL_KEYS.intersection(keys.split(",")) - set(known[name].keys.split(","))
            )
            if why:
                self.bad(dotted, why)
            elif taken:
                self.bad(dotted, f"{taken[0]} moves, focuses or opens the palette; not rebound")
            else:
                chosen[name] = keys
        # A rebinding that lands on a key already active there is dropped (its default stays).
        while clashes := keymap.clashes(keymap.rebind(chosen)):
            a, b, key = clashes[0]
            drop = a if a.rebound else b
            other = b if drop is a else a
            self.bad(f"keys.{drop.name}", f"{key!r} is already {other.name}'s; not rebound")
            chosen.pop(drop.name)
        return {"keys": chosen}

    def logs(self, table: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name, value in table.items():
            dotted = f"logs.{name}"
            if name == "tail":
                low, high = TAIL_RANGE
                if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
                    fields[name] = value
                else:
                    self.bad(dotted, f"{shown_value(value)}: a line count from {low} to {high}")
            elif name in ("wrap", "timestamps"):
                if isinstance(value, bool):
                    fields[name] = value
                else:
                    self.bad(dotted, f"{shown_value(value)}: true or false")
            elif name == "since":
                if value in SINCE_CHOICES:
                    fields[name] = value
                else:
                    self.bad(dotted, f"{shown_value(value)}: one of {', '.join(SINCE_CHOICES)}")
            else:
                self.bad(dotted, "unknown key (known: tail, wrap, timestamps, since)")
        return {"logs": LogDefaults(**fields)}

    def table(self, table: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in table.items():
            dotted = f"table.{name}"
            if name == "columns":
                columns, why = _columns(value)
                if why:
                    self.bad(dotted, why)
                else:
                    out["columns"] = columns
            elif name == "show_stopped":
                if isinstance(value, bool):
                    out["show_stopped"] = value
                else:
                    self.bad(dotted, f"{shown_value(value)}: true or false")
            else:
                self.bad(dotted, "unknown key (known: columns, show_stopped)")
        return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`[keys.dashboard] stop = "x"` and `[keys] "dashboard.stop" = "x"` alike."""
    out: dict[str, Any] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _key_list(value: object) -> tuple[str, str]:
    """("x,ctrl+x", "") for "x" or ["x", "ctrl+x"]; ("", why) when unusable."""
    keys = [value] if isinstance(value, str) else value
    if not isinstance(keys, list) or not keys or len(keys) > 2:
        return "", f'{shown_value(value)}: one key or a list of two, e.g. ["x", "ctrl+x"]'
    names = []
    for key in keys:
        name = _key_name(key) if isinstance(key, str) else None
        if name is None:
            return "", f"{shown_value(key)} is not a key name (e.g. x, ctrl+x, f2, escape, space)"
        if name in keymap.RESERVED:
            return "", f"{name} always quits; it cannot be bound to anything else"
        names.append(name)
    if len(set(names)) != len(names):
        return "", f"{shown_value(value)}: the same key twice"
    return ",".join(names), ""


def _key_name(key: str) -> str | None:
    """Textual's name of a key as written ("?" -> "question_mark"), or None if none."""
    key = key.strip()
    *mods, base = key.split("+") if len(key) > 1 else [key]
    mods = [m.lower() for m in mods]
    if not base or any(m not in _MODIFIERS for m in mods):
        return None
    if len(base) == 1:
        if not base.isprintable() or base.isspace():
            return None
        name = _character_to_key(base)
    elif base.lower() in _KEY_NAMES:
        name = base.lower()
    else:
        base = base.lower()
        try:
            char = unicodedata.lookup(base.replace("_", " "))
        except KeyError:
            return None
        if len(char) != 1 or not char.isprintable():
            return None
        name = base
    return "+".join([*mods, name])


def _columns(value: object) -> tuple[tuple[str, ...], str]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        return (), f"{shown_value(value)}: a list of column names"
    unknown = [c for c in value if c not in COLUMN_KEYS]
    if unknown:
        return (), f"unknown column {shown_value(unknown[0])}; known: {', '.join(COLUMN_KEYS)}"
    if len(set(value)) != len(value):
        return (), "a column is listed twice"
    if "name" not in value:
        return (), "the name column cannot be hidden (it says which flow a row is)"
    return tuple(value), ""
