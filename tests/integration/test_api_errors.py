"""Bad input at the edge: every bad request gets a typed `error`; nothing crashes or hangs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

import psutil
import pytest
import websockets
from api_harness import BUSYBOX, client, docker_cli, running_service
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from server.core.config import Settings

pytestmark = pytest.mark.docker

ERROR_FIELDS = {"error", "error_type", "message", "details", "timestamp"}
NEEDS_ID = ["start_container", "stop_container", "restart_container", "delete_container",
            "get_container_status", "get_container_logs", "subscribe_logs",
            "unsubscribe_logs", "send_message", "update_container"]


def _check_error(answer: dict[str, Any], error_type: str, operation: str) -> None:
    assert set(answer) - {"request_id"} == ERROR_FIELDS, answer
    assert answer["error"] is True and answer["error_type"] == error_type, answer
    assert answer["details"]["operation"] == operation


@pytest.mark.parametrize(("request_name", "payload", "field"), [
    ("stop_container", {}, "container_id"),
    ("stop_container", {"container_id": 12}, "container_id"),
    ("start_container", {"container_id": None}, "container_id"),
    ("update_container", {"container_id": "x"}, "code_path"),
    ("send_message", {"container_id": "x", "message": "hi"}, "message"),
    ("get_container_logs", {"container_id": "x", "tail": "ten"}, "tail"),
    ("create_container", {"image": "flow:latest"}, "name"),
    ("create_container", {"name": "ok", "environment": {"PORT": 80}}, "environment.PORT"),
    ("create_container", {"name": "ok", "ports": {"80": "8080"}}, "ports.80"),
])
async def test_bad_fields_are_named(settings: Settings, request_name: str,
                                    payload: dict[str, Any], field: str) -> None:
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        ack = await sio.call(request_name, {**payload, "request_id": "bad-1"})
        _check_error(ack, "validation_error", request_name)
        assert ack["details"]["field"] == field and field in ack["message"]
        assert ack["request_id"] == "bad-1"
        assert await rec.wait_for("error", lambda d: d.get("request_id") == "bad-1") == ack


async def test_non_object_unknown_container_and_unknown_event(settings: Settings,
                                                             unique_name: Any) -> None:
    stranger = unique_name("stranger")
    await docker_cli("create", "--name", stranger, "--label",
                     f"flowmgr.test={stranger.split('-')[0]}", BUSYBOX)
    async with running_service(settings) as svc, client(svc.url) as (sio, rec), \
            client(svc.url) as (_, bystander):
        for payload in ([1, 2], "stop", 7, True):
            _check_error(await sio.call("stop_container", payload), "validation_error",
                         "stop_container")
        ack = await sio.call("get_container_status", {"container_id": "no-such-flow",
                                                      "request_id": "r9"})
        _check_error(ack, "container_not_found", "get_container_status")
        assert ack["details"]["container_id"] == "no-such-flow" and ack["request_id"] == "r9"
        # a container that exists but is not ours is invisible
        ack = await sio.call("stop_container", {"container_id": stranger})
        _check_error(ack, "container_not_found", "stop_container")
        await docker_cli("rm", "-f", stranger)
        ack = await sio.call("frobnicate_container", {"x": 1})
        _check_error(ack, "validation_error", "frobnicate_container")
        await sio.emit("another_unknown", {"a": 1})
        await rec.wait_for("error", lambda d: d["details"]["operation"] == "another_unknown")
        # fire-and-forget works too: the error still reaches the requester, and only it
        await sio.emit("stop_container", {})
        await rec.wait_for("error", lambda d: d["details"].get("field") == "container_id")
        assert (await sio.call("list_containers", {}))["count"] == 0
        assert bystander.events["error"] == []


def _malformed() -> st.SearchStrategy[tuple[str, Any]]:
    floats = st.floats(allow_nan=False, allow_infinity=False)
    scalars = st.one_of(st.integers(), floats, st.booleans(), st.text(max_size=20))
    json_values = st.recursive(st.none() | scalars,
                               lambda kids: st.lists(kids, max_size=4)
                               | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                               max_leaves=10)
    not_object = st.one_of(scalars, st.lists(json_values, max_size=4))
    not_string = st.one_of(st.none(), st.integers(), st.booleans(), floats,
                           st.lists(scalars, max_size=3),
                           st.dictionaries(st.text(max_size=5), scalars, max_size=3))
    keys = st.text(max_size=12).filter(lambda k: k not in {"container_id", "request_id",
                                                          "name"})
    missing = st.dictionaries(keys, json_values, max_size=4)
    requests = st.sampled_from(NEEDS_ID)
    return st.one_of(
        st.tuples(st.sampled_from([*NEEDS_ID, "create_container", "list_containers"]),
                  not_object),
        st.tuples(requests, missing),
        st.tuples(requests, st.fixed_dictionaries({"container_id": not_string})),
        st.tuples(st.just("create_container"), missing),
        st.tuples(st.just("create_container"),
                  st.fixed_dictionaries({"name": st.just("ok"),
                                         "environment": st.dictionaries(
                                             st.text(min_size=1, max_size=5), not_string,
                                             min_size=1, max_size=3)})),
    )


def _generate(count: int) -> list[tuple[str, Any]]:
    """`count` malformed requests, drawn by hypothesis (no shrinking: we only want shapes)."""
    found: list[tuple[str, Any]] = []

    @given(_malformed())
    @hsettings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                      HealthCheck.data_too_large])
    def collect(item: tuple[str, Any]) -> None:
        found.append(item)

    while len(found) < count:
        collect()
    return found[:count]


async def test_a_thousand_malformed_requests(settings: Settings) -> None:
    requests = _generate(1000)
    assert len({repr(r) for r in requests}) > 500  # assorted shapes, not one repeated
    process = psutil.Process()
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        async def round_of(batch: list[tuple[str, Any]]) -> None:
            for name, payload in batch:
                ack = await sio.call(name, payload, timeout=10)
                _check_error(ack, "validation_error", name)

        await round_of(requests[:200])  # warm-up: caches, pools, lazy imports
        gc.collect()
        before = process.memory_info().rss
        await round_of(requests)
        await round_of(requests)
        gc.collect()
        grown = process.memory_info().rss - before
        assert grown < 8 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB over 2,000 requests"
        assert (await sio.call("list_containers", {}))["count"] == 0  # still alive


# aiohttp (the client's polling transport) warns about posting 5 MB of raw bytes; that is the
# client's business, the test is about what the server does with it.
@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")
@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_oversized_payload_is_refused_cleanly(settings: Settings, transport: str) -> None:
    big = {"container_id": "x", "message": {"blob": "z" * (5 * 1024 * 1024)}}
    async with running_service(settings) as svc:
        async with client(svc.url, transports=[transport]) as (sio, rec):
            try:
                await sio.emit("send_message", big)
            except Exception:  # a client may also fail the send itself; both are clean refusals
                pass
            async with asyncio.timeout(20):
                await rec.disconnected.wait()
            assert rec.events["message_sent"] == []
        async with client(svc.url) as (sio, _):  # the server is fine
            assert (await sio.call("list_containers", {}))["count"] == 0


async def test_hand_made_packets_do_not_hurt_the_server(settings: Settings) -> None:
    # Broken Socket.IO content inside valid Engine.IO message packets: the connection lives on.
    socketio_garbage = ['42[5,{"a":1}]', '42[["x"],{}]', "42[]", "42{", '42"text"',
                        "42[null]", '421["list_containers"]', '42["stop_container",1,2]']
    # Broken Engine.IO packets: python-engineio may drop that one connection.
    engineio_garbage = ["9zz", "4" + "[" * 5000]
    async with running_service(settings) as svc:
        url = svc.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        async with websockets.connect(url) as ws:
            await ws.recv()  # engine.io open
            await ws.send("40")
            assert (await ws.recv()).startswith("40")
            for frame in socketio_garbage:
                await ws.send(frame)
            await ws.send('422["list_containers",{}]')
            async with asyncio.timeout(20):
                while not (reply := await ws.recv()).startswith("432"):
                    pass
            assert '"count": 0' in reply or '"count":0' in reply
        for frame in engineio_garbage:
            async with websockets.connect(url) as ws:
                await ws.recv()
                await ws.send(frame)
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send("40")
        async with client(svc.url) as (sio, _):
            assert (await sio.call("list_containers", {}))["count"] == 0
