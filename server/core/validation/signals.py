"""The signals `kill_container` may send: an allow-list, one spelling on the way out.

Every front end asks this module (the API's wire model checks only the JSON type and length;
the remote panel checks before sending; the core checks again), so one input gets one answer.
"""

from __future__ import annotations

from server.core.errors import InvalidRequest

__all__ = ["KILL_SIGNALS", "DEFAULT_SIGNAL", "MAX_SIGNAL_TEXT", "check_signal"]

KILL_SIGNALS = ("SIGTERM", "SIGKILL", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
"""What a flow may be sent. Numbers are refused: their meaning differs between
architectures, and a number outside this list (SIGSTOP, SIGCONT, real-time signals) would
let a client freeze a flow behind the manager's back instead of asking for a pause."""

DEFAULT_SIGNAL = "SIGKILL"
"""`docker kill`'s default, when a request names none."""

MAX_SIGNAL_TEXT = 16
"""Longest `signal` a request may carry: longer text is refused before it is looked at."""


def check_signal(value: object) -> str:
    """The signal's name as the engine is sent it ("SIGTERM"); "term", "TERM" and "sigterm"
    name it too. InvalidRequest(field="signal") for anything else, listing the allowed."""
    # ASCII only: str.upper() maps other letters onto these ("ſigterm" -> "SIGTERM")
    if isinstance(value, str) and len(value) <= MAX_SIGNAL_TEXT and value.isascii():
        name = value.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in KILL_SIGNALS:
            return name
    shown = repr(value)[:40] if isinstance(value, str) else type(value).__name__
    raise InvalidRequest(
        f"signal {shown} is not one this manager sends; allowed: {', '.join(KILL_SIGNALS)} "
        '(with or without "SIG", any case)',
        field="signal",
        details={"allowed": list(KILL_SIGNALS)},
    )
