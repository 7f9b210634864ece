"""`GET /health`: the truth about the core, read from memory (no Docker call per request)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from server.core.config import Settings
from server.core.monitor import adoption_text

__all__ = ["router", "HealthSource"]

router = APIRouter()

DEGRADING = frozenset({"journal", "messaging"})
"""Components whose failure leaves the service working (status "degraded", HTTP 200): without
its broker the service still answers on Socket.IO."""


class HealthSource(Protocol):
    """What /health reads: the manager's settings and its last-seen component states."""

    settings: Settings

    def health(self) -> dict[str, str]:
        """Component -> "active" or why not."""
        ...

    def health_reason(self) -> str | None:
        """Why the engine is not in use, with the fix (None when it is)."""
        ...

    def adoption(self) -> tuple[int, int | None] | None:
        """(adopted, listed) while the first adoption runs; None once done."""
        ...


def _manager(request: Request) -> HealthSource:
    return request.app.state.manager  # type: ignore[no-any-return]


ManagerDep = Annotated[HealthSource, Depends(_manager)]


@router.get("/health", summary="Service health (503 while a component is down)")
async def health(manager: ManagerDep, request: Request) -> JSONResponse:
    """docs/PROTOCOL.md's health document; 503 naming the component that is not active."""
    components = dict(manager.health())
    messaging = getattr(request.app.state, "messaging", None)
    if messaging is not None:  # ext: MESSAGING_BACKEND=rabbitmq
        components["messaging"] = messaging.health()
    adoption = manager.adoption()
    if adoption is not None:  # listening from the first second: the engine's parts not yet
        for name in ("container_manager", "event_handler"):
            if components.get(name) != "active":
                components[name] = "adopting"
    # a journal turned off (journal.enabled false) is a choice, not a failure
    failing = sorted(k for k, v in components.items() if v not in ("active", "disabled"))
    # the service still works without its journal (pushes without seq): "degraded" and 200, so
    # a liveness probe does not restart it in a loop over a full disk a restart cannot fix
    healthy = adoption is None and not any(k not in DEGRADING for k in failing)
    body: dict[str, Any] = {
        "status": "unhealthy" if not healthy else "degraded" if failing else "healthy",
        "service": "flow-manager",
        "socket_dir": manager.settings.socket_dir,
        "components": components,
    }
    if failing:
        body["failing"] = failing
    if adoption is not None:
        adopted, listed = adoption
        body["reason"] = "adopting"
        body["progress"] = adoption_text(adopted, listed)
        body["adoption"] = {"adopted": adopted, "total": listed}
    elif not healthy:
        reason = manager.health_reason()
        if reason:
            body["reason"] = reason
    return JSONResponse(body, status_code=200 if healthy else 503)
