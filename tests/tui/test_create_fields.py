"""The create form's field rules: each bad value is an InvalidRequest naming its field."""

from __future__ import annotations

import pytest

from flowmgr_tui.create_fields import (
    build_spec,
    parse_env,
    parse_image,
    parse_name,
    parse_ports,
    parse_volumes,
)
from server.core.errors import InvalidRequest

pytestmark = pytest.mark.tui


def test_good_fields_build_a_spec() -> None:
    spec, errors = build_spec({"image": "flow:latest", "name": "web-1",
                               "environment": "A=1, B_2=x=y", "ports": "8080:80, 5353:53/udp",
                               "volumes": "/srv/data:/data"})
    assert errors == {}
    assert spec is not None
    assert spec.environment == {"A": "1", "B_2": "x=y"}
    assert spec.ports == {"80/tcp": 8080, "53/udp": 5353}
    assert spec.volumes == {"/srv/data": "/data"}


@pytest.mark.parametrize("raw", ["99999:80", "80", "0:80", "a:80", "8080:80/icmp", "1:2, 1:3"])
def test_bad_ports_are_refused(raw: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_ports(raw)
    assert err.value.field == "ports"


@pytest.mark.parametrize(("parse", "raw", "field"), [
    (parse_name, "", "name"), (parse_name, "-bad", "name"), (parse_name, "a b", "name"),
    (parse_image, "Flow:Latest", "image"), (parse_image, "a b", "image"),
    (parse_env, "NOEQUALS", "environment"), (parse_env, "1A=x", "environment"),
    (parse_volumes, "relative:/x", "volumes"), (parse_volumes, "/x", "volumes"),
])
def test_each_field_names_itself(parse: object, raw: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(raw)  # type: ignore[operator]
    assert err.value.field == field


def test_empty_image_means_the_default_and_registry_ports_are_fine() -> None:
    assert parse_image("") is None
    assert parse_image("localhost:5000/team/flow:v1.2") == "localhost:5000/team/flow:v1.2"


def test_every_bad_field_is_reported_at_once() -> None:
    spec, errors = build_spec({"name": "", "ports": "x"})
    assert spec is None
    assert set(errors) == {"name", "ports"}
