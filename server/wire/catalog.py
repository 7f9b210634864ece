"""Every event of docs/PROTOCOL.md by name: the requests with their answers, and what the
server sends on its own. The server routes by it; the tests hold it equal to the document."""

from __future__ import annotations

from dataclasses import dataclass

from server.wire.answers import (
    ConnectedOut,
    ContainerCreatedOut,
    ContainerKilledOut,
    ContainerListOut,
    ContainerLogsOut,
    ContainerPauseOut,
    ContainerStateOut,
    ContainerStatusOut,
    ContainerUpdatedOut,
    HistoryOut,
    LogSubscriptionOut,
    MessageSentOut,
    WatchStatsOut,
)
from server.wire.base import WireModel
from server.wire.config_answer import ContainerInspectedOut
from server.wire.errors import ErrorOut
from server.wire.pushes import PUSHES
from server.wire.requests import (
    ContainerRef,
    CreateContainerRequest,
    GetHistoryRequest,
    GetLogsRequest,
    KillContainerRequest,
    ListContainersRequest,
    RequestIn,
    SendMessageRequest,
    UpdateContainerRequest,
    WatchStatsRequest,
)
from server.wire.shell import (
    OpenShellRequest,
    ResizeShellRequest,
    ShellClosedOut,
    ShellExitedOut,
    ShellOpenedOut,
    ShellOutputOut,
    ShellRef,
    ShellResizedOut,
    ShellWrittenOut,
    WriteShellRequest,
)

__all__ = ["Exchange", "REQUESTS", "SERVER_EVENTS"]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request: its fields, the event that answers it and that answer's shape."""

    request: type[RequestIn]
    answer: str
    """The answer event; "" when the ack alone answers (ext log subscriptions)."""
    reply: type[WireModel]
    """The answer's (and the ack's) shape."""


REQUESTS: dict[str, Exchange] = {
    "create_container": Exchange(CreateContainerRequest, "container_created", ContainerCreatedOut),
    "start_container": Exchange(ContainerRef, "container_started", ContainerStateOut),
    "stop_container": Exchange(ContainerRef, "container_stopped", ContainerStateOut),
    "restart_container": Exchange(ContainerRef, "container_restarted", ContainerStateOut),
    "update_container": Exchange(UpdateContainerRequest, "container_updated", ContainerUpdatedOut),
    "delete_container": Exchange(ContainerRef, "container_deleted", ContainerStateOut),
    "send_message": Exchange(SendMessageRequest, "message_sent", MessageSentOut),
    "get_container_status": Exchange(ContainerRef, "container_status", ContainerStatusOut),
    "list_containers": Exchange(ListContainersRequest, "container_list", ContainerListOut),
    # ext
    "get_container_logs": Exchange(GetLogsRequest, "container_logs", ContainerLogsOut),
    "subscribe_logs": Exchange(ContainerRef, "", LogSubscriptionOut),
    "unsubscribe_logs": Exchange(ContainerRef, "", LogSubscriptionOut),
    "get_history": Exchange(GetHistoryRequest, "history", HistoryOut),
    "watch_stats": Exchange(WatchStatsRequest, "", WatchStatsOut),
    "pause_container": Exchange(ContainerRef, "container_paused", ContainerPauseOut),
    "unpause_container": Exchange(ContainerRef, "container_unpaused", ContainerPauseOut),
    "kill_container": Exchange(KillContainerRequest, "container_killed", ContainerKilledOut),
    "open_shell": Exchange(OpenShellRequest, "shell_opened", ShellOpenedOut),
    "write_shell": Exchange(WriteShellRequest, "", ShellWrittenOut),
    "resize_shell": Exchange(ResizeShellRequest, "", ShellResizedOut),
    "close_shell": Exchange(ShellRef, "shell_closed", ShellClosedOut),
    "inspect_container": Exchange(ContainerRef, "container_inspected", ContainerInspectedOut),
}
"""Every request the server takes, by name."""

SERVER_EVENTS: dict[str, type[WireModel]] = {
    "connected": ConnectedOut,
    "error": ErrorOut,
    **{x.answer: x.reply for x in REQUESTS.values() if x.answer},
    **PUSHES,
    # to one client, never journalled: not PUSHES (whose names `get_history` filters by)
    ShellOutputOut.event: ShellOutputOut,
    ShellExitedOut.event: ShellExitedOut,
}
"""Every event the server emits, by name, with its payload's shape."""
