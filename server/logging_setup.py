"""Structured (one JSON object per line) logging on stdout, secrets masked."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from server.core.masking import mask_text

__all__ = ["setup_logging", "JsonLineFormatter"]


class JsonLineFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg"[, "exc"]}` per line, with secret-looking values masked."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_text(record.getMessage()),
        }
        if record.exc_info:
            line["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so a second call replaces it."""


def setup_logging(level: str = "INFO") -> None:
    """Send every logger (uvicorn's included) to stdout as JSON lines at `level`."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(handler)
    handler = _OurHandler(sys.stdout)
    handler.setFormatter(JsonLineFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
