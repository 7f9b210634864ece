"""ext token auth and CORS origins, enforced on real connections."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import socketio
from api_harness import client, running_service

from server.core.config import Settings

pytestmark = pytest.mark.docker


def _with_server(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"server": settings.server.model_copy(update=changes)})


@pytest.mark.parametrize("auth", [None, {}, {"token": "wrong"}, {"token": 7}, "s3cret-token"])
async def test_a_client_without_the_token_is_refused(settings: Settings, auth: Any) -> None:
    async with running_service(_with_server(settings, token="s3cret-token")) as svc:
        with pytest.raises(socketio.exceptions.ConnectionError):
            async with client(svc.url, auth=auth):
                pass
        async with client(svc.url, auth={"token": "s3cret-token"}) as (sio, rec):
            assert (await rec.wait_for("connected"))["message"]
            assert (await sio.call("list_containers", {}))["count"] == 0


async def test_no_token_configured_means_the_generated_one(settings: Settings) -> None:
    """Not open any more (issue 11): the service makes a token in its token file."""
    from server.api.app import create_app
    from server.core.manager import ContainerManager
    from server.core.token_file import read_client_token

    app = create_app(ContainerManager(settings), settings)  # no token in settings
    token = read_client_token(settings.token_path)
    assert token and app.api.state.settings.server.token == token


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_restricted_cors_refuses_a_disallowed_origin(
    settings: Settings, transport: str
) -> None:
    good = "http://panel.example:3000"
    async with running_service(_with_server(settings, cors_origins=[good])) as svc:
        with pytest.raises(socketio.exceptions.ConnectionError):
            async with client(
                svc.url, headers={"Origin": "http://evil.example"}, transports=[transport]
            ):
                pass
        async with client(svc.url, headers={"Origin": good}, transports=[transport]) as (_, r):
            await r.wait_for("connected")
        async with httpx.AsyncClient() as http:
            evil = await http.get(f"{svc.url}/health", headers={"Origin": "http://evil.example"})
            assert "access-control-allow-origin" not in evil.headers
            ok = await http.get(f"{svc.url}/health", headers={"Origin": good})
            assert ok.headers["access-control-allow-origin"] == good
