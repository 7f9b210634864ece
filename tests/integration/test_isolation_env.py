"""Issue 11 item 6: environment keys that steer interpreters, loaders, shells or the runtime are
refused at create, through the real service, before any container exists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from server.core.config import Settings
from tests.conftest import RUN_ID, TEST_LABEL
from tests.integration.api_harness import client, docker_cli, running_service

pytestmark = pytest.mark.docker

# Python imports the warning category's module (antigravity), which opens $BROWSER (bash); a
# non-interactive bash expands $BASH_ENV, command substitution included: a shell command runs
# inside flow:latest with no code placed anywhere. Before the fix, the same request through
# the service made a running flow holding the marker (`docker exec <id> cat` printed "pwned").
MARKER = "/tmp/env-injection-marker"
ATTACK = {
    "PYTHONWARNINGS": "all:0:antigravity.x:0:0",
    "BROWSER": "/bin/bash",
    "BASH_ENV": f"$(echo pwned > {MARKER})",
}


async def test_the_attack_payload_is_live_in_the_flow_image(
    unique_name: Callable[[str], str],
) -> None:
    # The control: straight to the engine (no manager), the payload runs its shell command.
    # Were the image to stop honouring it, the refusal test below would prove nothing.
    env = [arg for key, value in ATTACK.items() for arg in ("-e", f"{key}={value}")]
    out = await docker_cli(
        "run",
        "--rm",
        "--name",
        unique_name("envctl"),
        "--label",
        f"{TEST_LABEL}={RUN_ID}",
        *env,
        "--entrypoint",
        "python3",
        "flow:latest",
        "-c",
        f"print(open({MARKER!r}).read())",
    )
    assert out == "pwned"


def _refused(ack: dict[str, Any], key: str, values: list[str]) -> None:
    assert ack.get("error") is True and ack["error_type"] == "validation_error", ack
    assert ack["details"]["field"] == "environment" and ack["details"]["variable"] == key, ack
    # A value may be a secret: the refusal never quotes it. (The API layer echoes the request's
    # own fields, masked, back to the requester alone: `details.environment`.)
    ours = {k: v for k, v in ack["details"].items() if k != "environment"}
    for value in values:
        assert value not in ack["message"] and value not in repr(ours), ack


@pytest.mark.parametrize(
    "environment",
    [
        ATTACK,
        {"BROWSER": ATTACK["BROWSER"]},
        {"BASH_ENV": ATTACK["BASH_ENV"]},
        {"PYTHONWARNINGS": ATTACK["PYTHONWARNINGS"]},
        {"PYTHONPATH": "/tmp/evil"},
        {"LD_PRELOAD": "/tmp/evil.so"},
        {"FLOW_MAIN": "../tmp/evil.py"},
        {"ld_preload": "/tmp/evil.so"},
    ],
    ids=[
        "attack",
        "BROWSER",
        "BASH_ENV",
        "PYTHONWARNINGS",
        "PYTHONPATH",
        "LD_PRELOAD",
        "FLOW_MAIN",
        "ld_preload",
    ],
)
async def test_env_injection_refused_through_the_service(
    settings: Settings, unique_name: Callable[[str], str], environment: dict[str, str]
) -> None:
    name = unique_name("envinj")
    async with running_service(settings) as svc, client(svc.url) as (sio, _):
        ack = await sio.call(
            "create_container",
            {
                "name": name,
                "image": "flow:latest",
                "environment": {"LOG_LEVEL": "debug", **environment},
            },
        )
        _refused(ack, next(iter(environment)), list(environment.values()))
        assert (await sio.call("list_containers", {}))["count"] == 0
    # nothing was created on the engine under that name, by anyone
    assert await docker_cli("ps", "-aq", "--filter", f"name=^/{name}$") == ""
