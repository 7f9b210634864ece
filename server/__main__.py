"""`python -m server` (and `flowmgr --server-only`): the headless service under uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from server.api.serving import (
    GracefulServer,
    build_service,
    log_startup_warnings,
    uvicorn_config,
)
from server.core.config import load_cli_settings, require_cluster, require_single_host
from server.core.errors import ConfigError
from server.core.validation.host import validate_bind_roots
from server.logging_setup import setup_logging

__all__ = ["main", "build_parser"]

logger = logging.getLogger("server")


def build_parser() -> argparse.ArgumentParser:
    """Options of the headless service."""
    parser = argparse.ArgumentParser(prog="python -m server", description="Flow Manager service")
    parser.add_argument("--host", help="listen address (overrides HOST and the config file)")
    parser.add_argument("--port", type=int, help="listen port (overrides PORT and the config file)")
    parser.add_argument("--config", help="config.json (default: CONFIG_FILE, ./config.json)")
    return parser


def main(argv: list[str] | None = None, *, hub: bool = False) -> int:
    """Run until SIGTERM / Ctrl-C; 0 on a clean stop, 2 on a bad configuration, 1 otherwise.
    With `hub`, the cluster hub (`flowmgr --hub`: the same API over Docker Swarm)."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_cli_settings(args.config, args.host, args.port)
        if hub:
            require_cluster(settings)
        else:
            require_single_host(settings)
        validate_bind_roots(settings)  # before uvicorn: a bad root is exit 2, not a traceback
    except ConfigError as err:
        setup_logging("INFO")
        logger.error("cannot start: %s", err)
        return 2
    setup_logging(settings.log_level)
    log_startup_warnings(settings)
    try:
        service = build_service(settings, hub=hub)
    except ConfigError as err:
        logger.error("cannot start: %s", err)
        return 2
    config = uvicorn_config(service, settings)
    server = GracefulServer(config)
    # uvicorn's loop=auto: uvloop when installed, as `uvicorn main:app` runs; it costs ~13 %
    # less CPU per request than asyncio's loop here (bench/RESULTS.md, issue 14)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(server.serve())
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
