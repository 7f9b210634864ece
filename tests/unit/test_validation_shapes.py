"""The shapes part of the one create validator (server/core/validation/shapes.py): what every
front end, the remote panel included, checks before anything reaches the server's host rules.
Moved here from test_core_state.py (inputs.check_spec / normalise_ports, now merged)."""

from __future__ import annotations

from typing import Any

import pytest

from server.core.errors import InvalidRequest
from server.core.models import CreateSpec
from server.core.validation import MAX_NAME_LENGTH, check_shapes, port_bindings, shape_problems
from server.core.validation.shapes import check_ports

H = "a" * 64


def test_ports_in_the_engines_spelling() -> None:
    assert port_bindings({"8080": 18080, "53/udp": 5353, "080/tcp": 8081}) == {
        "8080/tcp": 18080,
        "53/udp": 5353,
        "80/tcp": 8081,
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"x": 1},
        {"80": 0},
        {"80": True},
        {"80/icmp": 81},
        [1],
        {"²": 81},
        {"٨٠": 81},
        {"80": "٨١"},
        {"80": 65536},
        {"65536": 80},
        {"0": 80},
        {"80/sctp": 8080},
        {"80/TCP": 8080},
        {"80": 8080, "80/tcp": 8081},  # one container port twice: the engine would keep one
        {"80": 8080, "81": 8080},  # "²" passed isdigit() and crashed int() in an older copy
    ],
)
def test_bad_ports_refused(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_ports(bad)
    assert err.value.details["field"] == "ports"


def test_one_host_port_for_tcp_and_udp_is_fine() -> None:
    # the form refused this (one host port twice, whatever the protocol); Docker takes it
    assert check_ports({"53/udp": 5353, "53": 5353}) == {"53/udp": 5353, "53": 5353}
    assert check_ports({"80": "8080"}) == {"80": 8080}  # Python callers' digit strings


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (CreateSpec(name=""), "name"),
        (CreateSpec(name="a"), "name"),  # the engine refuses one-character names
        (CreateSpec(name="a/b"), "name"),
        (CreateSpec(name="a" * (MAX_NAME_LENGTH + 1)), "name"),
        (CreateSpec(name="ok", image=""), "image"),
        (CreateSpec(name="ok", image="Flow"), "image"),
        (CreateSpec(name="ok", image="flow@sha256:" + H.upper()), "image"),
        (CreateSpec(name="ok", image="flow@sha256:" + H[:32]), "image"),
        (CreateSpec(name="ok", image="flow@md5:" + H[:32]), "image"),
        (CreateSpec(name="ok", environment={"A": 1}), "environment"),  # type: ignore[dict-item]
        (CreateSpec(name="ok", environment={"A=B": "1"}), "environment"),
        (CreateSpec(name="ok", environment={"ld_preload": "x"}), "environment"),
        (CreateSpec(name="ok", volumes={"/x": 1}), "volumes"),  # type: ignore[dict-item]
        (CreateSpec(name="ok", volumes=["/x"]), "volumes"),  # type: ignore[arg-type]
        (CreateSpec(name="ok", volumes={"x": "/x"}), "volumes"),
        (CreateSpec(name="ok", volumes={"/x": "/y:z"}), "volumes"),
        (CreateSpec(name="ok", command="sh"), "command"),  # type: ignore[arg-type]
        (CreateSpec(name="ok", memory_limit="5m"), "memory_limit"),
    ],
)
def test_shapes_name_the_field(spec: CreateSpec, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_shapes(spec)
    assert err.value.details["field"] == field
    assert shape_problems(spec) == {field: err.value.message}


@pytest.mark.parametrize(
    "spec",
    [
        CreateSpec(name="ab"),
        CreateSpec(name="a" * MAX_NAME_LENGTH),
        CreateSpec(name="ok", image="flow@sha256:" + H),
        CreateSpec(name="ok", image="sha256:" + H),
        CreateSpec(name="ok", image="r.example:5000/a/b:v1@sha512:" + "c" * 128),
        # the host rules (bind roots, the walk, privileged ports) are the server's, not these
        CreateSpec(name="ok", volumes={"/etc": "/etc:rw"}, ports={"80": 80}),
    ],
)
def test_good_shapes_pass(spec: CreateSpec) -> None:
    check_shapes(spec)
    assert shape_problems(spec) == {}


def test_every_bad_field_at_once() -> None:
    spec = CreateSpec(name="", image="X", ports={"x": 1})
    assert set(shape_problems(spec)) == {"name", "image", "ports"}
