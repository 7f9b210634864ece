"""The create form: text syntax parsed here, every rule the core validator's (its messages)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flowmgr_tui.create_fields import (
    build_spec,
    parse_env,
    parse_image,
    parse_name,
    parse_ports,
    parse_volumes,
)
from flowmgr_tui.remote import RemoteBackend
from server.core.errors import InvalidRequest
from server.core.models import CreateSpec
from server.core.validation import shape_problems

pytestmark = pytest.mark.tui


def test_good_fields_build_a_spec() -> None:
    spec, errors = build_spec(
        {
            "image": "flow:latest",
            "name": "web-1",
            "environment": "A=1, B_2=x=y",
            "ports": "8080:80, 5353:53/udp",
            "volumes": "/srv/data:/data",
        }
    )
    assert errors == {}
    assert spec is not None
    assert spec.environment == {"A": "1", "B_2": "x=y"}
    assert spec.ports == {"80": 8080, "53/udp": 5353}  # as written, like the wire
    assert spec.volumes == {"/srv/data": "/data"}


# The parsers know only text syntax; every rule on the values is the validator's, and the form
# shows its message (issue 12: the form had rules of its own, e.g. one host port twice was
# refused whatever the protocol; the validator refuses it per protocol, as Docker does).
@pytest.mark.parametrize(
    "raw",
    [
        "99999:80",
        "0:80",
        "8080:80/icmp",
        "1:2, 1:3",
        "8080:80/sctp",
        "8080:²",
        "8080:65536",
        "8080:80, 8081:80/tcp",
    ],
)
def test_bad_ports_are_refused_by_the_validator(raw: str) -> None:
    spec, errors = build_spec({"name": "web-1", "ports": raw})
    assert spec is None and set(errors) == {"ports"}
    try:
        problems = shape_problems(CreateSpec(name="web-1", ports=parse_ports(raw)))
    except InvalidRequest as err:  # a container port twice: the text cannot be a map
        problems = {"ports": err.message}
    assert errors == problems


@pytest.mark.parametrize(
    ("parse", "raw", "field"),
    [
        (parse_env, "NOEQUALS", "environment"),
        (parse_env, "A=1, A=2", "environment"),
        (parse_ports, "80", "ports"),
        (parse_ports, "a:80", "ports"),
        (parse_ports, "²:80", "ports"),
        (parse_volumes, "/x", "volumes"),
        (parse_volumes, "/a:/x, /a:/y", "volumes"),
    ],
)
def test_text_syntax_errors_name_the_field(parse: object, raw: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(raw)  # type: ignore[operator]
    assert err.value.field == field


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "-bad"}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": "a" * 70}, "name"),
        ({"name": "a"}, "name"),
        ({"image": "Flow:Latest"}, "image"),
        ({"image": "a b"}, "image"),
        ({"environment": "1A=x"}, "environment"),
        ({"environment": "ld_preload=x"}, "environment"),
        ({"environment": "PYTHONPATH=/x"}, "environment"),
        ({"volumes": "relative:/x"}, "volumes"),
        ({"volumes": "/x:y"}, "volumes"),
    ],
)
def test_each_field_shows_the_validators_message(fields: dict[str, str], field: str) -> None:
    spec, errors = build_spec({"name": "web-1", **fields})
    assert spec is None and list(errors) == [field]
    parse: Callable[[str], Any] = {
        "name": parse_name,
        "image": parse_image,
        "environment": parse_env,
        "volumes": parse_volumes,
    }[field]
    request: dict[str, Any] = {"name": "web-1", field: parse(fields[field])}
    assert errors == shape_problems(CreateSpec(**request))


def test_empty_image_means_the_default_and_registry_ports_are_fine() -> None:
    assert parse_image("") is None
    assert parse_image("localhost:5000/team/flow:v1.2") == "localhost:5000/team/flow:v1.2"


def test_every_bad_field_is_reported_at_once() -> None:
    spec, errors = build_spec({"name": "", "ports": "x"})
    assert spec is None
    assert set(errors) == {"name", "ports"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (CreateSpec(name="a"), "name"),
        (CreateSpec(name="ok", ports={"80/sctp": 8080}), "ports"),
        (CreateSpec(name="ok", environment={"ld_preload": "x"}), "environment"),
    ],
)
async def test_the_remote_panel_checks_the_shapes_before_sending(
    spec: CreateSpec, field: str
) -> None:
    """Not even connected: the refusal is the validator's, not "not connected"."""
    backend = RemoteBackend("http://127.0.0.1:9")
    with pytest.raises(InvalidRequest) as err:
        await backend.create_container(spec)
    assert err.value.field == field
    assert {field: err.value.message} == shape_problems(spec)
