"""What screens and the palette ask of the app: messages go up, the app decides."""

from __future__ import annotations

from textual.message import Message

__all__ = [
    "ContainerActionRequested",
    "ContainersActionRequested",
    "PreferenceChanged",
    "CreateFormRequested",
    "HelpRequested",
    "HistoryRequested",
    "SortRequested",
]


class ContainerActionRequested(Message):
    """Run a verb of keymap.VERBS on a container, "open" its detail view or open a "shell"."""

    def __init__(self, verb: str, container_id: str) -> None:
        super().__init__()
        self.verb = verb
        self.container_id = container_id


class ContainersActionRequested(Message):
    """Run a verb of keymap.BULK_VERBS on several containers (the marked rows), asking once."""

    def __init__(self, verb: str, container_ids: list[str]) -> None:
        super().__init__()
        self.verb = verb
        self.container_ids = container_ids


class PreferenceChanged(Message):
    """The user changed something panel.toml keeps (`table.columns`): the app saves it."""

    def __init__(self, dotted: str, value: object) -> None:
        super().__init__()
        self.dotted = dotted
        self.value = value


class CreateFormRequested(Message):
    """Open the create form."""


class HelpRequested(Message):
    """Show every key."""


class HistoryRequested(Message):
    """Open the history screen (the journal's events)."""


class SortRequested(Message):
    """Sort the dashboard's table by a column (ascending)."""

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column
