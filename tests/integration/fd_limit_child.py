"""The headless service under a lowered open-files limit, adopting `flows` fake flows.

Run by tests/integration/test_fd_limit.py in a child process whose RLIMIT_NOFILE was lowered
(soft = hard, so start-up cannot raise it). Each fake flow goes through the real adoption path
(`monitor.apply` -> `container_added`: its socket directory checked, its channel opened from the
descriptor budget) without a container; what was opened and refused is written to `out` as JSON.

    python fd_limit_child.py CONFIG PORT FLOWS OUT
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from server.api.serving import GracefulServer, build_service, uvicorn_config
from server.core.config import load_cli_settings
from server.core.container_info import ContainerInfo
from server.core.manager import ContainerManager
from server.logging_setup import setup_logging


async def adopt_fakes(manager: ContainerManager, flows: int) -> dict[str, object]:
    """Adopt `flows` fake running flows, 50 at a time; which got a channel."""
    settings = manager.settings
    labels = {"flowmgr.managed": "true", "flowmgr.instance": settings.docker.instance}
    at = datetime.now(UTC)

    async def one(n: int) -> tuple[str, str | None]:
        name = f"fdl-{n:04d}"
        path = await asyncio.to_thread(manager.state.make_flow_dir, name)
        cid = uuid.uuid4().hex * 2
        info = ContainerInfo(
            cid, name, "img", "running", "none", at, at, None, 0, False, os.getpid(),
            labels=labels, mounts={settings.docker.socket_mount: path},
        )  # fmt: skip
        rec = await manager.monitor.apply(info)
        return cid, rec.socket_path if manager.hub.info(cid) is not None else None

    got: list[tuple[str, str | None]] = []
    for start in range(0, flows, 50):
        got += await asyncio.gather(*(one(n) for n in range(start, min(start + 50, flows))))
    budget = manager.fd_budget
    return {
        "opened": [[cid, path] for cid, path in got if path is not None],
        "refused": [cid for cid, path in got if path is None],
        "limit": budget.limit,
        "available": budget.available,
        "held": budget.total_held,
    }


async def main(config: str, port: int, flows: int, out: Path) -> None:
    settings = load_cli_settings(config, "127.0.0.1", port)
    setup_logging(settings.log_level)
    service = build_service(settings)
    server = GracefulServer(uvicorn_config(service, settings))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            return
        await asyncio.sleep(0.02)
    report = await adopt_fakes(service.api.state.manager, flows)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report))
    tmp.rename(out)  # whole or absent: the test polls for it
    await serving


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])))
