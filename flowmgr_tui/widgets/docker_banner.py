"""DockerBanner: a loud line while the Docker Engine does not answer."""

from __future__ import annotations

from textual.widgets import Static

__all__ = ["DockerBanner"]


class DockerBanner(Static):
    """Hidden while Docker answers; says why and that the core keeps retrying otherwise."""

    DEFAULT_CSS = "DockerBanner { height: auto; }"

    def show_state(self, available: bool, reason: str = "") -> None:
        """Show or hide the banner."""
        self.set_class(not available, "-visible")
        if not available:
            why = f": {reason}" if reason else ""
            self.update(
                f"!! Docker Engine unreachable{why} -- retrying; actions will fail "
                "until it is back."
            )
