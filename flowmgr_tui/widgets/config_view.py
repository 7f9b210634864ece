"""ConfigView: a flow's configuration (the core's masked inspect), one labelled line per item."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from flowmgr_tui.formatting import size
from server.core.flow_config import FlowConfig

__all__ = ["ConfigView", "config_text"]

_LABEL = 16
"""Width of the label column."""


def _limits(cfg: FlowConfig) -> str:
    mem = size(cfg.memory_limit) if cfg.memory_limit else "none"
    cpu = f"{cfg.cpu_limit:g}" if cfg.cpu_limit else "none"
    pids = str(cfg.pids_limit) if cfg.pids_limit else "none"
    root = "read-only" if cfg.read_only_rootfs else "writable"
    return f"memory {mem}, cpus {cpu}, pids {pids}, root filesystem {root}"


def _restart(cfg: FlowConfig) -> str:
    if cfg.restart_policy == "on-failure" and cfg.restart_max_retries:
        return f"on-failure (at most {cfg.restart_max_retries} retries)"
    return cfg.restart_policy


def config_text(cfg: FlowConfig) -> Text:
    """The whole view as text (pure: tests and screenshots read it)."""
    out = Text()

    def line(label: str, value: str, style: str = "") -> None:
        out.append(f"{label:<{_LABEL}}", "bold")
        out.append(f"{value}\n", style)

    def block(label: str, rows: list[str]) -> None:
        line(label, rows[0] if rows else "none", "" if rows else "dim")
        for row in rows[1:]:
            line("", row)

    line("Name", cfg.name)
    line("Image", cfg.image)
    if cfg.node is not None:
        line("Node", cfg.node)
    line("Entrypoint", " ".join(cfg.entrypoint) or "(the image's)")
    line("Command", " ".join(cfg.command) or "(the image's)")
    line("Working dir", cfg.working_dir or "(the image's)")
    line("User", cfg.user or "(the image's)")
    line("Limits", _limits(cfg))
    line("Restart policy", _restart(cfg))
    line("Network", cfg.network_mode or "default")
    block("Ports", [f"{c} -> {h if h is not None else '(none)'}" for c, h in cfg.ports.items()])
    block(
        "Mounts",
        [
            f"{m.type} {m.source or '-'} -> {m.target} ({'ro' if m.read_only else 'rw'})"
            for m in cfg.mounts
        ],
    )
    block("Environment", [f"{k}={v}" for k, v in sorted(cfg.environment.items())])
    block("Labels", [f"{k}={v}" for k, v in sorted(cfg.labels.items())])
    out.rstrip()
    return out


class ConfigView(VerticalScroll):
    """Scrolls; shows `Loading...`, then the configuration or why there is none."""

    def compose(self) -> ComposeResult:
        """One text block."""
        yield Static("Loading...", id="config-text")

    def show(self, cfg: FlowConfig) -> None:
        """The configuration, as the core masked it."""
        self.query_one(Static).update(config_text(cfg))

    def show_error(self, why: str) -> None:
        """Say why the configuration could not be read."""
        self.query_one(Static).update(Text(f"[configuration unavailable: {why}]", style="yellow"))

    @property
    def text(self) -> str:
        """What is shown (tests read it)."""
        return str(self.query_one(Static).content)
