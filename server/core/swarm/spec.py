"""A flow's Swarm service: the Engine API ServiceSpec (API 1.41, Docker 20.10) of a create.

`service_spec` turns a create request that `validation.host.validate_create` has passed into
the JSON body of `POST /services/create`, from the same policy as one host
(`policy.host_config_defaults`, docs/SECURITY.md "Safe defaults"; docs/CLUSTER.md has the table).
Pure: no engine, no disk, no logging (the environment holds secrets).

Two things the single-host create never met:
- Swarm expands Go templates (`{{...}}`) in `Env` values and mount sources/targets on the node
  (swarmkit `template.ExpandContainerSpec`). A request's values are passed through literally:
  every `{{` in them is written as the template `{{"{{"}}`, which expands back to `{{`.
- A request's `node` is never pasted into a constraint: it must equal the ID or the hostname
  of a node in the list given, and becomes `node.id==<that node's ID>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.core.config import PLACEMENT_CONSTRAINT, SPREAD_DESCRIPTOR, Settings
from server.core.errors import InternalError, InvalidRequest
from server.core.models import CreateSpec
from server.core.validation.shapes import PORTS_LABEL, memory_bytes, ports_label

__all__ = [
    "SOCKET_VOLUME_PREFIX",
    "socket_volume",
    "SwarmNode",
    "service_spec",
    "resolve_node",
    "literal",
    "masked",
    "TMPFS_BYTES",
]

SOCKET_VOLUME_PREFIX = "flowmgr-sock-"
"""A flow's socket directory is the named local volume `flowmgr-sock-<flow name>` (docs/CLUSTER.md
"The flow channel follows the flow"): Swarm creates it on whichever node runs the task, where
that node's agent listens in it. A bind of a directory the agent prepares would fail for good
on a node where it is missing."""
TMPFS_BYTES = 64 << 20
"""The in-memory /tmp of a flow with a read-only root (as on one host)."""
_NODE_ID = re.compile(r"[0-9a-z]{25}", re.ASCII)
"""A Swarm node (or service, task) ID: 25 characters of [0-9a-z]."""
_NODE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}", re.ASCII)
"""What a request's `node` may look like at all: an ID or a host name, nothing else."""
_MAX_NODES_NAMED = 10
"""Most node names an "unknown node" answer lists."""
_MANAGED = ("flowmgr.managed", "flowmgr.instance", "flowmgr.name")
"""The labels that say whose flow a service is: set here, never from the caller's `labels`."""


@dataclass(frozen=True, slots=True)
class SwarmNode:
    """A node of the cluster as the managers list it (`GET /nodes`)."""

    id: str
    hostname: str


def socket_volume(flow_name: str) -> str:
    """The name of the flow's socket volume."""
    return f"{SOCKET_VOLUME_PREFIX}{flow_name}"


def literal(text: str) -> str:
    """`text` as a Swarm template that expands to exactly `text` (every `{{` escaped)."""
    return text.replace("{{", '{{"{{"}}')


def resolve_node(node: object, nodes: Sequence[SwarmNode]) -> SwarmNode:
    """The node of `nodes` whose ID, or else whose hostname, equals `node` exactly; else
    InvalidRequest(field="node"). A hostname two nodes share must be named by ID."""
    if not isinstance(node, str):
        raise InvalidRequest("node must be a node ID or hostname (a string)", field="node")
    if not _NODE_REF.fullmatch(node):
        raise InvalidRequest(
            f"node {node[:40]!r} is not a node ID or hostname (letters, digits, '_', '.', '-'; "
            "at most 253 characters)",
            field="node",
        )
    by_id = [n for n in nodes if n.id == node]
    found = by_id or [n for n in nodes if n.hostname == node]
    if len(found) > 1:
        raise InvalidRequest(
            f"node {node!r} is the hostname of {len(found)} nodes: name one by its ID",
            field="node",
            details={"node_ids": sorted(n.id for n in found)},
        )
    if not found:
        known = sorted({n.hostname for n in nodes})
        shown = ", ".join(known[:_MAX_NODES_NAMED]) + (
            ", ..." if len(known) > _MAX_NODES_NAMED else ""
        )
        raise InvalidRequest(
            f"node {node!r} is not a node of this cluster (nodes: {shown or 'none'})",
            field="node",
        )
    if not _NODE_ID.fullmatch(found[0].id):
        # the list comes from the managers: a malformed ID there is a bug, not the request's
        raise InternalError(f"the node list holds a malformed node ID {found[0].id[:40]!r}")
    return found[0]


