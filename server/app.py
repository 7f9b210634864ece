"""`uvicorn server.app:app` (and `uvicorn main:app` from a checkout): the service `flowmgr
--server-only` runs, built by the same `build_service`, with settings from CONFIG_FILE and the
environment (SOCKET_DIR, LOG_LEVEL, HOST, PORT, CORS_ORIGINS, FLOWMGR_TOKEN).

HOST and PORT: uvicorn's own `--host`/`--port` (or UVICORN_HOST/UVICORN_PORT) win when given, as
uvicorn does; without them the uvicorn command line listens where HOST/PORT (else config.json)
say, as the deployment guide's table promises, instead of uvicorn's own 127.0.0.1:8000.
"""

from __future__ import annotations

import logging
import os
import sys

from server.api.connection_limit import bound_connections
from server.api.serving import build_service, log_startup_warnings
from server.api.uvicorn_cli import bind_where_settings_say, loading_config, uvicorn_cli_options
from server.core.config import load_settings, require_single_host
from server.logging_setup import setup_logging

__all__ = ["app"]

logger = logging.getLogger(__name__)

# A config the service cannot honour raises ConfigError here, so uvicorn refuses to start.
_settings = load_settings()
require_single_host(_settings)
setup_logging(_settings.log_level)
log_startup_warnings(_settings)
_loading = loading_config()
_changed = bind_where_settings_say(_settings, sys.orig_argv, os.environ, _loading)
if _loading is not None:  # `uvicorn main:app`: its options win, else the settings' bound
    bound_connections(_loading, _settings, uvicorn_cli_options(sys.orig_argv))
if _changed:
    logger.info(
        "listening on %s:%s (HOST/PORT or the config file: uvicorn was given no --%s)",
        _settings.server.host if "host" in _changed else "(uvicorn's --host)",
        _settings.server.port if "port" in _changed else "(uvicorn's --port)",
        "/--".join(_changed),
    )
app = build_service(_settings)
