"""SwarmEngine: flows as Swarm services on a manager's engine; async calls, typed errors.

The one module of `server.core.swarm` that imports `docker`. Every SDK call runs in a thread
with a timeout (as `docker_adapter` does), and every engine error leaves as the taxonomy of
`server.core.errors`:

- a missing service or task: ContainerNotFound (a flow's `container_id` is its service's ID);
- a missing image: ImageNotFound;
- no Raft leader (quorum lost): DockerApiError with `details["reason"] == "no_quorum"`; a
  mutation that gets no answer within `mutation_timeout` is probed (a node list asked with a
  short timeout) and reported the same way when the managers cannot answer either;
- an engine that is not a manager: DockerApiError with reason "not_a_manager";
- an engine that cannot be reached: DockerUnavailable.

Service specs come from `spec.service_spec`; nothing here logs an environment.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from server.core.container_info import parse_time
from server.core.docker_adapter import open_api_client
from server.core.errors import (
    ContainerNotFound,
    DockerApiError,
    DockerUnavailable,
    FlowMgrError,
    ImageNotFound,
    InvalidRequest,
)

__all__ = [
    "SwarmEngine",
    "FlowService",
    "FlowTask",
    "NodeInfo",
    "translated",
    "NO_QUORUM",
    "MIN_API_VERSION",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

MIN_API_VERSION = "1.41"
"""Docker 20.10: `Resources.Limits.Pids` and `ContainerSpec.CapabilityAdd/Drop` exist."""
NO_QUORUM = "no_quorum"
"""`details["reason"]` of a DockerApiError raised because the swarm has no leader."""
_NO_QUORUM_MARKERS = (
    "does not have a leader",
    "no leader",
    "no elected cluster leader",
    "quorum",
    "lost leadership",
    "lost leader status",
)
_NOT_MANAGER_MARKERS = ("not a swarm manager", "node is not part of a swarm")
_NO_IMAGE_MARKERS = ("no such image",)
_UPDATE_RETRIES = 5
"""Retries of a scale or forced update that lost the race for the service's version."""
_TASK_CHUNK = 64
"""Service IDs per tasks query (the filter travels in the URL)."""
_POOL_SIZE = 8
_SETTLE_SECONDS = 20.0
"""Seconds past `mutation_timeout` a scale to 1 waits for the old task to go (its stop grace)."""
_TASK_GRACE = 2.0
"""Seconds a scale-up gets to show its task before the service is nudged."""
_NUDGES = 3
"""Forced updates a scale to 1 may send when the managers made no task."""


def _explanation(err: docker.errors.APIError) -> str:
    text = err.explanation
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text or err)


def _no_quorum(cause: str) -> DockerApiError:
    return DockerApiError(
        "the swarm has no leader (manager quorum lost): creating, starting, stopping, "
        "restarting and deleting flows are refused until enough managers are back; running "
        f"flows keep running ({cause[:300]})",
        details={"reason": NO_QUORUM, "explanation": cause[:1000]},
    )


