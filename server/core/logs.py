"""LogFollowers: one shared, refcounted log stream per followed container."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from server.core.bus import EventBus
from server.core.container_info import StreamHandle, to_loop
from server.core.docker_adapter import DockerAdapter
from server.core.events import LogLineReceived
from server.core.fd_budget import FdBudget
from server.core.masking import mask_log_line

__all__ = ["LogFollowers"]

logger = logging.getLogger(__name__)


class LogFollowers:
    """Streams run only while someone follows; lines arrive on the bus as LogLineReceived,
    secrets masked."""

    def __init__(
        self,
        adapter: DockerAdapter,
        bus: EventBus,
        is_running: Callable[[str], bool],
        secret_values: Callable[[str], tuple[str, ...]],
        budget: FdBudget | None = None,
    ) -> None:
        self._adapter = adapter
        self._budget = budget or FdBudget()
        """Each open stream holds a connection to the engine: one descriptor, under "logs:<id>"."""
        self._bus = bus
        self._is_running = is_running
        self._secret_values = secret_values
        self._refs: dict[str, int] = {}
        self._handles: dict[str, StreamHandle] = {}
        self._opened: dict[str, float] = {}

    def follow(self, container_id: str) -> None:
        """Add one follower; the first one opens the stream (when the container runs).
        DescriptorBudgetExhausted when a new stream would eat into the descriptor reserve."""
        if container_id not in self._refs and not self._budget.available:
            raise self._budget.refusal(f"the log stream of {container_id[:12]}", 1)
        self._refs[container_id] = self._refs.get(container_id, 0) + 1
        self.container_started(container_id)

    def unfollow(self, container_id: str) -> None:
        """Drop one follower; the last one closes the stream."""
        left = self._refs.get(container_id, 0) - 1
        if left > 0:
            self._refs[container_id] = left
            return
        self._refs.pop(container_id, None)
        handle = self._handles.pop(container_id, None)
        if handle is not None:
            handle.close()
            self._budget.release(f"logs:{container_id}")

    def followed(self, container_id: str) -> bool:
        """True while someone follows this container."""
        return container_id in self._refs

    def container_started(self, container_id: str) -> None:
        """(Re)open the stream of a followed container that runs and has none."""
        if container_id not in self._refs or container_id in self._handles:
            return
        if not self._is_running(container_id):
            return
        if not self._budget.try_take(f"logs:{container_id}", 1):
            logger.warning("log stream of %s not reopened: no descriptors left", container_id[:12])
            return
        loop = asyncio.get_running_loop()
        bus = self._bus
        # env is fixed at create; every start reopens the stream, so this stays current
        secrets = self._secret_values(container_id)

        def on_line(line: str) -> None:
            # masked here, in the stream's thread: the loop never pays for it
            to_loop(
                loop,
                bus.publish,
                LogLineReceived(container_id=container_id, line=mask_log_line(line, secrets)),
            )

        def on_end(err: BaseException | None) -> None:
            if err is not None:
                logger.info("log stream of %s ended: %s", container_id[:12], err)
            to_loop(loop, self._ended_handle, (container_id, handle))

        handle = self._adapter.stream_logs(container_id, on_line, on_end)
        self._handles[container_id] = handle
        self._opened[container_id] = time.monotonic()

    def _ended_handle(self, item: tuple[str, StreamHandle]) -> None:
        self._ended(*item)

    def _ended(self, container_id: str, handle: StreamHandle) -> None:
        if self._handles.get(container_id) is handle:
            del self._handles[container_id]
            self._budget.release(f"logs:{container_id}")
            # a restart can end the old stream after the new start was seen; a stream that
            # ended at once belongs to a stopped container, which the start hook reopens
            if time.monotonic() - self._opened.get(container_id, 0.0) > 1.0:
                self.container_started(container_id)

    def forget(self, container_id: str) -> None:
        """The container is gone: close its stream and drop its followers."""
        self._refs.pop(container_id, None)
        handle = self._handles.pop(container_id, None)
        if handle is not None:
            handle.close()
            self._budget.release(f"logs:{container_id}")

    def close(self) -> None:
        """Close every stream."""
        for cid in list(self._refs):
            self.forget(cid)
