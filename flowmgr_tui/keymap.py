"""Every action of the panel and its key, once: bindings, footer, palette and help come from it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from textual.binding import Binding, BindingType

__all__ = [
    "Verb",
    "VERBS",
    "BULK_VERBS",
    "Key",
    "KEYS",
    "SCOPES",
    "RESERVED",
    "bindings",
    "key_text",
    "palette_keys",
    "configurable",
    "rebind",
    "textual_keymap",
    "clashes",
]


@dataclass(frozen=True, slots=True)
class Verb:
    """One thing the panel can do to a container."""

    name: str
    label: str
    """For menus: "Stop"."""
    doing: str
    """For progress: "stopping"."""
    done: str
    """For the outcome: "stopped"."""
    key: str
    """The key that does it on the dashboard and the detail screen ("": none of its own)."""
    short: str
    """For the footer: "Update"."""
    help: str
    """For the help screen and tooltips: "update its code (asks for a path)"."""


VERBS: dict[str, Verb] = {
    v.name: v
    for v in (
        Verb("start", "Start", "starting", "started", "s", "Start", "start it"),
        Verb("stop", "Stop", "stopping", "stopped", "x", "Stop", "stop it"),
        Verb("restart", "Restart", "restarting", "restarted", "r", "Restart", "restart it"),
        Verb(
            "update",
            "Update code of",
            "updating",
            "updated",
            "u",
            "Update",
            "update its code (asks for a path)",
        ),
        Verb("delete", "Delete", "deleting", "deleted", "d", "Delete", "delete it (asks first)"),
        Verb("pause", "Pause", "pausing", "paused", "p", "Pause", "pause it; unpause it if paused"),
        # no key of its own: `p` on a paused flow unpauses it (ActionRunner.request)
        Verb("unpause", "Unpause", "unpausing", "unpaused", "", "Unpause", "unpause it"),
        Verb(
            "kill",
            "Kill",
            "killing",
            "killed",
            "K",
            "Kill",
            "send it a signal (asks which, then confirms)",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Key:
    """One binding: where it acts, its keys, the action it runs and how it is described."""

    scope: str
    """A key of SCOPES: the screen or widget whose BINDINGS hold it."""
    keys: str
    """Textual key names, comma-separated: "escape,q"."""
    action: str
    label: str
    """For the footer."""
    help: str
    """For the help screen and the tooltip."""
    show: bool = True
    """Shown in the footer."""
    priority: bool = False
    palette: str = ""
    """The command palette's text for it, when the palette lists it."""
    rebound: str = ""
    """The user's keys for it (panel.toml's [keys]), comma-separated, replacing `keys`."""

    @property
    def id(self) -> str:
        """The binding id, unique: a scope binds each key once (its default key, so the id
        stays when the user rebinds it)."""
        return f"{self.scope}.{self.keys.split(',')[0]}"

    @property
    def in_force(self) -> str:
        """The keys that run it now: the user's, else the default."""
        return self.rebound or self.keys

    @property
    def name(self) -> str:
        """Its name in panel.toml's [keys]: `dashboard.stop`, `detail.tab_logs`, `app.quit`."""
        verb = re.fullmatch(r"act\('(\w+)'\)", self.action)
        base = verb.group(1) if verb else re.sub(r"\W+", "_", self.action).strip("_").lower()
        return f"{self.scope}.{base}"


def _verb_keys(scope: str, hidden: frozenset[str] = frozenset()) -> tuple[Key, ...]:
    return tuple(
        Key(scope, v.key, f"act('{v.name}')", v.short, v.help, show=v.name not in hidden)
        for v in VERBS.values()
        if v.key
    )


_SHELL_HELP = "a shell in its container (bash, else sh); leaving it returns here"

SCOPES: dict[str, str] = {
    "dashboard": "Containers (dashboard)",
    "detail": "Detail view",
    "logs": "Detail view, logs tab",
    "messages": "Detail view, messages tab",
    "create": "Create form",
    "confirm": "Questions",
    "signal": "Signal choice (kill)",
    "path": "Path prompt",
    "history": "History (the journal)",
    "help": "This help",
    "columns": "Columns (choose and order)",
    "app": "Everywhere",
}
"""Scope -> its heading on the help screen, in the help screen's order."""

