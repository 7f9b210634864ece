"""CreateForm: image, name, env, ports, volumes; each checked, errors beside the field."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from flowmgr_tui.backend import Backend
from flowmgr_tui.create_fields import build_spec
from flowmgr_tui.formatting import describe_error
from flowmgr_tui.keymap import bindings
from server.core.errors import FlowMgrError
from server.core.models import ContainerSnapshot, CreateSpec

__all__ = ["CreateForm", "FIELDS"]

FIELDS: tuple[tuple[str, str, str], ...] = (
    ("image", "Image", "flow:latest (empty: the configured default)"),
    ("name", "Name", "my-flow"),
    ("environment", "Environment", "KEY=value, OTHER=x"),
    ("ports", "Ports", "HOST:CONTAINER, e.g. 8080:80, 5353:53/udp"),
    ("volumes", "Volumes", "/host/path:/container/path"),
)
"""Field key (as in docs/PROTOCOL.md's create_container), label, placeholder."""


class CreateForm(ModalScreen[ContainerSnapshot | None]):
    """Creates the container itself, so a refusal from the core lands beside its field too."""

    BINDINGS = bindings("create")

    def __init__(self, backend: Backend, default_image: str = "") -> None:
        super().__init__()
        self._backend = backend
        self._default_image = default_image

    def compose(self) -> ComposeResult:
        """One labelled input per field, each with its error line."""
        with VerticalScroll(classes="dialog form"):
            yield Label("Create a flow container", classes="dialog-title")
            for key, label, placeholder in FIELDS:
                with Horizontal(classes="form-row"):
                    yield Label(label, classes="form-label")
                    yield Input(placeholder=placeholder, id=f"field-{key}", compact=True)
                yield Label("", id=f"error-{key}", classes="field-error")
            yield Label("", id="form-status")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Create (ctrl+s)", variant="primary", id="create", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        """Start in the image field, prefilled with the default image."""
        image = self.query_one("#field-image", Input)
        image.value = self._default_image
        self.query_one("#field-name", Input).focus()

    def values(self) -> dict[str, str]:
        """The raw text of every field."""
        return {key: self.query_one(f"#field-{key}", Input).value for key, _, _ in FIELDS}

    def errors(self) -> dict[str, str]:
        """The error shown beside each field (empty when fine)."""
        return {key: str(self.query_one(f"#error-{key}", Label).content) for key, _, _ in FIELDS}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter moves on; Enter in the last field submits."""
        event.stop()
        if event.input.id == f"field-{FIELDS[-1][0]}":
            self.action_submit()
        else:
            self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Create or Cancel."""
        if event.button.id == "create":
            self.action_submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        """Close without creating."""
        self.dismiss(None)

    def action_submit(self) -> None:
        """Check every field; create only when all pass."""
        spec, errors = build_spec(self.values())
        self._show_errors(errors)
        if spec is None:
            self._status("fix the fields marked above", error=True)
            return
        self._status(f"creating {spec.name}...")
        self.query_one("#create", Button).disabled = True
        self._create(spec)

    @work(group="commands", exit_on_error=False, exclusive=True)
    async def _create(self, spec: CreateSpec) -> None:
        try:
            snap = await self._backend.create_container(spec)
        except FlowMgrError as err:
            # The core names the field when it can (a bad name, a taken host port).
            field = str(err.details.get("field", ""))
            if field in dict.fromkeys(k for k, _, _ in FIELDS):
                self._show_errors({field: err.message})
            self._status(describe_error(err), error=True)
        except Exception as err:  # shown to the user; the form stays open to retry
            self._status(describe_error(err), error=True)
        else:
            self.app.notify(f"{snap.name} created ({snap.short_id})", title="Create")
            self.dismiss(snap)
            return
        self.query_one("#create", Button).disabled = False

    def _show_errors(self, errors: dict[str, str]) -> None:
        for key, _, _ in FIELDS:
            message = errors.get(key, "")
            label = self.query_one(f"#error-{key}", Label)
            label.update(f"^ {message}" if message else "")
            label.set_class(bool(message), "-visible")
            self.query_one(f"#field-{key}", Input).set_class(bool(message), "-invalid")

    def _status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#form-status", Label)
        status.update(text)
        status.set_class(error, "-error")
