"""ext shells: the requests that open and drive a shell in a flow's container, their answers,
and what the server pushes to the client that opened it (docs/PROTOCOL.md "Shells")."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from server.core.shell_limits import MAX_INPUT_BYTES, MAX_SIZE
from server.wire.base import Wire, WireModel
from server.wire.pushes import Push
from server.wire.requests import ContainerRef, RequestIn

__all__ = [
    "OpenShellRequest",
    "WriteShellRequest",
    "ResizeShellRequest",
    "ShellRef",
    "ShellOpenedOut",
    "ShellWrittenOut",
    "ShellResizedOut",
    "ShellClosedOut",
    "ShellOutputOut",
    "ShellExitedOut",
]

Size = Annotated[int, Field(ge=1, le=MAX_SIZE)]
SessionId = Annotated[str, Field(min_length=1, max_length=64)]


class OpenShellRequest(ContainerRef):
    """ext `open_shell`: a shell in a running flow's container, on a terminal of this size."""

    cols: Size
    rows: Size


class ShellRef(RequestIn):
    """ext `close_shell`: one of this client's shell sessions."""

    session_id: SessionId


class WriteShellRequest(ShellRef):
    """ext `write_shell`: input for the terminal (keys as text; at most MAX_INPUT_BYTES of
    UTF-8, checked once encoded)."""

    data: str = Field(max_length=MAX_INPUT_BYTES)


class ResizeShellRequest(ShellRef):
    """ext `resize_shell`: the terminal's new size."""

    cols: Size
    rows: Size


class ShellOpenedOut(WireModel):
    """ext `shell_opened`: the session's id, for input, resize and the pushes."""

    session_id: str
    container_id: str
    cols: int
    rows: int

    @staticmethod
    def payload(session_id: str, container_id: str, cols: int, rows: int) -> Wire:
        """The answer to `open_shell`."""
        return {"session_id": session_id, "container_id": container_id, "cols": cols, "rows": rows}


class ShellWrittenOut(WireModel):
    """ext: the ack of `write_shell`."""

    session_id: str
    bytes: int

    @staticmethod
    def payload(session_id: str, size: int) -> Wire:
        """How many bytes were queued for the terminal."""
        return {"session_id": session_id, "bytes": size}


class ShellResizedOut(WireModel):
    """ext: the ack of `resize_shell`."""

    session_id: str
    cols: int
    rows: int

    @staticmethod
    def payload(session_id: str, cols: int, rows: int) -> Wire:
        """The size now in force."""
        return {"session_id": session_id, "cols": cols, "rows": rows}


class ShellClosedOut(WireModel):
    """ext `shell_closed`: the answer to `close_shell` (its `shell_exited` follows or came)."""

    session_id: str
    status: Literal["closed"] = "closed"

    @staticmethod
    def payload(session_id: str) -> Wire:
        """The answer to `close_shell`."""
        return {"session_id": session_id, "status": "closed"}


class ShellOutputOut(Push):
    """ext `shell_output` (to the session's owner only; never journalled): terminal output,
    decoded as UTF-8 (a sequence split between pushes is kept whole; invalid bytes become
    U+FFFD)."""

    event: ClassVar[str] = "shell_output"
    session_id: str
    data: str

    @staticmethod
    def payload(session_id: str, data: str) -> Wire:
        """One piece of output."""
        return {"session_id": session_id, "data": data}


class ShellExitedOut(Push):
    """ext `shell_exited` (to the owner only, never journalled): the session ended, whatever
    ended it; `exit_code` null when the engine could not tell it."""

    event: ClassVar[str] = "shell_exited"
    session_id: str
    container_id: str
    exit_code: int | None

    @staticmethod
    def payload(session_id: str, container_id: str, exit_code: int | None) -> Wire:
        """The end of a session."""
        return {"session_id": session_id, "container_id": container_id, "exit_code": exit_code}