def service_spec(
    spec: CreateSpec,
    settings: Settings,
    *,
    labels: Mapping[str, str],
    nodes: Sequence[SwarmNode] = (),
    node: object = None,
    replicas: int = 1,
) -> dict[str, Any]:
    """The ServiceSpec of the flow `spec` (already passed by `validate_create`).

    `labels` are extra labels for the service and its task containers (the managed labels
    `flowmgr.managed`, `flowmgr.instance` and `flowmgr.name` are always this function's own);
    the flow's socket directory is its volume `socket_volume(name)`, carrying the managed labels
    and mounted with NoCopy (nothing of the image is copied into it); `node` (a
    request's, or None) must name one of `nodes`; `replicas` is 1 (running) or 0 (created,
    not started).
    """
    dk = settings.docker
    if replicas not in (0, 1):
        raise InternalError(f"a flow's service has 0 or 1 replicas, not {replicas!r}")

    own = {str(k): str(v) for k, v in labels.items() if k not in _MANAGED}
    own.update(
        {"flowmgr.managed": "true", "flowmgr.instance": dk.instance, "flowmgr.name": spec.name}
    )
    if spec.ports:
        # the ports as the client wrote them, echoed after a restart of the hub too
        own[PORTS_LABEL] = ports_label(spec.ports)

    env = {**spec.environment, "FLOW_SOCKET": f"{dk.socket_mount}/flow.sock"}
    mounts: list[dict[str, Any]] = [
        {
            "Type": "bind",
            "Source": literal(pin.source),
            "Target": literal(pin.target),
            "ReadOnly": pin.mode != "rw",
        }
        for pin in spec.binds
    ]
    managed = {k: own[k] for k in _MANAGED}
    mounts.append(
        {
            "Type": "volume",
            "Source": literal(socket_volume(spec.name)),
            "Target": dk.socket_mount,
            "ReadOnly": False,
            "VolumeOptions": {"NoCopy": True, "Labels": managed},
        }
    )
    container: dict[str, Any] = {
        "Image": spec.image or dk.default_image,
        "Labels": dict(own),
        "Env": [f"{k}={literal(v)}" for k, v in env.items()],
        "Mounts": mounts,
        "CapabilityDrop": ["ALL"],
        "ReadOnly": dk.read_only,
        "StopGracePeriod": dk.stop_timeout * 1_000_000_000,
    }
    if spec.command is not None:
        # Command replaces the image's ENTRYPOINT; like `docker run IMAGE args`, the request's
        # command replaces the image's CMD: Args
        container["Args"] = list(spec.command)
    if dk.cap_add:
        container["CapabilityAdd"] = list(dk.cap_add)
    if dk.read_only:
        mounts.append(
            {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": TMPFS_BYTES}}
        )

    memory = memory_bytes(spec.memory_limit or dk.memory_limit, field="memory_limit")
    task: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {
            "Limits": {
                "MemoryBytes": memory,
                "NanoCPUs": int(dk.cpu_limit * 1_000_000_000),
                "Pids": dk.pids_limit,
            }
        },
        "RestartPolicy": _restart_policy(settings),
        "Placement": _placement(settings, nodes, node),
        "LogDriver": {
            "Name": "json-file",
            "Options": {"max-size": dk.log_max_size, "max-file": str(dk.log_max_files)},
        },
    }
    out: dict[str, Any] = {
        "Name": spec.name,
        "Labels": dict(own),
        "TaskTemplate": task,
        "Mode": {"Replicated": {"Replicas": replicas}},
        # one copy of a flow at a time: an update (a forced restart) stops the old task first
        "UpdateConfig": {"Parallelism": 1, "Order": "stop-first", "FailureAction": "pause"},
        "RollbackConfig": {"Parallelism": 1, "Order": "stop-first"},
    }
    if spec.ports:
        out["EndpointSpec"] = {"Ports": _ports(spec.ports)}
    if not task["Placement"]:
        del task["Placement"]
    return out


def masked(service: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a ServiceSpec fit for a log line: every environment value replaced."""
    out = dict(service)
    task = dict(out.get("TaskTemplate") or {})
    container = dict(task.get("ContainerSpec") or {})
    if "Env" in container:
        container["Env"] = [f"{str(e).partition('=')[0]}=***" for e in container["Env"]]
    task["ContainerSpec"] = container
    out["TaskTemplate"] = task
    return out


def _restart_policy(settings: Settings) -> dict[str, Any]:
    """docker.restart_policy as Swarm says it: no -> none (a crash is reported once),
    on-failure -> on-failure with MaxAttempts (0 = unlimited in both), always and
    unless-stopped -> any (a stop is a scale to 0, so the two are one here)."""
    dk = settings.docker
    if dk.restart_policy == "no":
        return {"Condition": "none"}
    if dk.restart_policy == "on-failure":
        return {"Condition": "on-failure", "MaxAttempts": dk.restart_max_retries}
    return {"Condition": "any"}


def _placement(settings: Settings, nodes: Sequence[SwarmNode], node: object) -> dict[str, Any]:
    cl = settings.cluster
    constraints: list[str] = []
    for c in cl.placement:
        # checked at load already; checked again because it is pasted into the spec
        if not PLACEMENT_CONSTRAINT.fullmatch(c):
            raise InternalError(f"cluster.placement holds {c[:80]!r}, not a constraint")
        constraints.append(c)
    if node is not None:
        constraints.append(f"node.id=={resolve_node(node, nodes).id}")
    out: dict[str, Any] = {}
    if constraints:
        out["Constraints"] = constraints
    if cl.spread is not None:
        if not SPREAD_DESCRIPTOR.fullmatch(cl.spread):
            raise InternalError(f"cluster.spread {cl.spread[:80]!r} is not a node attribute")
        out["Preferences"] = [{"Spread": {"SpreadDescriptor": cl.spread}}]
    return out


def _ports(ports: Mapping[str, int]) -> list[dict[str, Any]]:
    """Each port published on the node that runs the flow (`PublishMode: host`): this
    kernel-independent mode needs no routing mesh (IPVS), and Swarm places no two tasks
    publishing one host port on the same node."""
    out: list[dict[str, Any]] = []
    for key, host in ports.items():
        number, _, proto = key.partition("/")
        out.append(
            {
                "Protocol": proto or "tcp",
                "TargetPort": int(number),
                "PublishedPort": int(host),
                "PublishMode": "host",
            }
        )
    return out
