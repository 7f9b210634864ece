"""Secrets never leave in clear: activity events, error details, crash reports, service logs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from server.core.config import Settings
from server.core.frames import encode_frame
from server.core.models import CreateSpec
from server.logging_setup import JsonLineFormatter
from tests.integration.api_harness import BUSYBOX, client, running_service

pytestmark = pytest.mark.docker

SECRETS = [f"s3cr3t-{i}-{'x' * 6}" for i in range(10)]


def _leaks(value: Any) -> list[str]:
    text = repr(value)
    return [s for s in SECRETS if s in text]


async def test_secrets_masked_on_every_path(
    settings: Settings, unique_name: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.setFormatter(JsonLineFormatter())  # what reaches stdout
    s = SECRETS
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        # 1. a create with secret environment values: activity details masked
        name = unique_name("sec")
        created = await sio.call(
            "create_container",
            {
                "name": name,
                "image": BUSYBOX,
                "environment": {
                    "DB_PASSWORD": s[0],
                    "DSN": f"postgres://app:{s[1]}@db/x",
                    "PLAIN": "visible",
                },
            },
        )
        assert created["status"] == "created", created
        activity = await rec.wait_for(
            "activity_log",
            lambda d: (
                d["activity_type"] == "container_created"
                and d["container_id"] == created["container_id"]
            ),
        )
        assert activity["details"]["environment"]["PLAIN"] == "visible"

        # 2. a refused create: the error echoes the request, masked
        refused = await sio.call(
            "create_container",
            {
                "name": unique_name("bad"),
                "image": BUSYBOX,
                "volumes": {"/etc": "/e"},
                "environment": {"API_TOKEN": s[2], "URL": f"https://bob:{s[3]}@example.com"},
            },
        )
        assert refused["error_type"] == "validation_error"
        assert refused["details"]["environment"]["API_TOKEN"] == "***"

        # 3. a message to a flow that is not connected: the error echoes it, masked
        unsent = await sio.call(
            "send_message",
            {
                "container_id": created["container_id"],
                "message": {"api_key": s[4], "note": f"mysql://root:{s[5]}@h/db"},
            },
        )
        assert unsent["error"] is True

        # 4. a flow sends secrets: its message reaches clients as sent, the activity is masked
        reader, writer = await asyncio.open_unix_connection(created["socket_path"])
        writer.write(encode_frame({"password": s[6], "text": f"TOKEN={s[7]}"}, 1 << 20))
        await rec.wait_for(
            "message_received", lambda d: d["container_id"] == created["container_id"]
        )
        await rec.wait_for("activity_log", lambda d: d["activity_type"] == "message_received")
        writer.close()

        # 5. a flow that prints secrets and crashes: the crash report and activity masked
        crasher = await svc.manager.create_container(
            CreateSpec(
                name=unique_name("leaky"),
                image=BUSYBOX,
                command=[
                    "sh",
                    "-c",
                    f"echo DB_PASSWORD={s[8]}; echo redis://:{s[9]}@cache; exit 3",
                ],
            )
        )
        await sio.call("start_container", {"container_id": crasher.id})
        crash = await rec.wait_for(
            "container_crashed", lambda d: d["container_id"] == crasher.id, timeout=40
        )
        assert "DB_PASSWORD=***" in crash["crash_details"]["logs"]
        await rec.wait_for("activity_log", lambda d: d["activity_type"] == "container_crash")

    shown = {k: v for k, v in rec.events.items() if k != "message_received"}
    assert _leaks(shown) == []
    assert _leaks(caplog.text) == [], [line for line in caplog.text.splitlines() if _leaks(line)][
        :5
    ]
    # the clear values did pass through the service: the checks above could have failed
    assert s[6] in repr(rec.events["message_received"])
