"""A busybox flow that prints its own secrets: env values alone, as NAME=value, inside a URL."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from server.core.models import CreateSpec

__all__ = ["LeakyFlow", "leaky_flow"]

BUSYBOX = "flowmgr-test-busybox:latest"


@dataclass(frozen=True)
class LeakyFlow:
    """The spec to create and the clear values that must never be shown."""

    spec: CreateSpec
    password: str
    url_password: str

    @property
    def secrets(self) -> tuple[str, str]:
        """What must never appear."""
        return self.password, self.url_password

    def leaks(self, text: str) -> list[str]:
        """The secrets found in `text` (empty when masked)."""
        return [s for s in self.secrets if s in text]

    def masked_lines(self) -> list[str]:
        """The three printed lines as they must be shown."""
        return ["***", "DB_PASSWORD=***", "url https://user:***@example.invalid/x"]


def leaky_flow(name: str, *, exit_code: int | None = None) -> LeakyFlow:
    """Prints the three lines and `tick-N` every 0.2 s, or once and exits with `exit_code`."""
    password, url_password = secrets.token_hex(8), secrets.token_hex(8)
    # The shell expands the values inside the container: they reach the manager only as output.
    prints = 'echo "$DB_PASSWORD"; echo "DB_PASSWORD=$DB_PASSWORD"; echo "url $API_URL"'
    script = (
        f"{prints}; exit {exit_code}"
        if exit_code is not None
        else f"trap 'exit 0' TERM; i=0; while true; do {prints}; echo tick-$i; i=$((i+1)); "
        "sleep 0.2 & wait $!; done"
    )
    spec = CreateSpec(
        name=name,
        image=BUSYBOX,
        command=["sh", "-c", script],
        environment={
            "DB_PASSWORD": password,
            "API_URL": f"https://user:{url_password}@example.invalid/x",
        },
    )
    return LeakyFlow(spec, password, url_password)