@contextmanager
def translated(not_found: type[FlowMgrError] = ContainerNotFound, what: str = "") -> Iterator[None]:
    """Turn docker-py and transport errors into the taxonomy (this module's one boundary)."""
    try:
        yield
    except docker.errors.ImageNotFound as err:
        raise ImageNotFound(_explanation(err), details={"status": 404}) from err
    except docker.errors.NotFound as err:
        text = _explanation(err)
        raise not_found(f"{what}: {text}" if what else text, details={"status": 404}) from err
    except docker.errors.APIError as err:
        text = _explanation(err)
        low = text.lower()
        if any(m in low for m in _NO_QUORUM_MARKERS):
            raise _no_quorum(text) from err
        if any(m in low for m in _NOT_MANAGER_MARKERS):
            raise DockerApiError(
                f"this engine is not a Swarm manager: {text[:300]}",
                details={"reason": "not_a_manager", "status": err.status_code},
            ) from err
        if any(m in low for m in _NO_IMAGE_MARKERS):
            raise ImageNotFound(text, details={"status": err.status_code}) from err
        raise DockerApiError(
            text, details={"status": err.status_code, "explanation": text[:1000]}
        ) from err
    except requests.exceptions.Timeout as err:
        raise DockerApiError(
            f"the Docker Engine did not answer in time: {err}", details={"reason": "timeout"}
        ) from err
    except (
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        OSError,
        docker.errors.DockerException,
    ) as err:
        raise DockerUnavailable(f"the Docker Engine cannot be reached: {err}") from err


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of the swarm, as the managers see it."""

    id: str
    hostname: str
    role: str
    """"manager" or "worker"."""
    state: str
    """Status.State: "ready", "down", "unknown", "disconnected"."""
    availability: str
    """"active", "pause" or "drain"."""
    addr: str
    labels: dict[str, str]
    leader: bool = False
    reachability: str | None = None
    """Managers only: "reachable", "unreachable", "unknown"."""


@dataclass(frozen=True, slots=True)
class FlowTask:
    """One task of a flow's service: where and how one copy of the flow runs (or ran)."""

    id: str
    service_id: str
    slot: int | None
    node_id: str | None
    node: str | None
    """The node's hostname (None when the node is not in the list any more)."""
    state: str
    """Status.State: new, pending, assigned, accepted, preparing, starting, running,
    complete, failed, shutdown, rejected, orphaned, remove."""
    desired_state: str
    container_id: str | None
    exit_code: int | None
    error: str | None
    """Status.Err: why the task failed or was rejected (e.g. a missing image or mount)."""
    message: str
    updated: datetime | None


@dataclass(frozen=True, slots=True)
class FlowService:
    """A flow's service and its tasks (newest first)."""

    id: str
    name: str
    labels: dict[str, str]
    replicas: int
    version: int
    tasks: tuple[FlowTask, ...]
    image: str = ""
    created: datetime | None = None

    @property
    def current(self) -> FlowTask | None:
        """The task the managers want running (the newest one), else the newest of all."""
        for t in self.tasks:
            if t.desired_state in ("running", "ready"):
                return t
        return self.tasks[0] if self.tasks else None


def _node_info(raw: dict[str, Any]) -> NodeInfo:
    spec = raw.get("Spec") or {}
    status = raw.get("Status") or {}
    manager = raw.get("ManagerStatus") or {}
    return NodeInfo(
        id=str(raw.get("ID", "")),
        hostname=str((raw.get("Description") or {}).get("Hostname", "")),
        role=str(spec.get("Role", "")),
        state=str(status.get("State", "unknown")),
        availability=str(spec.get("Availability", "")),
        addr=str(status.get("Addr", "")),
        labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
        leader=bool(manager.get("Leader", False)),
        reachability=manager.get("Reachability"),
    )


def _task(raw: dict[str, Any], hostnames: dict[str, str]) -> FlowTask:
    status = raw.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    node_id = raw.get("NodeID") or None
    exit_code = container.get("ExitCode")
    updated = raw.get("UpdatedAt")
    return FlowTask(
        id=str(raw.get("ID", "")),
        service_id=str(raw.get("ServiceID", "")),
        slot=raw.get("Slot"),
        node_id=node_id,
        node=hostnames.get(node_id) if node_id else None,
        state=str(status.get("State", "")),
        desired_state=str(raw.get("DesiredState", "")),
        container_id=container.get("ContainerID") or None,
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        error=status.get("Err") or None,
        message=str(status.get("Message", "")),
        updated=parse_time(updated) if isinstance(updated, str) else None,
    )


