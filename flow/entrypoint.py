"""Entry point of the flow image: run the flow code found in the code directory (/app)."""

from __future__ import annotations

import logging
import os
import runpy
import sys
from pathlib import Path

import flowrt

log = logging.getLogger("flowrt.entrypoint")


def find_main(code_dir: Path) -> Path | None:
    """The flow's script: $FLOW_MAIN, else main.py, else __main__.py, else the only *.py."""
    named = os.environ.get("FLOW_MAIN")
    candidates = [named] if named else ["main.py", "__main__.py"]
    for name in candidates:
        path = code_dir / name
        if path.is_file():
            return path
    scripts = sorted(code_dir.glob("*.py")) if code_dir.is_dir() else []
    return scripts[0] if len(scripts) == 1 else None


def builtin_commands(flow: flowrt.Flow) -> None:
    """Commands every flow answers unless its code registers its own."""
    flow.handlers["ping"] = lambda message: {"pong": True}


def main() -> int:
    """Run the flow's script, then serve its handlers if the script did not run the loop."""
    flowrt.setup_logging()
    code_dir = Path(os.environ.get("FLOW_CODE_DIR", "/app"))
    script = find_main(code_dir)
    # Flow code may import its sibling modules, as `python main.py` would allow.
    sys.path.insert(0, str(code_dir))
    builtin_commands(flowrt.flow)  # first, so the flow's own handlers replace them
    if script is None:
        log.warning(
            "no flow code in %s (expected main.py); answering built-in commands only", code_dir
        )
    else:
        log.info("running flow code %s", script)
        runpy.run_path(str(script), run_name="__main__")
    if not flowrt.flow.running:
        flowrt.flow.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
