"""The ports label: a create's `ports` as the client wrote them, kept on the container so the
answers echo that spelling after a manager restart. Read back from the engine, it is untrusted:
anything but the create rules' output naming exactly the published bindings is ignored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from server.core.container_info import info_from_inspect
from server.core.validation.shapes import (
    MAX_PORTS_LABEL,
    PORTS_LABEL,
    ports_as_written,
    ports_label,
)

ENGINE = {"8080/tcp": 18080, "53/udp": 5353}
WRITTEN = {"8080": 18080, "53/udp": 5353}


@pytest.mark.parametrize(
    ("label", "why"),
    [
        (7, "not a string"),
        ("x" * (MAX_PORTS_LABEL + 1), "at most 16 KiB"),
        ("{not json", "not JSON"),
        ("[" * 5_000 + "]" * 5_000, "not JSON"),  # deeper than the parser goes
        ('["8080"]', "must map container ports"),
        ('{"8080": 18080, "53/udp": 5353, "80/sctp": 80}', "protocol"),
        ('{"99999": 18080}', "1-65535"),
        ('{"8080": 0, "53/udp": 5353}', "not a port"),
        ('{"8080": true, "53/udp": 5353}', "not a port"),
        ('{"8080": 18080, "8080/tcp": 18081, "53/udp": 5353}', "published twice"),
        ('{"8080": 18080}', "does not match"),  # a binding left out
        ('{"8080": 18081, "53/udp": 5353}', "does not match"),  # another host port
        ('{"8080/udp": 18080, "53/udp": 5353}', "does not match"),  # another protocol
        ('{"8080": 18080, "53/udp": 5353, "9": 9}', "does not match"),  # one not published
    ],
)
def test_a_bad_label_falls_back_to_the_engines_spelling(label: Any, why: str) -> None:
    ports, problem = ports_as_written(label, ENGINE)
    assert ports == ENGINE
    assert problem is not None and why in problem, problem


def test_the_label_echoes_the_requests_spelling() -> None:
    assert ports_as_written(ports_label(WRITTEN), ENGINE) == (WRITTEN, None)
    assert ports_as_written('{"08080":"18080","53/udp":5353}', ENGINE) == (
        {"08080": 18080, "53/udp": 5353},
        None,
    )
    assert ports_as_written(None, ENGINE) == (ENGINE, None)  # created elsewhere: no label
    assert json.loads(ports_label(WRITTEN)) == WRITTEN


def test_an_inspect_reads_the_label() -> None:
    labels = {PORTS_LABEL: ports_label(WRITTEN)}
    raw: dict[str, Any] = {
        "Id": "a" * 64,
        "Name": "/flow",
        "Created": datetime.now(UTC).isoformat(),
        "State": {"Status": "created"},
        "Config": {"Image": "flow:latest", "Labels": labels},
        "HostConfig": {
            "PortBindings": {
                "8080/tcp": [{"HostIp": "", "HostPort": "18080"}],
                "53/udp": [{"HostIp": "", "HostPort": "5353"}],
            }
        },
    }
    info = info_from_inspect(raw)
    assert (info.ports, info.ports_problem) == (WRITTEN, None)
    labels[PORTS_LABEL] = '{"8080": 1}'
    info = info_from_inspect(raw)
    assert info.ports == ENGINE and "does not match" in str(info.ports_problem)
