"""Hostile commands over RabbitMQ: every one gets a typed error, none crashes or stalls the
consumer, none forges the manager's labels; a command a manager keeps dying on is
dead-lettered by the broker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import pytest
from pydantic import ValidationError

from server.core.config import Settings
from server.messaging.operations import OPERATIONS
from server.messaging.topology import Topology
from tests.integration.api_harness import BUSYBOX, docker_cli, running_service
from tests.integration.rabbit_harness import Platform, broker_url, platform, with_messaging

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The interface on, with queues of its own and a small body limit."""
    return with_messaging(settings, max_body_bytes=4096)


def _typed(answer: dict[str, Any], error_type: str = "validation_error") -> dict[str, Any]:
    assert answer.get("error") is True, answer
    assert answer["error_type"] == error_type, answer
    assert set(answer) == {"error", "error_type", "message", "details", "timestamp"}
    return answer


async def _raw(p: Platform, body: bytes, cid: str) -> dict[str, Any]:
    await p.send_raw(body, correlation_id=cid, reply_to=p.reply_queue)
    return await p.answer(cid)


BAD_BODIES: dict[str, bytes] = {
    "not-json": b"\xff\xfenot json at all",
    "truncated": b'{"action": "list_containers", "data": {',
    "array": b'[{"action": "list_containers", "data": {}}]',
    "string": b'"list_containers"',
    "deep": b"[" * 100_000 + b"]" * 100_000,  # over the body limit too
    "nested-deep": b'{"action":"list_containers","data":' + b"[" * 2000 + b"]" * 2000 + b"}",
    "unknown-action": b'{"action": "rm_rf", "data": {}}',
    "action-number": b'{"action": 5, "data": {}}',
    "missing-data": b'{"action": "get_status"}',
    "data-list": b'{"action": "get_status", "data": ["x"]}',
    "data-null": b'{"action": "list_containers", "data": null}',
    "id-number": b'{"action": "get_status", "data": {"container_id": 5}}',
    "id-empty": b'{"action": "stop_container", "data": {"container_id": ""}}',
    "name-number": b'{"action": "create_container", "data": {"name": 5}}',
    "command-string": b'{"action": "create_container", "data": {"name": "ab", "command": "id"}}',
    "labels-list": b'{"action": "create_container", "data": {"name": "ab", "labels": ["a"]}}',
    "label-int": b'{"action": "create_container", "data": {"name": "ab", "labels": {"a": 1}}}',
    "message-string": b'{"action": "send_message", "data": {"container_id": "x", "message": "hi"}}',
    "huge": json.dumps({"action": "list_containers", "data": {"pad": "x" * 10_000}}).encode(),
    "reply-to-number": b'{"action": "list_containers", "data": {}, "reply_to": 7}',
}


