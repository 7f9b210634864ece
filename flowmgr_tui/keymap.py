"""Every action of the panel and its key, once: bindings, footer, palette and help come from it."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType

__all__ = ["Verb", "VERBS", "Key", "KEYS", "SCOPES", "bindings", "key_text", "palette_keys"]


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

    @property
    def id(self) -> str:
        """The binding id, unique: a scope binds each key once."""
        return f"{self.scope}.{self.keys.split(',')[0]}"


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
)

_KEY_NAMES = {"question_mark": "?", "slash": "/", "escape": "esc"}


def key_text(keys: str) -> str:
    """`escape,q` -> `esc / q`, as the help screen shows keys."""
    return " / ".join(_KEY_NAMES.get(k, k) for k in keys.split(","))


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
