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
from collections.abc import Sequence

from uvicorn.config import Config

from server.api.serving import build_service, log_startup_warnings
from server.core.config import Settings, load_settings
from server.logging_setup import setup_logging

__all__ = ["app", "uvicorn_cli_options", "bind_where_settings_say"]

logger = logging.getLogger(__name__)

_BIND_OPTIONS = {"--host": "UVICORN_HOST", "--port": "UVICORN_PORT"}
_OTHER_LISTENERS = ("--uds", "--fd", "UVICORN_UDS", "UVICORN_FD")


def uvicorn_cli_options(argv: Sequence[str]) -> set[str] | None:
    """The options given on a `uvicorn ...` or `python -m uvicorn ...` command line (`--host`,
    `--port=9000` -> `--port`); None when `argv` does not run uvicorn's command line."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "uvicorn":
            return {a.split("=", 1)[0] for a in argv[i + 1 :] if a.startswith("--")}
    return None


def _loading_config() -> Config | None:
    """The uvicorn Config importing this module right now (it has not bound yet)."""
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Config) and not candidate.loaded:
            return candidate
        frame = frame.f_back  # type: ignore[assignment]
    return None


def bind_where_settings_say(
    settings: Settings,
    argv: Sequence[str],
    env: dict[str, str] | os._Environ[str],
    config: Config | None,
) -> list[str]:
    """Set `config`'s host/port from `settings` where the uvicorn command line gave neither the
    option nor its UVICORN_* variable; the names of what was set."""
    given = uvicorn_cli_options(argv)
    if given is None or config is None:
        return []
    if any(o in given for o in _OTHER_LISTENERS) or any(env.get(v) for v in _OTHER_LISTENERS):
        return []
    changed = []
    if "--host" not in given and not env.get(_BIND_OPTIONS["--host"]):
        config.host = settings.server.host
        changed.append("host")
    if "--port" not in given and not env.get(_BIND_OPTIONS["--port"]):
        config.port = settings.server.port
        changed.append("port")
    return changed


# A config the service cannot honour raises ConfigError here, so uvicorn refuses to start.
_settings = load_settings()
setup_logging(_settings.log_level)
log_startup_warnings(_settings)
_changed = bind_where_settings_say(_settings, sys.orig_argv, os.environ, _loading_config())
if _changed:
    logger.info(
        "listening on %s:%s (HOST/PORT or the config file: uvicorn was given no --%s)",
        _settings.server.host if "host" in _changed else "(uvicorn's --host)",
        _settings.server.port if "port" in _changed else "(uvicorn's --port)",
        "/--".join(_changed),
    )
app = build_service(_settings)
