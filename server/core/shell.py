"""Interactive shells in a flow's container: one exec on a pseudo-terminal, bounded both ways."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from server.core.errors import FlowMgrError, InvalidRequest
from server.core.shell_limits import MAX_INPUT_BYTES, check_size

if TYPE_CHECKING:
    from server.core.docker_adapter import DockerAdapter, ExecTty

__all__ = [
    "ShellSession",
    "SHELL_COMMAND",
    "MAX_INPUT_BACKLOG",
    "OUTPUT_CHUNK",
]

logger = logging.getLogger(__name__)

# `$$` first: the shell's pid inside the container, read off the stream so the session can
# end it (the engine has no call that kills an exec); `exec` keeps that pid for bash or sh.
SHELL_COMMAND = [
    "/bin/sh",
    "-c",
    'echo "$$"; command -v bash >/dev/null 2>&1 && exec bash -i; exec sh -i',
]
TERM = "xterm-256color"
MAX_INPUT_BACKLOG = 256 << 10
"""Input bytes a session holds that the terminal has not taken yet; past it input is refused."""
OUTPUT_CHUNK = 16 << 10
"""Bytes read from the terminal at a time."""
OUTPUT_QUEUE = 8
"""Chunks read ahead of the consumer: a consumer that stops stops the reading, and the shell."""
_PID_LINE = 32
# Signals every process of the shell's session (the shell leads it: its pid is the session
# id, field 6 of /proc/<pid>/stat), so background jobs go with it, not only the foreground.
# Run by sh (images without a kill binary have the builtin); the pid is an int we parsed.
_KILL_SESSION = (
    "for p in /proc/[0-9]*; do "
    '{ read -r l < "$p/stat"; } 2>/dev/null || continue; '
    'set -- ${l##*) }; [ "$4" = %d ] && kill -%s "${p#/proc/}" 2>/dev/null; '
    "done; exit 0"
)
HANGUP_GRACE = 2.0
"""Seconds a hung-up shell has to end before it is killed."""


class _Closed(Exception):
    """The session was closed while output waited for its consumer."""


class ShellSession:
    """A shell on a pseudo-terminal in a running container: output as bytes chunks, input
    written in order, resize, and `close` ending the process (hang-up, then kill)."""

    def __init__(self, adapter: DockerAdapter, container_id: str, tty: ExecTty) -> None:
        self.container_id = container_id
        self._adapter = adapter
        self._tty = tty
        self._loop = asyncio.get_running_loop()
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._room = threading.Semaphore(OUTPUT_QUEUE)
        """Chunks the reader may hand on before the consumer takes one (the bound)."""
        self._stop = threading.Event()
        self._in: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._pid: int | None = None
        self._ended = asyncio.Event()
        self._exit_code: int | None = None
        self._closing = False
        self._reader = threading.Thread(
            target=self._read, name=f"shell-out-{container_id[:12]}", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write, name=f"shell-in-{container_id[:12]}", daemon=True
        )
        self._reader.start()
        self._writer.start()

    @classmethod
    async def open(
        cls, adapter: DockerAdapter, container_id: str, cols: int, rows: int
    ) -> ShellSession:
        """Start the shell (bash when the image has it, else sh)."""
        check_size(cols, rows)
        tty = await adapter.exec_tty(container_id, SHELL_COMMAND, cols, rows, {"TERM": TERM})
        return cls(adapter, container_id, tty)

    @property
    def exec_id(self) -> str:
        """The engine's id of the exec (exec_inspect tells whether it runs)."""
        return self._tty.exec_id

    @property
    def ended(self) -> bool:
        """Whether the output has ended (the shell exited, or the session was closed)."""
        return self._ended.is_set()

    async def output(self) -> AsyncIterator[bytes]:
        """The terminal's output until the shell ends; read by one consumer."""
        while (chunk := await self._out.get()) is not None:
            self._room.release()
            yield chunk

    async def exit_code(self) -> int | None:
        """Once the output ended: the shell's exit code (None when it could not be read)."""
        await self._ended.wait()
        if self._exit_code is None:
            with contextlib.suppress(FlowMgrError):
                for _ in range(20):  # the engine records the code a moment after the stream ends
                    running, code = await self._adapter.exec_state(self.exec_id)
                    if not running:
                        self._exit_code = code
                        break
                    await asyncio.sleep(0.05)
        return self._exit_code

    def write(self, data: bytes) -> None:
        """Queue input for the terminal (InvalidRequest when too large, too much waits, or
        the shell has ended)."""
        if self._ended.is_set() or self._closing:
            raise InvalidRequest("the shell has ended", field="session_id")
        if len(data) > MAX_INPUT_BYTES:
            raise InvalidRequest(
                f"an input may carry at most {MAX_INPUT_BYTES} bytes",
                field="data",
                details={"limit": MAX_INPUT_BYTES},
            )
        with self._backlog_lock:
            if self._backlog + len(data) > MAX_INPUT_BACKLOG:
                raise InvalidRequest(
                    f"the terminal is not taking input: {self._backlog} bytes wait for it already",
                    field="data",
                    details={"limit": MAX_INPUT_BACKLOG},
                )
            self._backlog += len(data)
        self._in.put(data)

    async def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size (the shell gets SIGWINCH)."""
        check_size(cols, rows)
        if self._ended.is_set():
            raise InvalidRequest("the shell has ended", field="session_id")
        await self._adapter.exec_resize(self.exec_id, cols, rows)

    async def close(self) -> None:
        """End the shell: hang it up (its foreground job with it), kill it if it stays, cut
        the stream. Safe to call again, and after it ended by itself."""
        if self._closing:
            await self._ended.wait()
            return
        self._closing = True
        self._in.put(None)
        try:
            await self._end_process()
        finally:
            self._stop.set()
            await asyncio.to_thread(self._tty.close)
            await self._ended.wait()

    async def _end_process(self) -> None:
        try:
            running, _ = await self._adapter.exec_state(self.exec_id)
            if not running:
                return
            if self._pid is None:
                logger.warning("shell %s: no pid read, cannot end its process", self.exec_id[:12])
                return
            for signal in ("HUP", "KILL"):  # a shell may ignore the hang-up (trap '' HUP)
                await self._adapter.exec_run(
                    self.container_id, ["/bin/sh", "-c", _KILL_SESSION % (self._pid, signal)]
                )
                if await self._stopped_within(HANGUP_GRACE):
                    return
            logger.warning("shell %s still ran after SIGKILL", self.exec_id[:12])
        except FlowMgrError as err:  # the container went: the process went with it
            logger.info("shell %s: could not end it (%s)", self.exec_id[:12], err)

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                while (await self._adapter.exec_state(self.exec_id))[0]:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            return False
        return True

    # --- threads ---------------------------------------------------------------------

    def _read(self) -> None:
        head = b""
        try:
            while len(head) < _PID_LINE and b"\n" not in head:
                chunk = self._tty.read(_PID_LINE)
                if not chunk:
                    break
                head += chunk
            line, sep, rest = head.partition(b"\n")
            if sep and line.strip().isdigit():
                self._pid = int(line.strip())
            else:
                rest = head  # not our line: pass it on as output
            if rest:
                self._hand(rest)
            while chunk := self._tty.read(OUTPUT_CHUNK):
                self._hand(chunk)
        except _Closed:
            pass
        except Exception:  # the stream broke: the session ends as if the shell had
            logger.exception("shell %s: reading its output failed", self.exec_id[:12])
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed first
                self._loop.call_soon_threadsafe(self._finish)

    def _hand(self, chunk: bytes) -> None:
        """Waits while the consumer is OUTPUT_QUEUE chunks behind (the shell then blocks on
        its writes), until the session is closed."""
        while not self._room.acquire(timeout=0.5):
            if self._stop.is_set():
                raise _Closed
        self._loop.call_soon_threadsafe(self._out.put_nowait, chunk)

    def _finish(self) -> None:
        self._ended.set()
        self._in.put(None)
        self._out.put_nowait(None)

    def _write(self) -> None:
        while (data := self._in.get()) is not None:
            try:
                self._tty.write(data)
            except FlowMgrError as err:
                logger.info("shell %s: input not taken (%s)", self.exec_id[:12], err)
                return
            finally:
                with self._backlog_lock:
                    self._backlog -= len(data)
