"""Where `uvicorn main:app` listens when its command line names no address: the service's.

uvicorn's own `--host`/`--port` (or UVICORN_HOST/UVICORN_PORT) win when given, as uvicorn does;
without them the app, imported by uvicorn's Config before it binds, sets that Config's host and
port from the settings (HOST/PORT, else config.json), as the deployment guide's table promises,
instead of uvicorn's own 127.0.0.1:8000.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from uvicorn.config import Config

from server.core.config import Settings

__all__ = ["uvicorn_cli_options", "loading_config", "bind_where_settings_say"]

_BIND_OPTIONS = {"--host": "UVICORN_HOST", "--port": "UVICORN_PORT"}
_OTHER_LISTENERS = ("--uds", "--fd", "UVICORN_UDS", "UVICORN_FD")


def uvicorn_cli_options(argv: Sequence[str]) -> set[str] | None:
    """The options given on a `uvicorn ...` or `python -m uvicorn ...` command line (`--host`,
    `--port=9000` -> `--port`); None when `argv` does not run uvicorn's command line."""
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "uvicorn":
            return {a.split("=", 1)[0] for a in argv[i + 1 :] if a.startswith("--")}
    return None


def loading_config() -> Config | None:
    """The uvicorn Config importing the app right now (it has not bound yet), if any."""
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Config) and not candidate.loaded:
            return candidate
        frame = frame.f_back  # type: ignore[assignment]
    return None


def bind_where_settings_say(
    settings: Settings, argv: Sequence[str], env: Mapping[str, str], config: Config | None
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
