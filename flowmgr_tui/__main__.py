"""`flowmgr`: the panel; `--server-only` runs the headless service."""

from __future__ import annotations

import argparse
import sys

from server import __version__


def build_parser() -> argparse.ArgumentParser:
    """The command line of `flowmgr`."""
    parser = argparse.ArgumentParser(prog="flowmgr", description="Flow Manager")
    parser.add_argument("--version", action="version", version=f"flowmgr {__version__}")
    parser.add_argument("--server-only", action="store_true", help="run the headless service")
    parser.add_argument("--config", help="path of config.json (default: CONFIG_FILE or ./config.json)")
    parser.add_argument("--host", help="listen address (overrides HOST)")
    parser.add_argument("--port", type=int, help="listen port (overrides PORT)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `flowmgr` console script."""
    args = build_parser().parse_args(argv)
    if not args.server_only:
        build_parser().print_help()
        return 0
    build_parser().print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
