"""`/health` with the journal component: active, disabled (healthy), unavailable (degraded, 200,
so a liveness probe does not restart the service over a full disk), beside a failing engine."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from server.api.health import router
from server.core.config import Settings

UP = {"container_manager": "active", "socket_handler": "active", "event_handler": "active"}


class Source:
    def __init__(
        self, components: dict[str, str], adoption: tuple[int, int | None] | None = None
    ) -> None:
        self.settings = Settings(socket_dir="/tmp/x")
        self._components = components
        self._adoption = adoption

    def health(self) -> dict[str, str]:
        return self._components

    def health_reason(self) -> str | None:
        return "the engine is away" if self._components["container_manager"] != "active" else None

    def adoption(self) -> tuple[int, int | None] | None:
        return self._adoption


async def get(
    components: dict[str, str], adoption: tuple[int, int | None] | None = None
) -> tuple[int, dict[str, Any]]:
    app = FastAPI()
    app.include_router(router)
    app.state.manager = Source(components, adoption)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        res = await client.get("/health")
    return res.status_code, res.json()


@pytest.mark.parametrize(
    ("journal", "code", "status", "failing"),
    [
        ("active", 200, "healthy", None),
        ("disabled", 200, "healthy", None),
        ("unavailable: database or disk is full", 200, "degraded", ["journal"]),
    ],
)
async def test_journal_states(
    journal: str, code: int, status: str, failing: list[str] | None
) -> None:
    got_code, body = await get({**UP, "journal": journal})
    assert (got_code, body["status"], body.get("failing")) == (code, status, failing)
    assert body["components"]["journal"] == journal


async def test_engine_down_is_still_unhealthy_and_lists_both() -> None:
    code, body = await get({**UP, "container_manager": "unavailable", "journal": "unavailable: x"})
    assert code == 503 and body["status"] == "unhealthy"
    assert body["failing"] == ["container_manager", "journal"]
    assert body["reason"] == "the engine is away"


@pytest.mark.parametrize(
    ("adoption", "progress"),
    [((120, 1000), "adopted 120 of 1000"), ((0, None), "listing the engine's labelled containers")],
)
async def test_adopting_is_503_with_the_progress(
    adoption: tuple[int, int | None], progress: str
) -> None:
    """From the first second (issue 15): the engine's parts say "adopting", not a refusal."""
    down = {"container_manager": "unavailable", "event_handler": "unavailable"}
    code, body = await get({**UP, **down, "journal": "active"}, adoption)
    assert code == 503 and body["status"] == "unhealthy"
    assert body["reason"] == "adopting" and body["progress"] == progress
    assert body["adoption"] == {"adopted": adoption[0], "total": adoption[1]}
    assert body["failing"] == ["container_manager", "event_handler"]
    assert body["components"]["container_manager"] == "adopting"
    assert body["components"]["socket_handler"] == "active"