KEYS: tuple[Key, ...] = (
    Key("app", "q", "quit", "Quit", "leave the panel"),
    Key("app", "ctrl+c", "quit", "Quit", "leave the panel", show=False, priority=True),
    Key("app", "question_mark", "help", "Help", "every key of the panel", palette="Help: keys"),
    Key(
        "app",
        "h",
        "history",
        "History",
        "past events from the journal, by flow, type and time",
        show=False,
        palette="History: journalled events",
    ),
    Key(
        "dashboard", "n", "create", "New", "create a container (form)", palette="Create a container"
    ),
    *_verb_keys("dashboard", frozenset({"kill"})),  # in help and the palette: the footer is full
    Key("dashboard", "e", "act('shell')", "Shell", _SHELL_HELP),
    Key("dashboard", "slash", "filter", "Filter", "filter rows as you type"),
    Key("dashboard", "o", "sort_next", "Sort", "sort by the next column (or click a header)"),
    Key("dashboard", "O", "sort_reverse", "Reverse", "reverse the order", show=False),
    Key("dashboard", "escape", "clear_filter", "Clear filter", "clear the filter", show=False),
    # Not in the footer (it is full at 80 columns): the help lists them, the summary line
    # under the table says when stopped flows are hidden and how many rows are marked.
    Key("dashboard", "a", "toggle_stopped", "All", "show or hide stopped flows", show=False),
    Key(
        "dashboard",
        "space",
        "toggle_mark",
        "Mark",
        "mark the row; then s, x, r, d act on every marked row (asked once)",
        show=False,
    ),
    Key("dashboard", "M", "clear_marks", "Unmark", "unmark every row", show=False),
    Key(
        "dashboard",
        "c",
        "columns",
        "Columns",
        "choose and order the columns (saved in panel.toml)",
        show=False,
    ),
    Key(
        "dashboard",
        "N",
        "toggle_nodes",
        "Nodes",
        "cluster mode: show or hide the node summary (flows, CPU, memory, agent link)",
        show=False,
    ),
    Key("detail", "escape", "back", "Back", "back to the list"),
    Key("detail", "1", "tab('overview')", "Graphs", "graphs", show=False),
    Key("detail", "2", "tab('logs')", "Logs", "live logs", show=False),
    Key("detail", "3", "tab('messages')", "Messages", "messages", show=False),
    Key("detail", "4", "tab('activity')", "Activity", "activity", show=False),
    Key(
        "detail",
        "5,i",
        "tab('inspect')",
        "Config",
        "its configuration (inspect: image, command, limits, mounts, env masked)",
        show=False,
    ),
    *_verb_keys("detail", frozenset({"start", "update", "delete", "kill"})),
    Key("detail", "e", "act('shell')", "Shell", _SHELL_HELP, show=False),
    # not `p`: that pauses the flow, on every tab of the detail view
    Key("logs", "f", "toggle_pause", "Follow", "stop / resume scrolling new lines"),
    Key("logs", "w", "toggle_wrap", "Wrap", "wrap long lines"),
    Key("logs", "t", "cycle_tail", "Tail", "change how many lines load"),
    Key("logs", "slash", "search", "Search", "show matching lines (new ones keep coming)"),
    Key("logs", "T", "toggle_timestamps", "Times", "show each line's time (UTC)"),
    Key("logs", "S", "cycle_since", "Since", "load the last 1 m, 5 m, 15 m, 1 h, or the tail"),
    Key("logs", "ctrl+s", "save", "Save", "save the shown lines to a file (asks for a path)"),
    Key("messages", "ctrl+s", "send", "Send", "check the JSON and send it"),
    Key("create", "escape", "cancel", "Cancel", "close the form"),
    Key("create", "ctrl+s", "submit", "Create", "create it"),
    Key("confirm", "y", "answer(True)", "Yes", "confirm"),
    Key("confirm", "n,escape", "answer(False)", "No", "cancel"),
    Key("signal", "escape", "cancel", "Cancel", "send nothing"),
    Key("path", "escape", "cancel", "Cancel", "close"),
    Key("history", "escape", "back", "Back", "back to the screen before"),
    Key("history", "o", "older", "Older", "load an older page of events"),
    Key("history", "slash", "filters", "Filter", "edit the filters (enter applies them)"),
    Key("history", "r", "reload", "Reload", "the newest events again"),
    Key("help", "escape,q,question_mark", "close", "Close", "close help"),
    Key(
        "columns", "space", "toggle_column", "Show/hide", "show or hide the column under the cursor"
    ),
    Key("columns", "shift+up,K", "move_up", "Up", "move the column up (left in the table)"),
    Key("columns", "shift+down,J", "move_down", "Down", "move the column down (right)"),
    Key("columns", "enter,ctrl+s", "save", "Save", "use these columns and save them"),
    Key("columns", "escape", "cancel", "Cancel", "close without changes"),
    Key(
        "app",
        "m",
        "toggle_mouse",
        "Mouse",
        "release the mouse so the terminal selects text (m again takes it back)",
        show=False,
    ),
)

