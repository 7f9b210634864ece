"""Each action: its request model and the manager call, answered with the Socket.IO answer's
payload (server/wire), so both front ends say the same thing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.core.validation.shapes import FLOW_META, MANAGER_LABEL_PREFIX
from server.wire.amqp import CreateCommandData
from server.wire.answers import (
    ContainerCreatedOut,
    ContainerListOut,
    ContainerStateOut,
    ContainerStatusOut,
    ContainerUpdatedOut,
    MessageSentOut,
)
from server.wire.base import Wire
from server.wire.requests import (
    ContainerRef,
    ListContainersRequest,
    RequestIn,
    SendMessageRequest,
    UpdateContainerRequest,
)

if TYPE_CHECKING:
    from server.core.manager import ContainerManager

__all__ = ["Operation", "OPERATIONS", "FLOW_ACTIONS", "echoed_labels"]

Run = Callable[["ContainerManager", Any, str | None], Awaitable[Wire]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One action: how its `data` is parsed, and what it does."""

    request: type[RequestIn]
    run: Run


_ECHOED_OWN = frozenset(f"{MANAGER_LABEL_PREFIX}{key}" for key in FLOW_META)


def echoed_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels a status echoes: the caller's, and the platform's ids; not the manager's
    bookkeeping (ownership, instance, ports)."""
    return {
        k: v
        for k, v in labels.items()
        if not k.startswith(MANAGER_LABEL_PREFIX) or k in _ECHOED_OWN
    }


async def _create(m: ContainerManager, req: CreateCommandData, cid: str | None) -> Wire:
    if cid is not None:  # redelivered after the manager died past the engine's create
        for rec in list(m.registry.records.values()):
            labels = rec.info.labels
            if rec.info.name == req.name and labels.get("flowmgr.correlation_id") == cid:
                return ContainerCreatedOut.payload(m.registry.snapshot_of(rec))
    return ContainerCreatedOut.payload(await m.create_container(req.to_spec(cid)))


async def _start(m: ContainerManager, req: ContainerRef, cid: str | None) -> Wire:
    return ContainerStateOut.payload((await m.start_container(req.container_id)).id, "running")


async def _stop(m: ContainerManager, req: ContainerRef, cid: str | None) -> Wire:
    return ContainerStateOut.payload((await m.stop_container(req.container_id)).id, "stopped")


async def _restart(m: ContainerManager, req: ContainerRef, cid: str | None) -> Wire:
    return ContainerStateOut.payload((await m.restart_container(req.container_id)).id, "running")


async def _update(m: ContainerManager, req: UpdateContainerRequest, cid: str | None) -> Wire:
    snap = await m.update_container(req.container_id, req.code_path)
    return ContainerUpdatedOut.payload(snap.id, req.code_path)


async def _delete(m: ContainerManager, req: ContainerRef, cid: str | None) -> Wire:
    container_id, dropped = await m.delete_container_counted(req.container_id)
    answer = ContainerStateOut.payload(container_id, "deleted")
    if dropped:
        answer["queue_dropped"] = dropped
    return answer


async def _send(m: ContainerManager, req: SendMessageRequest, cid: str | None) -> Wire:
    container_id = m.get(req.container_id).id
    message_id = await m.send_message(container_id, req.message, queue=req.queue)
    return MessageSentOut.payload(container_id, req.message, message_id)


async def _status(m: ContainerManager, req: ContainerRef, cid: str | None) -> Wire:
    answer = ContainerStatusOut.payload(await m.get_status(req.container_id))
    answer["labels"] = echoed_labels(m.registry.resolve(req.container_id).info.labels)
    return answer


async def _list(m: ContainerManager, req: ListContainersRequest, cid: str | None) -> Wire:
    return ContainerListOut.payload(await m.list_containers(), nodes=m.cluster_nodes())


OPERATIONS: dict[str, Operation] = {
    "create_container": Operation(CreateCommandData, _create),
    "start_container": Operation(ContainerRef, _start),
    "stop_container": Operation(ContainerRef, _stop),
    "restart_container": Operation(ContainerRef, _restart),
    "update_container": Operation(UpdateContainerRequest, _update),
    "delete_container": Operation(ContainerRef, _delete),
    "send_message": Operation(SendMessageRequest, _send),
    "get_status": Operation(ContainerRef, _status),
    "list_containers": Operation(ListContainersRequest, _list),
}
"""Every action of `server.wire.amqp.ACTIONS`."""

FLOW_ACTIONS = frozenset(OPERATIONS) - {"create_container", "list_containers"}
"""The actions naming one flow: routed to the manager that owns it."""
