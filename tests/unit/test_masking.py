"""The one masking helper: secret names, URL credentials, nesting, hostile text."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.masking import MASK, is_secret_name, mask_env, mask_text, mask_value

SECRET = "hunter2XYZ"


@pytest.mark.parametrize(
    "name",
    ["DB_PASSWORD", "password", "PASSWD", "api_key", "GITHUB_TOKEN", "client_secret",
     "AWS_SECRET_ACCESS_KEY", "X-Auth-Token", "credentials", "SSH_PASSPHRASE", "session_cookie"],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "LOG_LEVEL", "image", "container_id", "port"])
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name)


def test_env_values_with_secret_names_masked() -> None:
    env = {"DB_PASSWORD": SECRET, "API_KEY": SECRET, "PATH": "/bin", "EMPTY_TOKEN": "",
           "DSN": f"postgres://app:{SECRET}@db:5432/x"}
    out = mask_env(env)
    assert out["DB_PASSWORD"] == out["API_KEY"] == MASK
    assert out["PATH"] == "/bin"
    assert out["DSN"] == "postgres://app:***@db:5432/x"
    assert SECRET not in repr(out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"postgres://app:{SECRET}@db:5432/x", "postgres://app:***@db:5432/x"),
        (f"redis://:{SECRET}@cache", "redis://:***@cache"),
        (f"mongodb+srv://admin:{SECRET}@cluster0/db", "mongodb+srv://admin:***@cluster0/db"),
        (f"https://{SECRET}@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
        (f"amqp://u:p/{SECRET}@ss@rabbit/vh", "amqp://u:***@rabbit/vh"),
        (f"connect to http://u:{SECRET}@h:1 now", "connect to http://u:***@h:1 now"),
        ("see https://example.com/a/b?c=d", "see https://example.com/a/b?c=d"),
        ("mail http://example.com/contact@us", "mail http://example.com/contact@us"),
    ],
)
def test_url_credentials_masked(text: str, expected: str) -> None:
    assert mask_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        f"DB_PASSWORD={SECRET}",
        f"PASSWORD={SECRET}",
        f"export GITHUB_TOKEN={SECRET}; next",
        f"docker run --env=DB_PASSWORD={SECRET} img",
        f'API_KEY="{SECRET} with spaces"',
        f"API_KEY='{SECRET} with spaces'",
        f"GET /x?user=bob&token={SECRET}&page=2",
        f'{{"password": "{SECRET}", "user": "bob"}}',
        f"{{'client_secret': '{SECRET}'}}",
        f'{{"pin_key": {SECRET}}}',
        f"password: {SECRET}",
        f"X-Api-Key: {SECRET}",
        f"Authorization: Basic {SECRET}",
        f"curl -H 'Authorization: Bearer {SECRET}'",
        f"SECRET_KEY={SECRET}\nnext line",
        f"input_value={{'DB_PASSWORD': '{SECRET}'}}",
    ],
)
def test_secret_assignments_in_text_masked(text: str) -> None:
    out = mask_text(text)
    assert SECRET not in out
    assert MASK in out


def test_plain_text_untouched() -> None:
    text = "container web-1 exited with code 137; image=flow:latest port: 8080 user=bob"
    assert mask_text(text) == text


def test_nested_dicts_and_lists_masked() -> None:
    value: dict[str, Any] = {
        "operation": "create_container",
        "environment": {"DB_PASSWORD": SECRET, "MODE": "prod", "EMPTY_SECRET": ""},
        "volumes": {"/data": "/data"},
        "args": [f"--token={SECRET}", {"api_key": SECRET}],
        "credentials": {"user": "bob", "pass": SECRET, "list": [SECRET, 3]},
        "tokens": [SECRET, SECRET],
        "url": f"https://u:{SECRET}@h/x",
        "count": 3,
    }
    out = mask_value(value)
    assert SECRET not in repr(out)
    assert out["environment"] == {"DB_PASSWORD": MASK, "MODE": "prod", "EMPTY_SECRET": ""}
    assert out["credentials"] == {"user": MASK, "pass": MASK, "list": [MASK, MASK]}
    assert out["tokens"] == [MASK, MASK]
    assert out["count"] == 3 and out["volumes"] == {"/data": "/data"}
    assert value["environment"]["DB_PASSWORD"] == SECRET  # the input is left alone


def test_masking_is_idempotent() -> None:
    value = {"env": {"API_TOKEN": SECRET}, "msg": f"postgres://a:{SECRET}@h PASSWORD={SECRET}"}
    once = mask_value(value)
    assert mask_value(once) == once


def test_deep_nesting_summarised_not_crashing() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    node["password"] = SECRET
    assert SECRET not in repr(mask_value(deep))


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "text",
    ["a" * 1_000_000, "PASSWORD" * 125_000, "a://a:" * 100_000, "PASSWORD=\"" * 100_000,
     "a=a" * 300_000, '"password": "' * 50_000, "token:" * 100_000, "Authorization: " * 60_000,
     "x://" + "@" * 500_000, os.urandom(1_000_000).decode("latin-1")],
)
def test_hostile_text_is_masked_in_linear_time(text: str) -> None:
    """A hang guard: quadratic patterns would take minutes on these 1 MB inputs."""
    assert isinstance(mask_text(text), str)


_SECRETS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=24)
_NAMES = st.sampled_from(["DB_PASSWORD", "api_key", "GITHUB_TOKEN", "client_secret", "AUTH"])
_TEMPLATES = st.sampled_from(
    ["{n}={s}", "{n}=\"{s}\"", "{{\"{n}\": \"{s}\"}}", "{n}: {s}", "x {n}={s}&y=1",
     "https://user:{s}@host/p", "ftp://{s}@host", "--{n}={s} --other"]
)


@given(name=_NAMES, secret=_SECRETS, template=_TEMPLATES,
       prefix=st.text(alphabet=" .,;:=&\"'/{}[]@ABC", max_size=20))
def test_generated_secrets_never_survive(name: str, secret: str, template: str,
                                         prefix: str) -> None:
    text = prefix + " " + template.format(n=name, s=secret)
    assert secret not in mask_text(text)
    assert secret not in repr(mask_value({name: secret, "note": text}))