def _service(raw: dict[str, Any], tasks: list[FlowTask]) -> FlowService:
    spec = raw.get("Spec") or {}
    replicated = (spec.get("Mode") or {}).get("Replicated") or {}
    image = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", "")
    created = raw.get("CreatedAt")
    return FlowService(
        id=str(raw["ID"]),
        name=str(spec.get("Name", "")),
        labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
        replicas=int(replicated.get("Replicas", 0)),
        version=int((raw.get("Version") or {}).get("Index", 0)),
        tasks=tuple(tasks),
        image=str(image).split("@", 1)[0],
        created=parse_time(created) if isinstance(created, str) else None,
    )


def _newest_first(task: FlowTask) -> tuple[int, float]:
    # a task in a newer desired state wins over an older one of the same slot
    return (0 if task.desired_state in ("running", "ready") else 1, -_stamp(task.updated))


def _stamp(when: datetime | None) -> float:
    return when.timestamp() if when else 0.0


class SwarmEngine:
    """Async facade over one Swarm manager's engine (every SDK call in a thread, timed)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        call_timeout: float = 30.0,
        mutation_timeout: float = 10.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self._base_url = base_url
        self.call_timeout = call_timeout
        self.mutation_timeout = mutation_timeout
        """Seconds a create, scale, restart or remove may take before the managers are probed
        (without a leader, the engine can hold a mutation far longer than this)."""
        self.probe_timeout = probe_timeout
        self._api: docker.APIClient | None = None
        self._pool: ThreadPoolExecutor | None = None

    # plumbing

    def _client(self) -> docker.APIClient:
        if self._api is None:
            with translated():
                api, server = open_api_client(
                    self._base_url,
                    timeout=max(self.call_timeout, self.mutation_timeout) + 1,
                    version=MIN_API_VERSION,
                )
                if docker.utils.version_lt(server, MIN_API_VERSION):
                    api.close()
                    raise DockerApiError(
                        f"cluster mode needs Engine API {MIN_API_VERSION} (Docker 20.10) or "
                        f"newer; this engine speaks {server}",
                        details={"reason": "api_version", "api_version": server},
                    )
                self._api = api
        return self._api

    async def _call(
        self,
        fn: Callable[[], T],
        *,
        timeout: float | None = None,
        not_found: type[FlowMgrError] = ContainerNotFound,
        what: str = "",
    ) -> T:
        def run() -> T:
            with translated(not_found, what):
                return fn()

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="swarm")
        loop = asyncio.get_running_loop()
        limit = timeout or self.call_timeout
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, run), limit)
        except TimeoutError as err:
            raise DockerApiError(
                f"the Swarm manager did not answer within {limit:.0f} s",
                details={"reason": "timeout"},
            ) from err

    async def _mutate(self, fn: Callable[[], T], what: str) -> T:
        """A mutation, refused at once while the managers lack a quorum (`_probe`), else
        given `mutation_timeout`; a timeout or a deadline the managers hit is probed again, so
        a quorum lost meanwhile is said as such (reason no_quorum), not as a bare timeout.

        A mutation that timed out may still be applied later: the caller looks (by name)
        before trying again."""
        problem = await self._probe()
        if problem is not None:
            raise problem
        try:
            return await self._call(fn, timeout=self.mutation_timeout, what=what)
        except DockerApiError as err:
            timed_out = err.details.get("reason") == "timeout" or "deadline exceeded" in str(
                err.details.get("explanation", "")
            )
            if not timed_out:
                raise
            probe = await self._probe()
            if probe is not None:
                raise probe from err
            raise

    async def _probe(self) -> DockerApiError | None:
        """The no-quorum error when the managers say they have no leader, cannot list the
        nodes within `probe_timeout`, or list half or fewer of the managers as reachable
        (seen on the test cluster: a leader whose two peers died marks them unreachable
        within ~1 s but keeps answering reads for several seconds, and holds every write
        ~14 s before failing it with "node lost leader status"); else None. An engine that
        cannot be reached raises DockerUnavailable."""
        try:
            raw = await self._call(lambda: self._client().nodes(), timeout=self.probe_timeout)
        except DockerApiError as err:
            if err.details.get("reason") == NO_QUORUM:
                return err
            if err.details.get("reason") == "timeout":
                return _no_quorum(f"the node list got no answer within {self.probe_timeout:.0f} s")
            if isinstance(err, DockerUnavailable):
                raise
            return None
        managers = [_node_info(n) for n in raw if (n.get("Spec") or {}).get("Role") == "manager"]
        reachable = sum(m.reachability == "reachable" for m in managers)
        if managers and 2 * reachable <= len(managers):
            return _no_quorum(f"{reachable} of {len(managers)} managers are reachable")
        return None

    async def close(self) -> None:
        """Drop the connection and the threads."""
        if self._api is not None:
            api, self._api = self._api, None
            await asyncio.to_thread(api.close)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False, cancel_futures=True)

    # reads

    async def info(self) -> dict[str, Any]:
        """`docker info` of this engine (Swarm.LocalNodeState, ControlAvailable, Error...)."""
        return await self._call(lambda: dict(self._client().info()))

    async def nodes(self) -> list[NodeInfo]:
        """Every node of the swarm."""
        raw = await self._call(lambda: self._client().nodes())
        return [_node_info(n) for n in raw]

    async def list_flow_services(self, instance: str) -> list[FlowService]:
        """The flow services of manager instance `instance`, each with its tasks (newest
        first, with the node's hostname)."""

        def run() -> list[FlowService]:
            api = self._client()
            services = api.services(
                filters={"label": ["flowmgr.managed=true", f"flowmgr.instance={instance}"]}
            )
            ids = [str(s["ID"]) for s in services]
            raw_tasks: list[dict[str, Any]] = []
            for i in range(0, len(ids), _TASK_CHUNK):
                raw_tasks += api.tasks(filters={"service": ids[i : i + _TASK_CHUNK]})
            hostnames = {
                str(n.get("ID")): str((n.get("Description") or {}).get("Hostname", ""))
                for n in (api.nodes() if raw_tasks else [])
            }
            by_service: dict[str, list[FlowTask]] = {sid: [] for sid in ids}
            for t in raw_tasks:
                task = _task(t, hostnames)
                if task.service_id in by_service:
                    by_service[task.service_id].append(task)
            return [
                _service(s, sorted(by_service[str(s["ID"])], key=_newest_first)) for s in services
            ]

        return await self._call(run)

    async def flow_service(self, service_id: str) -> FlowService:
        """One service and its tasks; ContainerNotFound when it does not exist."""

        def run() -> FlowService:
            api = self._client()
            s = api.inspect_service(service_id)
            raw_tasks = api.tasks(filters={"service": [str(s["ID"])]})
            hostnames = {
                str(n.get("ID")): str((n.get("Description") or {}).get("Hostname", ""))
                for n in (api.nodes() if raw_tasks else [])
            }
            tasks = [_task(t, hostnames) for t in raw_tasks if t.get("ServiceID") == s["ID"]]
            return _service(s, sorted(tasks, key=_newest_first))

        return await self._call(run, what=f"service {service_id[:40]}")

    # mutations

    async def create_flow_service(self, spec: dict[str, Any], *, check_image: bool = True) -> str:
        """Create the service `spec` (from `spec.service_spec`); return its ID. Nothing is
        pulled: with `check_image`, the image must be present on this manager's engine
        (ImageNotFound otherwise; a node that lacks it fails its task with the engine's
        reason, FlowTask.error). A name in use is InvalidRequest(field="name")."""
        task = spec.get("TaskTemplate") or {}
        image = str((task.get("ContainerSpec") or {}).get("Image", ""))
        if check_image:
            await self._call(
                lambda: self._client().inspect_image(image),
                not_found=ImageNotFound,
                what=f"image {image[:200]}",
            )

        def run() -> str:
            api = self._client()
            try:
                created = api.create_service(
                    task,
                    name=spec.get("Name"),
                    labels=spec.get("Labels"),
                    mode=spec.get("Mode"),
                    update_config=spec.get("UpdateConfig"),
                    rollback_config=spec.get("RollbackConfig"),
                    endpoint_spec=spec.get("EndpointSpec"),
                )
            except docker.errors.APIError as err:
                if err.status_code == 409:
                    raise InvalidRequest(
                        f"a flow (service) named {spec.get('Name')!r} already exists",
                        field="name",
                    ) from err
                raise
            return str(created["ID"])

        service_id = await self._mutate(run, what="create")
        logger.info("created flow service %s (%s)", spec.get("Name"), service_id)
        return service_id

    async def scale(self, service_id: str, replicas: int) -> None:
        """Start (1) or stop (0) a flow: its service's replica count."""
        if replicas not in (0, 1):
            raise InvalidRequest("a flow's service has 0 or 1 replicas", field="replicas")

        def change(spec: dict[str, Any]) -> None:
            spec["Mode"] = {"Replicated": {"Replicas": replicas}}

        await self._update(service_id, change, f"scale to {replicas}")
        if replicas == 1:
            await self._ensure_task(service_id)

    async def _ensure_task(self, service_id: str) -> None:
        """After a scale to 1: see that the managers want a task running, nudging them with a
        forced update when they do not. Swarm 20.10 loses a scale-up that arrives while the
        previous task (desired state "remove") is still going away: the service then says 1
        replica and has no task, until its next update (seen on the test cluster)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + self.mutation_timeout + _SETTLE_SECONDS
        nudged = 0
        while True:
            svc = await self.flow_service(service_id)
            if svc.replicas != 1 or any(t.desired_state in ("running", "ready") for t in svc.tasks):
                return
            leaving = any(t.desired_state == "remove" for t in svc.tasks)
            # the orchestrator makes the task a moment after the update (later on a busy
            # host): a nudge before that would replace the task it is about to make
            patient = loop.time() - began < _TASK_GRACE
            if not leaving and not patient and nudged < _NUDGES:
                nudged += 1
                logger.info("service %s has no task after a scale to 1: forced update", service_id)
                await self.force_restart(service_id)
                continue
            if asyncio.get_running_loop().time() >= deadline:
                raise DockerApiError(
                    f"service {service_id} was scaled to 1 but the managers made no task",
                    details={"reason": "no_task", "service_id": service_id},
                )
            await asyncio.sleep(0.2)

    async def force_restart(self, service_id: str) -> None:
        """Restart a flow: a forced update (TaskTemplate.ForceUpdate + 1) replaces its task."""

        def change(spec: dict[str, Any]) -> None:
            task = spec.setdefault("TaskTemplate", {})
            task["ForceUpdate"] = int(task.get("ForceUpdate") or 0) + 1

        await self._update(service_id, change, "restart")

    async def remove(self, service_id: str) -> None:
        """Delete a flow's service (Swarm stops and removes its task containers)."""
        await self._mutate(
            lambda: self._client().remove_service(service_id), what=f"service {service_id[:40]}"
        )

    async def _update(
        self, service_id: str, change: Callable[[dict[str, Any]], None], what: str
    ) -> None:
        def run() -> None:
            api = self._client()
            for attempt in range(_UPDATE_RETRIES):
                current = api.inspect_service(service_id)
                spec = dict(current["Spec"])
                change(spec)
                try:
                    api.update_service(
                        current["ID"],
                        current["Version"]["Index"],
                        task_template=spec.get("TaskTemplate"),
                        name=spec.get("Name"),
                        labels=spec.get("Labels") or {},
                        mode=spec.get("Mode"),
                        update_config=spec.get("UpdateConfig"),
                        rollback_config=spec.get("RollbackConfig"),
                        endpoint_spec=spec.get("EndpointSpec") or {},
                    )
                    return
                except docker.errors.APIError as err:
                    # another writer got the version first: read it again
                    if "out of sequence" not in _explanation(err) or attempt + 1 == _UPDATE_RETRIES:
                        raise

        await self._mutate(run, what=f"service {service_id[:40]} ({what})")