BULK_VERBS = ("start", "stop", "restart", "delete")
"""The verbs that act on every marked row at once."""

RESERVED = frozenset({"ctrl+c"})
"""Keys no one may rebind or take: ctrl+c always quits (a way out, whatever the config says)."""

_KEY_NAMES = {"question_mark": "?", "slash": "/", "escape": "esc"}


def key_text(keys: str) -> str:
    """`escape,q` -> `esc / q`, as the help screen shows keys."""
    return " / ".join(_KEY_NAMES.get(k, k) for k in keys.split(","))


def configurable(keys: Iterable[Key] = KEYS) -> dict[str, Key]:
    """Name -> the key a config may rebind (ctrl+c's quit stays; `app.quit` is q's)."""
    out: dict[str, Key] = {}
    for key in keys:
        if not RESERVED.intersection(key.keys.split(",")):
            out.setdefault(key.name, key)
    return out


def rebind(overrides: Mapping[str, str], keys: Iterable[Key] = KEYS) -> tuple[Key, ...]:
    """The table with the named actions' keys replaced (names as `Key.name`)."""
    chosen = {k.id for k in configurable(keys).values() if k.name in overrides}
    return tuple(
        replace(k, rebound=overrides[k.name]) if k.id in chosen else replace(k, rebound="")
        for k in keys
    )


def textual_keymap(keys: Iterable[Key]) -> dict[str, str]:
    """Binding id -> keys, for `App.set_keymap`, of the rebound keys."""
    return {k.id: k.rebound for k in keys if k.rebound}


def _overlap(a: Key, b: Key) -> bool:
    """Whether the two can be active at once (same scope, the app's, a pane and its screen)."""
    scopes = {a.scope, b.scope}
    return (
        len(scopes) == 1
        or "app" in scopes
        or scopes in ({"logs", "detail"}, {"messages", "detail"})
    )


def clashes(keys: Iterable[Key]) -> list[tuple[Key, Key, str]]:
    """Pairs bound to one key while active together, at least one of them rebound."""
    found = []
    listed = list(keys)
    for i, a in enumerate(listed):
        for b in listed[i + 1 :]:
            if not (a.rebound or b.rebound) or not _overlap(a, b):
                continue
            common = set(a.in_force.split(",")) & set(b.in_force.split(","))
            if common:
                found.append((a, b, sorted(common)[0]))
    return found


def bindings(scope: str) -> list[BindingType]:
    """The BINDINGS of one screen or widget, in table order."""
    return [
        Binding(
            k.keys,
            k.action,
            k.label,
            show=k.show,
            priority=k.priority,
            id=k.id,
            tooltip=k.help[:1].upper() + k.help[1:],
        )
        for k in KEYS
        if k.scope == scope
    ]


def palette_keys() -> list[Key]:
    """The keys the command palette lists besides the per-container verbs."""
    return [k for k in KEYS if k.palette]