async def test_every_bad_body_gets_a_typed_error_and_the_consumer_goes_on(
    settings: Settings,
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        for label, body in BAD_BODIES.items():
            answer = _typed(await _raw(p, body, f"bad-{label}"))
            assert len(json.dumps(answer)) < 8192, label  # a huge body is not echoed back
        good = await p.call("list_containers", {})
        assert good["ok"] is True
        assert svc.app.api.state.messaging.state == "active"


async def test_a_flood_of_bad_commands_is_answered_and_good_ones_still_pass(
    settings: Settings,
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        cids = [f"flood-{i}" for i in range(300)]
        for cid in cids:
            await p.send_raw(b"{nope", correlation_id=cid, reply_to=p.reply_queue)
        good = await p.send("list_containers", {})
        await p.wait(lambda: all(p.answers.get(c) for c in cids) and p.answers.get(good))
        assert all(p.answers[c][0]["error_type"] == "validation_error" for c in cids)
        assert p.answers[good][0]["ok"] is True


async def test_a_reply_to_that_does_not_exist_is_answered_on_the_response_queue(
    settings: Settings,
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        await p.send_raw(
            json.dumps({"action": "list_containers", "data": {}}).encode(),
            correlation_id="lost-1",
            reply_to="no-such-queue-anywhere",
        )
        cid, answer = await p.wait(lambda: next(iter(p.default_answers), None))
        assert cid == "lost-1"
        assert "no-such-queue-anywhere" in _typed(answer)["message"]
        # in the body instead of the properties: the same
        body = {"action": "list_containers", "data": {}, "reply_to": "nor-this-one"}
        await p.send_raw(json.dumps(body).encode(), correlation_id="lost-2")
        await p.wait(lambda: len(p.default_answers) == 2)
        assert p.default_answers[1][0] == "lost-2"
        # a command queue as reply_to: refused (an answer never comes back as a command)
        await p.send_raw(
            json.dumps({"action": "list_containers", "data": {}}).encode(),
            correlation_id="loop-1",
            reply_to=settings.messaging.command_queue,
        )
        await p.wait(lambda: len(p.default_answers) == 3)
        assert p.default_answers[2][0] == "loop-1"
        assert "command queue" in _typed(p.default_answers[2][1])["message"]
        # the body's reply_to and correlation_id when the properties have none
        body = {"action": "list_containers", "data": {}, "reply_to": p.reply_queue}
        await p.send_raw(json.dumps({**body, "correlation_id": "in-body"}).encode())
        assert (await p.answer("in-body"))["ok"] is True


FORGED: list[dict[str, str]] = [
    {"flowmgr.instance": "someone-else"},
    {"flowmgr.managed": "false"},
    {"FLOWMGR.instance": "case"},
    {"flowmgr.correlation_id": "steal"},
    {"flowmgr.ports": '{"80": 1}'},
    {".flowmgr.instance": "dot"},
    {"com.docker.x": "ok", "flowmgr.": "empty"},
]


async def test_user_labels_never_forge_or_override_the_managers(
    settings: Settings, unique_name: Any
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        for labels in FORGED:
            name = unique_name("forge")
            answer = await p.call(
                "create_container", {"name": name, "image": BUSYBOX, "labels": labels}
            )
            assert _typed(answer)["details"]["field"] == "labels", labels
            assert not await docker_cli("ps", "-aq", "--filter", f"name=^{name}$")
        # flow ids are values, never keys: one holding a label-ish text stays a value
        name = unique_name("meta")
        made = await p.call(
            "create_container",
            {
                "name": name,
                "image": BUSYBOX,
                "labels": {"owner": "x"},
                "flow_id": "flowmgr.instance=evil",
            },
        )
        assert made["ok"] is True, made
        raw = await docker_cli("inspect", "-f", "{{json .Config.Labels}}", name)
        labels = json.loads(raw)
        assert labels["flowmgr.instance"] == settings.docker.instance
        assert labels["flowmgr.managed"] == "true"
        assert labels["flowmgr.flow_id"] == "flowmgr.instance=evil"
        assert labels["owner"] == "x"


async def test_a_command_delivered_too_often_is_dead_lettered(settings: Settings) -> None:
    """A manager dying on a command puts it back each time; past `delivery_limit` the broker
    moves it to `<command_queue>.dead` (played here by a consumer that gives it back)."""
    cfg = settings.messaging
    conn = await aio_pika.connect(broker_url, timeout=10)
    try:
        ch = await conn.channel()
        topology = Topology(cfg, settings.docker.instance)
        await topology.declare(ch, ch)
        await ch.default_exchange.publish(
            aio_pika.Message(b'{"action":"list_containers","data":{}}', message_id="poison"),
            routing_key=cfg.command_queue,
        )
        shared = await ch.get_queue(cfg.command_queue)
        returned = 0
        async with asyncio.timeout(30):
            while (msg := await shared.get(fail=False)) is not None or returned == 0:
                if msg is None:
                    await asyncio.sleep(0.05)
                    continue
                returned += 1
                await msg.nack(requeue=True)
        assert returned == cfg.delivery_limit + 1
        dead = await ch.get_queue(topology.dead_name)
        async with asyncio.timeout(10):
            while (got := await dead.get(fail=False)) is None:
                await asyncio.sleep(0.05)
        assert got.message_id == "poison"
        await got.ack()
    finally:
        ch = await conn.channel()
        for name in (cfg.command_queue, f"{cfg.command_queue}.dead", cfg.response_queue):
            await ch.queue_delete(name)
        await ch.queue_delete(f"{cfg.command_queue}.{settings.docker.instance}")
        for name in (f"{cfg.command_queue}.route", cfg.event_exchange):
            await ch.exchange_delete(name)
        await conn.close()


async def test_an_error_answer_masks_secrets_from_the_command(
    settings: Settings, unique_name: Any
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        answer = await p.call(
            "create_container",
            {"name": "x", "image": BUSYBOX, "environment": {"DB_PASSWORD": "hunter2-secret"}},
        )
        assert _typed(answer)["details"]["data"]["environment"]["DB_PASSWORD"] != "hunter2-secret"
        assert "hunter2-secret" not in json.dumps(answer)


async def test_an_unreachable_broker_is_unavailable_and_its_password_never_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    away = with_messaging(settings, rabbitmq_url="amqp://flowmgr:s3cret-pw@127.0.0.1:1/")
    async with running_service(away) as svc:
        messaging = svc.app.api.state.messaging
        async with asyncio.timeout(30):
            while messaging.state != "unavailable":
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # a retry or two (backoff)
    assert "RabbitMQ unreachable" in caplog.text
    assert "s3cret-pw" not in caplog.text


async def test_with_no_queue_to_answer_on_the_command_is_dead_lettered(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        await p.channel.queue_delete(settings.messaging.response_queue)  # no answer can go out
        await p.send_raw(b"{not json", correlation_id="orphan-1")
        dead = await p.channel.get_queue(f"{settings.messaging.command_queue}.dead")
        async with asyncio.timeout(30):
            while (got := await dead.get(fail=False)) is None:
                await asyncio.sleep(0.05)
        assert got.correlation_id == "orphan-1" and got.body == b"{not json"
        await got.ack()
        assert "dead-lettered" in caplog.text
        assert (await p.call("list_containers", {}))["ok"] is True  # the consumer goes on


WRONG: list[Any] = [None, 5, 1.5, True, "x", [], ["x"], {}, {"k": 1}]
"""A value of every JSON type, for every field of every action."""


async def test_every_field_of_every_action_mistyped_is_a_typed_error(settings: Settings) -> None:
    """No create can succeed (its name is always invalid or mistyped); the others name no
    container that exists: every answer is an error of the taxonomy, and a value the action's
    model refuses is a validation_error naming its field."""
    base = {"container_id": "nobody-here", "name": "!", "message": {}, "code_path": "/nowhere"}
    sent: dict[str, tuple[str, bool]] = {}
    async with platform(settings) as p, running_service(settings) as svc:
        await p.until_consuming(svc)
        for action, op in OPERATIONS.items():
            fields = [f for f in op.request.model_fields if f != "request_id"]
            for field in fields:
                for i, value in enumerate(WRONG):
                    data = {k: v for k, v in base.items() if k in fields} | {field: value}
                    try:
                        op.request.model_validate(data)
                        refused = False
                    except ValidationError:
                        refused = True
                    sent[await p.send(action, data, cid=f"{action}-{field}-{i}")] = (field, refused)
        await p.wait(lambda: all(p.answers.get(c) for c in sent))
        for cid, (field, refused) in sent.items():
            answer = _typed(p.answers[cid][0], p.answers[cid][0].get("error_type", "?"))
            if refused:
                assert answer["error_type"] == "validation_error", (cid, answer)
                assert answer["details"].get("field", "").split(".")[0] == field, (cid, answer)
        assert (await p.call("list_containers", {}))["ok"] is True
