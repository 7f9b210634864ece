"""`e`: hand the terminal to a shell in the selected flow, then give it back to the panel."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from textual.app import SuspendNotSupported

from flowmgr_tui.formatting import describe_error
from flowmgr_tui.terminal import attach, terminal_size

if TYPE_CHECKING:
    from textual.app import App

    from flowmgr_tui.backend import Backend
    from flowmgr_tui.state.panel_state import PanelState

__all__ = ["shell_into"]

logger = logging.getLogger(__name__)


async def shell_into(
    app: App[None], backend: Backend, state: PanelState, container_id: str
) -> None:
    """Open the shell, suspend the app while it runs, say how it ended; a flow that is not
    running gets a notice and the app is not suspended."""
    snap = state.containers.get(container_id)
    name = state.name_of(container_id)
    if snap is None or snap.state != "running":
        what = "gone" if snap is None else snap.state
        app.notify(f"{name} is not running ({what}): start it to open a shell", severity="warning")
        return
    stdin, stdout = sys.__stdin__, sys.__stdout__
    if stdin is None or stdout is None or not stdin.isatty():
        app.notify("no terminal to hand to a shell", severity="error")
        return
    cols, rows = terminal_size(stdout.fileno())
    try:
        shell = await backend.open_shell(container_id, cols, rows)
    except Exception as err:  # the core's refusal, typed: shown, the panel stays
        app.notify(f"no shell in {name}: {describe_error(err)}", severity="error")
        return
    try:
        # the batch holds the panel's repaints while the shell owns the screen
        with app.batch_update(), app.suspend():
            stdout.flush()
            code = await attach(shell, stdin.fileno(), stdout.fileno())
    except SuspendNotSupported:
        await shell.close()
        app.notify("this terminal cannot be handed to a shell", severity="error")
        return
    except Exception as err:  # the terminal was given back by attach's finally
        logger.exception("the shell in %s failed", name)
        await shell.close()
        app.notify(f"the shell in {name} failed: {describe_error(err)}", severity="error")
        return
    ended = "ended" if code is None else f"exited with code {code}"
    logger.info("shell in %s %s", name, ended)
    app.notify(f"shell in {name} {ended}")
