"""`uvicorn server.app:app`: settings from env/CONFIG_FILE, a manager started in the lifespan."""

from __future__ import annotations

from server.api.serving import build_service, log_startup_warnings
from server.core.config import load_settings
from server.logging_setup import setup_logging

__all__ = ["app"]

# A config the service cannot honour raises ConfigError here, so uvicorn refuses to start.
_settings = load_settings()
setup_logging(_settings.log_level)
log_startup_warnings(_settings)
app = build_service(_settings)
