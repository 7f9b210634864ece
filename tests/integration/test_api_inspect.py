"""ext `inspect_container`: a flow's configuration, typed and masked, through a real client.

Hostile: secrets in the environment, in a URL and in the command never leave unmasked (not
in the answer, the ack or anything else the client heard); another instance's container and
junk references are refused with the taxonomy's errors.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import pytest

from server.core.config import Settings
from server.core.models import CreateSpec
from server.wire.config_answer import ContainerInspectedOut
from tests.conftest import RUN_ID, TEST_LABEL
from tests.integration.api_harness import client, running_service
from tests.integration.manager_helpers import BUSYBOX, docker

pytestmark = pytest.mark.docker


async def test_inspect_answers_a_masked_typed_configuration(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    password, url_pw, flag_pw = (secrets.token_hex(8) for _ in range(3))
    spec = CreateSpec(
        name=unique_name("insp"),
        image=BUSYBOX,
        command=["sh", "-c", f"echo {password}; sleep 600", "--api-token", flag_pw],
        environment={
            "DB_PASSWORD": password,
            "API_URL": f"https://user:{url_pw}@example.invalid/x",
            "COPY_OF_IT": password,
            "MODE": "demo",
        },
        memory_limit="64m",
    )
    async with running_service(settings) as svc, client(svc.url) as (sio, rec):
        snap = await svc.manager.create_container(spec)
        answer = await sio.call(
            "inspect_container", {"container_id": snap.name, "request_id": "r1"}
        )
        heard = await rec.wait_for("container_inspected")
        assert heard == answer and answer["request_id"] == "r1"
        cfg = ContainerInspectedOut.decode(answer).to_core()
        assert (cfg.container_id, cfg.name, cfg.image) == (snap.id, snap.name, BUSYBOX)
        assert cfg.environment["DB_PASSWORD"] == "***"
        assert cfg.environment["COPY_OF_IT"] == "***"  # a secret's value under another name
        assert cfg.environment["API_URL"] == "https://user:***@example.invalid/x"
        assert cfg.environment["MODE"] == "demo"
        assert cfg.command == ["sh", "-c", "echo ***; sleep 600", "--api-token", "***"]
        assert cfg.memory_limit == 64 * 1024 * 1024 and cfg.node is None
        assert any(m.target == "/run/flowmgr" for m in cfg.mounts)
        assert cfg.labels.get("flowmgr.managed") == "true"
        everything = json.dumps(dict(rec.events)) + json.dumps(answer)
        for secret in (password, url_pw, flag_pw):
            assert secret not in everything
        await svc.manager.delete_container(snap.id)


async def test_inspect_refuses_other_instances_and_junk(
    settings: Settings, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("stranger")
    secret = secrets.token_hex(8)
    labels = [f"{TEST_LABEL}={RUN_ID}", "flowmgr.managed=true", "flowmgr.instance=someone-else"]
    flags = [arg for label in labels for arg in ("--label", label)]
    made = await docker("create", "--name", name, *flags, "-e", f"DB_PASSWORD={secret}", BUSYBOX)
    stranger = made.stdout.strip()
    try:
        async with running_service(settings) as svc, client(svc.url) as (sio, rec):
            for ref in (stranger, stranger[:12], name):
                err = await sio.call("inspect_container", {"container_id": ref})
                assert err["error"] is True and err["error_type"] == "container_not_found", err
            for bad, field in (
                ({}, "container_id"),
                ({"container_id": 5}, "container_id"),
                ({"container_id": ""}, "container_id"),
                ({"container_id": "x" * 300}, "container_id"),
                ({"container_id": ["a"]}, "container_id"),
            ):
                err = await sio.call("inspect_container", bad)
                assert err["error_type"] == "validation_error", (bad, err)
                assert err["details"]["field"] == field, err
            err = await sio.call("inspect_container", "not an object")
            assert err["error_type"] == "validation_error"
            assert secret not in json.dumps(dict(rec.events))
    finally:
        await docker("rm", "-f", stranger, check=False)
