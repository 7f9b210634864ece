"""create_app: FastAPI (with the lifespan) wrapped by python-socketio's ASGIApp."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import socketio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from server import __version__
from server.api.auth import bearer_matches, engineio_origins
from server.api.health import router as health_router
from server.api.sio_bridge import SioBridge
from server.api.sio_manager import DirectEmitManager
from server.api.sio_namespace import FlowNamespace, UndecodableAsEvent
from server.core.config import Settings
from server.core.monitor import adoption_text
from server.core.token_file import with_api_token
from server.wire.journal_encoding import encode_event

if TYPE_CHECKING:
    from server.core.manager import ContainerManager

__all__ = ["create_app", "FlowMgrASGIApp"]

logger = logging.getLogger(__name__)

ADOPT_WAIT_AT_START = 1.0
"""Seconds the lifespan waits for the first adoption before the port listens (a few flows are
adopted by then, so /health is 200 at once; a thousand are adopted with the port open)."""


class FlowMgrASGIApp(socketio.ASGIApp):  # type: ignore[misc]
    """The ASGI app uvicorn serves; keeps handles on its parts for shutdown and tests."""

    def __init__(self, sio: socketio.AsyncServer, api: FastAPI, bridge: SioBridge) -> None:
        # No on_startup/on_shutdown here: passing either would make this wrapper answer the
        # lifespan itself and FastAPI's lifespan would never run.
        super().__init__(sio, other_asgi_app=api)
        self.sio = sio
        self.api = api
        self.bridge = bridge

    async def disconnect_clients(self, timeout: float = 2.0) -> int:
        """Say goodbye to every Socket.IO client (a server disconnect, so they do not retry)."""
        sids = [sid for sid, _ in self.sio.manager.get_participants("/", None)]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(
                    *(self.sio.disconnect(sid) for sid in sids), return_exceptions=True
                )
        except TimeoutError:
            logger.warning("not every client acknowledged the shutdown within %.1f s", timeout)
        return len(sids)


class JsonPacket(socketio.packet.Packet):  # type: ignore[misc]
    """Socket.IO packet that skips the search for binary attachments in outgoing data.

    Everything this server emits is built of JSON types (schemas.py's `payload()` builders,
    JSON decoded messages, error details made JSON-safe in errors.py), so the recursive walk
    python-socketio does on every emit would only ever find nothing.
    """

    json = UndecodableAsEvent

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        """Never: see the class docstring."""
        return False


def create_app(
    manager: ContainerManager, settings: Settings, *, manage_lifecycle: bool = False
) -> FlowMgrASGIApp:
    """The service's ASGI app; with `manage_lifecycle` its lifespan also starts/stops `manager`.

    A token is always required: with none configured, the token file's (see token_file.py;
    reading it blocks, so callers on a running loop resolve it first with `with_api_token`).
    """
    if not settings.server.token:
        settings = with_api_token(settings)
    token = settings.server.token or ""
    origins = settings.server.cors_origins
    sio = socketio.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=engineio_origins(origins),
        max_http_buffer_size=settings.server.max_message_bytes,
        logger=False,
        engineio_logger=False,
        serializer=JsonPacket,
        client_manager=DirectEmitManager(max(64 * 2**20, 16 * settings.flow.max_frame_bytes)),
    )
    # The journal stores (and the bridge sends) each event as this front end encodes it.
    manager.journal.use_encoder(encode_event)
    bridge = SioBridge(sio, manager)
    namespace = FlowNamespace(manager, bridge, token=token, server_id=uuid.uuid4().hex[:12])
    sio.register_namespace(namespace)
    messaging = None
    if settings.messaging.backend == "rabbitmq":  # the second front door, beside Socket.IO
        from server.messaging import RabbitInterface

        messaging = RabbitInterface(manager, settings)
    register_more = getattr(manager, "register_namespaces", None)
    if register_more is not None:  # the cluster hub's agents connect to `/agent`
        register_more(sio)

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            # listen while a thousand flows are adopted: /health says "adopting" meanwhile and
            # requests wait for the adoption (bounded), instead of the port refusing connections
            await manager.start(adopt_wait=ADOPT_WAIT_AT_START)
        await bridge.start()
        if messaging is not None:  # connects in the background: never holds up the start
            await messaging.start()
        api.state.started = True
        adoption = manager.adoption()
        logger.info(
            "flow manager API ready (%d managed containers%s)",
            len(manager.snapshot()),
            "" if adoption is None else f"; {adoption_text(*adoption)}, adopting the rest",
        )
        try:
            yield
        finally:
            if messaging is not None:
                await messaging.stop()
            await namespace.shells.stop()  # no exec outlives the service
            await bridge.stop()
            if manage_lifecycle:
                await manager.stop()
            api.state.started = False

    # No /docs or /redoc (a browser page cannot send the token with the requests they make);
    # the OpenAPI document is served to token holders only, by the route below.
    api = FastAPI(
        title="Flow Manager",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    api.state.manager = manager
    api.state.settings = settings
    api.state.messaging = messaging
    api.state.started = False
    # [] = no CORS headers at all: browsers then allow the service's own origin only.
    api.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if "*" in origins else list(origins),
        allow_methods=["*"],
        allow_headers=["*"],
    )
    api.include_router(health_router)
    expected = token.encode("utf-8")

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        if not bearer_matches(request.headers.get("authorization"), expected):
            return JSONResponse(
                {"detail": "send Authorization: Bearer <the API token>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return JSONResponse(api.openapi())

    return FlowMgrASGIApp(sio, api, bridge)
