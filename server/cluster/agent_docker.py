"""The agent's engine: the core's DockerAdapter on the node's socket, plus the raw reads the
agent needs beyond the core's: `docker info` and the node list (the fence's question: does
this node still reach the managers?), a container's and a volume's raw inspect (the socket
volume's check), the socket volumes (to forget those of flows gone), and the swap limit a
service spec cannot set (agent_guard). One client, one pool, every call bounded by a timeout,
errors in the core's taxonomy."""

from __future__ import annotations

from typing import Any

from server.core.docker_adapter import DockerAdapter
from server.core.errors import ContainerNotFound, DockerApiError, FlowMgrError

__all__ = ["AgentAdapter"]


class AgentAdapter(DockerAdapter):
    """DockerAdapter with the agent's raw reads."""

    async def info(self, timeout: float | None = None) -> dict[str, Any]:
        """`docker info`."""
        return dict(await self._call(lambda: self._client().info(), timeout=timeout))

    async def nodes(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """`docker node ls` (a manager's; a worker's engine refuses it: DockerApiError)."""
        return list(await self._call(lambda: self._client().nodes(), timeout=timeout))

    async def inspect_raw(self, container_id: str) -> dict[str, Any]:
        """A container's raw inspect (ContainerNotFound when there is none)."""
        return dict(await self._call(lambda: self._client().inspect_container(container_id)))

    async def inspect_volume(self, name: str) -> dict[str, Any]:
        """A volume's raw inspect (ContainerNotFound when there is none)."""
        return dict(await self._call(lambda: self._client().inspect_volume(name)))

    async def limit_swap(self, container_id: str, memory: int) -> None:
        """`docker update --memory M --memory-swap M`: no swap beyond the memory limit."""
        await self._call(
            lambda: self._client().update_container(
                container_id, mem_limit=memory, memswap_limit=memory
            )
        )

    async def volumes(self, labels: list[str]) -> list[dict[str, Any]]:
        """The volumes carrying every label of `labels` ("key=value")."""
        found = await self._call(lambda: self._client().volumes(filters={"label": labels}))
        return list((found or {}).get("Volumes") or [])

    async def remove_unused_volume(self, name: str) -> bool:
        """Remove a volume unless a container uses it; False when in use or gone."""
        try:
            await self._call(lambda: self._client().remove_volume(name))
        except ContainerNotFound:
            return False
        except DockerApiError as err:
            if "in use" in err.message or err.details.get("status") == 409:
                return False
            raise
        return True

    async def answers(self) -> bool:
        """Whether the engine answers a ping now."""
        try:
            await self.ping()
        except FlowMgrError:
            return False
        return True
