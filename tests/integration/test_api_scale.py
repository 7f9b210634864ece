"""The API at a thousand flows' worth (fake flows in a manager that is not started, a real
uvicorn on 127.0.0.1, real Socket.IO clients): `list_containers` encoded once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import to_json

from server.api import sio_namespace
from server.api.app import create_app
from server.api.serving import GracefulServer, uvicorn_config
from server.api.sio_namespace import Encoded, UndecodableAsEvent
from server.core.manager import ContainerManager
from server.wire.answers import ContainerListOut
from tests.fake_flows import fake_manager
from tests.integration.api_harness import client, with_test_token

FLOWS = 1000


@contextlib.asynccontextmanager
async def serving(manager: ContainerManager) -> AsyncIterator[str]:
    """The service's app over `manager` (not started: no engine) on a free port; its URL."""
    settings = with_test_token(manager.settings)
    server = GracefulServer(
        uvicorn_config(create_app(manager, settings), settings, host="127.0.0.1", port=0)
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    async with serving(fake_manager(tmp_path, FLOWS)) as served:
        yield served


def test_an_encoded_answer_splices_into_the_event_and_the_ack() -> None:
    answer = {"containers": [{"id": "a", "name": "b"}], "count": 1, "s": "\ud800"}
    enc = Encoded(answer)
    assert enc == answer  # still the dict in-process callers read
    for data in (["container_list", answer], [answer], ["x", 1, answer]):
        spliced = [enc if item is answer else item for item in data]
        assert UndecodableAsEvent.dumps(spliced) == UndecodableAsEvent.dumps(data)
    assert json.loads(UndecodableAsEvent.dumps([enc]))[0]["s"] == "\ud800"  # escaped, not lost


async def test_list_containers_is_encoded_once_for_the_event_and_the_ack(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[int] = []

    def counting(value: Any) -> bytes:
        text = to_json(value)
        if b'"containers"' in text:
            encoded.append(len(text))
        return text

    monkeypatch.setattr(sio_namespace, "to_json", counting)
    async with client(url) as (sio, rec):
        ack = await sio.call("list_containers", {"request_id": "r1"}, timeout=20)
        event = await rec.wait_for("container_list", lambda d: d.get("request_id") == "r1")
    assert ack == event  # the ack and the documented event: one text
    assert ack["count"] == FLOWS and len(ack["containers"]) == FLOWS
    ContainerListOut.decode(ack)
    assert len(encoded) == 1, encoded  # not once for the event and again for the ack
