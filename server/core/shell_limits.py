"""What a shell request may ask for: the wire's models and the core check the same numbers."""

from __future__ import annotations

from server.core.errors import InvalidRequest

__all__ = ["MAX_SIZE", "MAX_INPUT_BYTES", "check_size"]

MAX_SIZE = 1000
"""The widest and tallest terminal a shell may be given (columns, rows)."""
MAX_INPUT_BYTES = 64 << 10
"""The most one input may carry (UTF-8)."""


def check_size(cols: int, rows: int) -> None:
    """A terminal size from 1x1 to MAX_SIZE x MAX_SIZE, as JSON integers."""
    for field, value in (("cols", cols), ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
            raise InvalidRequest(
                f"{field} must be an integer from 1 to {MAX_SIZE}",
                field=field,
                details={"limit": MAX_SIZE},
            )
