"""Hand the panel's terminal to a shell: raw mode, keys in, output out, size changes followed,
and the terminal as it was afterwards (also when something fails)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import termios
import tty
from typing import TYPE_CHECKING

from server.core.errors import FlowMgrError

if TYPE_CHECKING:
    from flowmgr_tui.backend import Shell

__all__ = ["attach", "terminal_size"]

logger = logging.getLogger(__name__)

_READ = 4096


def terminal_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on `fd` (80x24 when it is none)."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return max(1, min(size.columns, 1000)), max(1, min(size.lines, 1000))


async def attach(shell: Shell, stdin: int, stdout: int) -> int | None:
    """Run `shell` on this terminal until it ends; its exit code."""
    loop = asyncio.get_running_loop()
    saved = termios.tcgetattr(stdin)
    resizes: set[asyncio.Task[None]] = set()

    def on_keys() -> None:
        try:
            data = os.read(stdin, _READ)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(stdin)  # no more keys: the shell still ends by itself
            return
        try:
            shell.write(data)
        except FlowMgrError as err:  # too much typed ahead: these keys are lost, said once
            logger.info("shell input not taken: %s", err)

    def on_winch() -> None:
        cols, rows = terminal_size(stdout)
        task = loop.create_task(_resize(shell, cols, rows))
        resizes.add(task)
        task.add_done_callback(resizes.discard)

    tty.setraw(stdin)
    loop.add_reader(stdin, on_keys)
    loop.add_signal_handler(signal.SIGWINCH, on_winch)
    try:
        async for chunk in shell.output():
            await _write_all(stdout, chunk)
        return await shell.exit_code()
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
        loop.remove_reader(stdin)
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        for task in resizes:
            task.cancel()
        await shell.close()


async def _resize(shell: Shell, cols: int, rows: int) -> None:
    with contextlib.suppress(FlowMgrError):  # the shell ended meanwhile
        await shell.resize(cols, rows)


async def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to a terminal that may take it in parts (a blocking fd: a terminal
    takes output as fast as it draws)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        view = view[written:]
