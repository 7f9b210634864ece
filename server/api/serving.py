"""Running the app under uvicorn: one config for every start mode, and a graceful shutdown."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import uvicorn

from server.api.app import FlowMgrASGIApp, create_app
from server.api.connection_limit import bound_connections
from server.api.ws_transport import CoalescingWebSocketProtocol
from server.core.config import Settings
from server.core.fd_budget import raise_soft_limit
from server.core.manager import ContainerManager
from server.core.priority import apply_priority
from server.core.token_file import with_api_token
from server.wire.journal_encoding import encode_event

__all__ = ["build_service", "uvicorn_config", "GracefulServer", "log_startup_warnings"]

logger = logging.getLogger(__name__)

SHUTDOWN_BUDGET = 5.0
"""Seconds from SIGTERM to exit, as the issue promises."""


def build_service(settings: Settings, *, hub: bool = False) -> FlowMgrASGIApp:
    """The service for `settings`, owning its manager's lifecycle (started in the lifespan).

    Called before any thread starts, so the CPU priority it asks for covers them all; raises
    ConfigError when the API token file is unsafe (see token_file.py).
    """
    settings = with_api_token(settings)
    apply_priority(settings.server.nice)
    raise_soft_limit()  # each flow holds descriptors: its socket, connection, sample files
    if hub:  # cluster mode: the same API over Docker Swarm and the nodes' agents
        from server.cluster.hub import HubManager

        manager: ContainerManager = HubManager(settings, journal_encoder=encode_event)
    else:
        manager = ContainerManager(settings, journal_encoder=encode_event)
    return create_app(manager, settings, manage_lifecycle=True)


def uvicorn_config(
    app: FlowMgrASGIApp, settings: Settings, *, host: str | None = None, port: int | None = None
) -> uvicorn.Config:
    """The uvicorn config: logging left to us, websocket frames capped like Socket.IO's."""
    config = uvicorn.Config(
        app,
        host=settings.server.host if host is None else host,
        port=settings.server.port if port is None else port,
        log_config=None,
        log_level=settings.log_level.lower(),
        lifespan="on",
        # Refuse an oversized websocket frame in the protocol layer, before it is buffered.
        ws_max_size=settings.server.max_message_bytes + 4096,
        ws=CoalescingWebSocketProtocol,
        # Frames are small JSON; compressing each costs more CPU than the bytes it saves locally.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
    )
    bound_connections(config, settings)  # clients cannot take the flows' descriptors
    return config


class GracefulServer(uvicorn.Server):
    """uvicorn.Server that says goodbye to Socket.IO clients before closing connections."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask for a graceful exit; unlike uvicorn's, not re-raised afterwards,
        so a clean stop exits with status 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        wanted = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in wanted}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        """Stop accepting, disconnect clients, then let uvicorn close the rest."""
        for server in self.servers:
            server.close()
        app = self.config.loaded_app
        while app is not None and not isinstance(app, FlowMgrASGIApp):
            app = getattr(app, "app", None)  # uvicorn wraps the app in its middlewares
        if app is not None:
            count = await app.disconnect_clients(timeout=1.0)
            logger.info("disconnected %d Socket.IO client(s)", count)
        await super().shutdown(sockets)  # type: ignore[arg-type]


def log_startup_warnings(settings: Settings) -> None:
    """Say what is open: CORS `*` (the token is always required; `with_api_token` says where
    it comes from)."""
    if "*" in settings.server.cors_origins:
        logger.warning(
            "CORS allows any origin (cors_origins=['*']); set CORS_ORIGINS to the "
            "web front ends that may connect"
        )
